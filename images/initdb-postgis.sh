#!/bin/bash
# Same as the postgis/postgis images: a template_postgis database and the
# PostGIS extensions in it and in POSTGRES_DB.
set -euo pipefail
export PGUSER="$POSTGRES_USER"

psql -v ON_ERROR_STOP=1 --dbname="$POSTGRES_DB" <<-'EOSQL'
	CREATE DATABASE template_postgis IS_TEMPLATE true;
EOSQL

for db in template_postgis "$POSTGRES_DB"; do
	echo "Loading PostGIS extensions into $db"
	psql -v ON_ERROR_STOP=1 --dbname="$db" <<-'EOSQL'
		CREATE EXTENSION IF NOT EXISTS postgis;
		CREATE EXTENSION IF NOT EXISTS postgis_topology;
		\c
		CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;
		CREATE EXTENSION IF NOT EXISTS postgis_tiger_geocoder;
	EOSQL
done
