#!/usr/bin/env bash
# Runs inside `docker build` (see Dockerfile): build regress.so, autoinc.so, refint.so
# from the image's own Debian source package, run the parallel schedule, keep the cluster.
set -Eeuo pipefail
export DEBIAN_FRONTEND=noninteractive
: "${PG_MAJOR:?the base image sets PG_MAJOR}"
# shellcheck disable=SC1091
. /etc/os-release
codename="${VERSION_CODENAME:?}"

# The image's Debian mirror (one-line or deb822 sources), as a deb-src line.
mirror="$(grep -rhoE '^(deb[[:space:]]+(\[[^]]*\][[:space:]]+)?|URIs:[[:space:]]*)[^[:space:]]+' \
	/etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | awk '{print $NF}' | grep -m1 '/debian/\?$' || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
echo "deb-src ${mirror} ${codename} main" >/etc/apt/sources.list.d/pgleap-regress-src.list
apt-get -o Acquire::Check-Valid-Until=false update
apt-get install -y --no-install-recommends dpkg-dev gcc make libc6-dev xz-utils \
	"postgresql-server-dev-${PG_MAJOR}"

mkdir -p /usr/src/pg /corpus/lib
cd /usr/src/pg
apt-get source "postgresql-${PG_MAJOR}" >/dev/null
src="$(find /usr/src/pg -maxdepth 1 -mindepth 1 -type d -name "postgresql-${PG_MAJOR}-*" | head -1)"
echo "source tree: ${src}; server: $(postgres --version)"

# The three test libraries, built with PGXS and installed into pkglibdir, so that the
# catalogs reference $pkglibdir/regress.so as they would on a server that has them.
mkdir -p /usr/src/pg/libs
cp "${src}/src/test/regress/regress.c" "${src}/contrib/spi/autoinc.c" "${src}/contrib/spi/refint.c" /usr/src/pg/libs/
cat >/usr/src/pg/libs/Makefile <<'MK'
MODULES = regress autoinc refint
PG_CONFIG = pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
MK
make -C /usr/src/pg/libs
make -C /usr/src/pg/libs install
pkglibdir="$(pg_config --pkglibdir)"
cp "${pkglibdir}"/{regress,autoinc,refint}.so /corpus/lib/

pg_regress="$(dirname "$(pg_config --pgxs)")/../test/regress/pg_regress"
[ -x "$pg_regress" ] || { echo "pg_regress not found at $pg_regress" >&2; exit 1; }

# A scratch cluster like the stock entrypoint makes (initdb defaults, host auth appended),
# plus a replication line so `pgleap rehearse` can clone it.
export PGDATA=/corpus/pgdata
mkdir -p "$PGDATA" && chown -R postgres:postgres /corpus "${src}"
gosu postgres initdb --username=postgres -D "$PGDATA" >/dev/null
auth="$(gosu postgres postgres -D "$PGDATA" -C password_encryption)"
printf '\nhost all all all %s\nhost replication all all %s\n' "$auth" "$auth" >>"$PGDATA/pg_hba.conf"
gosu postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
gosu postgres psql -X -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE regression TEMPLATE template0'

cd "${src}/src/test/regress"
start=$(date +%s)
set +e
gosu postgres "$pg_regress" --use-existing --host=/var/run/postgresql --port=5432 \
	--bindir="$(pg_config --bindir)" --dlpath="${pkglibdir}" --inputdir=. \
	--schedule=parallel_schedule >/corpus/regress-summary.txt 2>&1
rc=$?
set -e
tail -5 /corpus/regress-summary.txt
echo "pg_regress exit ${rc} after $(($(date +%s) - start)) s" | tee -a /corpus/regress-summary.txt
cp regression.diffs /corpus/ 2>/dev/null || :

gosu postgres pg_ctl -D "$PGDATA" -m fast -w stop
tar -C "$PGDATA" -cf /corpus/pgdata.tar .
rm -rf "$PGDATA" /usr/src/pg /var/lib/apt/lists/*
ls -l /corpus /corpus/lib
