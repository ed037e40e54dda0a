#!/usr/bin/env bash
# Runs in the NEW image, as the owner of the data, with a standby's whole volume at
# PGLEAP_VOLUME: copy the upgraded primary with pg_basebackup into the staging folder
# $PGLEAP_VOLUME/.pgleap/new-<major>, then `upgrade.sh` (PGLEAP_ACTION=place) moves it
# where the new image expects PGDATA and puts the old standby aside (kept until
# finalize, restored by rollback).
#
# Env: the upgrade Job's env plus PGLEAP_PRIMARY_HOST, PGLEAP_REPLICATION_USER,
# PGLEAP_SLOT, and PGPASSWORD from the user's Secret (never on the command line).
# Safe to run again: a placed copy is kept, an unfinished one is taken again.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
PGLEAP_STEP=reseed

volume="${PGLEAP_VOLUME:?}"
new_major="${PGLEAP_NEW_MAJOR:?}"
host="${PGLEAP_PRIMARY_HOST:?}"
user="${PGLEAP_REPLICATION_USER:?}"
slot="${PGLEAP_SLOT:?}"
port="${PGLEAP_PRIMARY_PORT:-5432}"
state="$volume/.pgleap"
staging="$state/new-$new_major"

basebackup() {
	"$PG_BINDIR/pg_basebackup" -h "$host" -p "$port" -U "$user" -D "$staging" \
		-X stream -R -c fast --no-password "$@"
}

if [ -f "$state/placed" ]; then
	log "the re-seeded cluster is already in place; nothing to copy"
else
	server_paths
	[ "$PG_MAJOR_VERSION" = "$new_major" ] || die "this image runs PostgreSQL $PG_MAJOR_VERSION, the plan says $new_major"
	mkdir -p "$state"
	if [ -e "$staging" ]; then
		log "removing an unfinished copy in $staging"
		rm -rf "$staging"
	fi
	log "pg_basebackup from $host:$port as $user into $staging (slot $slot)"
	if ! basebackup -C -S "$slot" 2>"$state/basebackup.err"; then
		cat "$state/basebackup.err" >&2
		grep -q 'already exists' "$state/basebackup.err" || die "pg_basebackup failed (see above); the old standby is untouched"
		log "slot $slot exists (an earlier attempt made it): copying again with it"
		rm -rf "$staging"
		basebackup -S "$slot" || die "pg_basebackup failed (see above); the old standby is untouched"
	fi
	log "copy complete: $(cat "$staging/PG_VERSION" 2>/dev/null || echo '?') in $staging"
fi
PGLEAP_ACTION=place exec bash "$(dirname "$0")/upgrade.sh"
