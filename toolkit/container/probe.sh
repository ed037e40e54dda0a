#!/usr/bin/env bash
# Runs in any image (old or new), read-only. Reports what the image offers
# (server version, paths, glibc/ICU, available extensions and modules) and,
# when PGLEAP_PGDATA is set, the state of that data directory.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
PGLEAP_STEP=probe

server_paths
result major "$PG_MAJOR_VERSION"
result version "$PG_FULL_VERSION"
result bindir "$PG_BINDIR"
result pkglibdir "$PG_PKGLIBDIR"
result sharedir "$PG_SHAREDIR"
result glibc "$(glibc_version)"
result icu "$(icu_version)"
result uid "$(id -u)"

for control in "$PG_SHAREDIR"/extension/*.control; do
	[ -e "$control" ] || continue
	name="$(basename "$control" .control)"
	version="$(sed -nE "s/^[[:space:]]*default_version[[:space:]]*=[[:space:]]*'([^']*)'.*/\1/p" "$control" | head -n1)"
	result "extension.$name" "$version"
done
# Update scripts (name--from--to.sql) as "from:to" edges, so the plan can tell
# whether ALTER EXTENSION … UPDATE has a path from the installed version.
for control in "$PG_SHAREDIR"/extension/*.control; do
	[ -e "$control" ] || continue
	name="$(basename "$control" .control)"
	edges=""
	for script in "$PG_SHAREDIR/extension/$name"--*--*.sql; do
		[ -e "$script" ] || continue
		pair="${script##*/"$name"--}"
		pair="${pair%.sql}"
		edges="$edges ${pair%%--*}:${pair#*--}"
	done
	[ -n "$edges" ] && result "updates.$name" "${edges# }"
done
for module in "$PG_PKGLIBDIR"/*.so; do
	[ -e "$module" ] && result "module.$(basename "$module" .so)" 1
done

if [ -n "${PGLEAP_PGDATA:-}" ]; then
	data="$PGLEAP_PGDATA"
	if [ ! -d "$data" ]; then
		result pgdata missing
	elif [ ! -f "$data/PG_VERSION" ]; then
		result pgdata not-a-cluster
		result pgdata_entries "$(find "$data" -mindepth 1 -maxdepth 1 | wc -l)"
	else
		result pgdata cluster
		result pg_version "$(cat "$data/PG_VERSION")"
		result owner_uid "$(stat -c %u "$data")"
		result owner_gid "$(stat -c %g "$data")"
		result data_kb "$(du -sk "$data" 2>/dev/null | cut -f1)"
		result free_kb "$(df -Pk "$data" | awk 'NR == 2 {print $4}')"
		[ -e "$data/postmaster.pid" ] && result postmaster_pid present
		# Asked with the volume mounted read-write, as the data owner: may pgleap write
		# here (a read-only filesystem, a foreign owner)? Tests only, writes nothing.
		if [ -n "${PGLEAP_CHECK_WRITABLE:-}" ]; then
			if [ -w "$data" ] && [ -w "$PGLEAP_CHECK_WRITABLE" ]; then result writable yes; else result writable no; fi
		fi
		if [ -f "$data/global/pg_control" ] && [ "$(cat "$data/PG_VERSION")" = "$PG_MAJOR_VERSION" ]; then
			"$PG_BINDIR/pg_controldata" "$data" | while IFS= read -r line; do
				result "controldata" "$line"
			done
		fi
	fi
fi
