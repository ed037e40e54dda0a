#!/usr/bin/env bash
# Entrypoint with the official postgres image's contract: initdb an empty
# PGDATA as POSTGRES_USER, run /docker-entrypoint-initdb.d once, then exec
# postgres so that SIGINT/SIGTERM from `docker stop` shut it down cleanly.
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u +%FT%TZ)" "$*"; }

# "docker run image -c foo=bar" means "postgres -c foo=bar".
if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
	exec "$@"
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:?PGDATA must be set}"
export POSTGRES_USER POSTGRES_DB PGDATA

# Running as root: prepare directories, then drop to postgres.
if [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA"
	chown postgres:postgres "$PGDATA"
	chmod 0700 "$PGDATA" || :
	chown postgres:postgres /var/run/postgresql || :
	exec gosu postgres "${BASH_SOURCE[0]}" "$@"
fi

# PostgreSQL refuses group-writable data directories (fsGroup makes them 2770).
chmod 0700 "$PGDATA" 2>/dev/null || :

run_initdb_d() {
	local f
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sh)
				# shellcheck disable=SC1090
				if [ -x "$f" ]; then log "running $f"; "$f"
				else log "sourcing $f"; . "$f"; fi ;;
			*.sql) log "running $f"; psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc --dbname "$POSTGRES_DB" -f "$f" ;;
			*.sql.gz) log "running $f"; gunzip -c "$f" | psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc --dbname "$POSTGRES_DB" ;;
			*) [ -e "$f" ] && log "ignoring $f" ;;
		esac
	done
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != 'trust' ]; then
		log 'Error: database is uninitialized and superuser password is not specified.'
		log '  Set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust, not recommended).'
		exit 1
	fi
	log "initializing $PGDATA as $POSTGRES_USER"
	# The password goes through a file descriptor, never argv.
	# shellcheck disable=SC2086
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") ${POSTGRES_INITDB_ARGS:-}

	auth="${POSTGRES_HOST_AUTH_METHOD:-}"
	if [ -z "$auth" ]; then
		auth="$(postgres -C password_encryption)"
	fi
	printf '\nhost all all all %s\n' "$auth" >> "$PGDATA/pg_hba.conf"

	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
	export PGUSER="$POSTGRES_USER" PGPASSWORD="${POSTGRES_PASSWORD:-}"
	if [ "$POSTGRES_DB" != 'postgres' ]; then
		# psql quotes the name (:"db"); -c would not interpolate variables.
		psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname postgres \
			--set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db"'
	fi
	run_initdb_d
	pg_ctl -D "$PGDATA" -m fast -w stop
	unset PGPASSWORD
	log 'PostgreSQL init process complete; ready for start up.'
fi

exec "$@"
