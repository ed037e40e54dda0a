#!/usr/bin/env bash
# Runs in the OLD image (production's own), as the data owner, with the rehearsal's PVC at
# PGLEAP_VOLUME. With PGLEAP_SOURCE_HOST: pg_basebackup of the RUNNING production server,
# streamed WAL included, into the same place in the volume as production's PGDATA (production
# is never stopped; the copy becomes consistent when the rehearsal pod starts it). Without
# it: the PVC was restored from a snapshot and already holds the copy.
# Either way the clone is then sealed off from production: it must not push WAL into
# production's archive (same system identifier, a new timeline) nor wait for production's
# synchronous standbys (every write of the rehearsal would hang).
#
# Env: PGLEAP_VOLUME, PGLEAP_OLD_REL (PGDATA inside the volume, "" = the volume root), and for
# a copy PGLEAP_SOURCE_HOST, PGLEAP_SOURCE_PORT, PGLEAP_REPLICATION_USER, PGPASSWORD from the
# user's Secret (never on the command line). Safe to run again: a finished copy is kept,
# an unfinished one is taken again.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
PGLEAP_STEP=clone

volume="${PGLEAP_VOLUME:?}"
rel="${PGLEAP_OLD_REL:-}"
host="${PGLEAP_SOURCE_HOST:-}"
user="${PGLEAP_REPLICATION_USER:-}"
port="${PGLEAP_SOURCE_PORT:-5432}"
state="$volume/.pgleap-clone"
copy="$state/copy"
target="$volume${rel:+/$rel}"

seal() {
	local conf="$target/postgresql.auto.conf"
	if grep -q '^# pgleap rehearsal seal' "$conf" 2>/dev/null; then
		log "the clone is already sealed off from production"
		return 0
	fi
	rm -f "$target/standby.signal" "$target/recovery.signal"
	{
		echo "# pgleap rehearsal seal: a clone must not archive into production's WAL archive"
		echo "# nor wait for production's synchronous standbys."
		echo "archive_mode = 'off'"
		echo "synchronous_standby_names = ''"
	} >>"$conf"
	log "sealed: archive_mode off, no synchronous standbys (in $conf)"
}

if [ -f "$state/done" ]; then
	log "the clone in $target is complete; nothing to copy"
	seal
	result cloned "$target"
	exit 0
fi
if [ -z "$host" ]; then
	[ -f "$target/PG_VERSION" ] || die "no cluster in $target: the snapshot did not restore PGDATA where production keeps it"
	log "the PVC was restored from a snapshot: PostgreSQL $(cat "$target/PG_VERSION") in $target"
	seal
	result cloned "$target"
	exit 0
fi
[ -n "$user" ] || die "PGLEAP_REPLICATION_USER is not set"
server_paths
mkdir -p "$state"
if [ -e "$copy" ]; then
	log "removing an unfinished copy in $copy"
	rm -rf "$copy"
fi
log "pg_basebackup (PostgreSQL $PG_FULL_VERSION) from $host:$port as $user into $copy"
"$PG_BINDIR/pg_basebackup" -h "$host" -p "$port" -U "$user" -D "$copy" \
	--wal-method=stream --checkpoint=fast --no-password \
	|| die "pg_basebackup failed (see above); production is untouched. Check the role's REPLICATION attribute and pg_hba.conf"
[ -f "$copy/PG_VERSION" ] || die "pg_basebackup left no PG_VERSION in $copy"
# Move the copy where production keeps PGDATA (renames only, on one filesystem).
if [ -n "$rel" ]; then
	mkdir -p "$(dirname "$target")"
	[ ! -e "$target" ] || rmdir "$target" 2>/dev/null || die "$target exists and is not empty: not a fresh volume"
	mv "$copy" "$target"
else
	for entry in "$copy"/* "$copy"/.[!.]*; do
		[ -e "$entry" ] || continue
		mv "$entry" "$volume/"
	done
	rmdir "$copy"
fi
if [ -O "$target" ]; then
	chmod 0700 "$target"
else
	# PGDATA is the volume root, owned by root as a fresh PVC is: the image's entrypoint sets
	# its owner and mode when the rehearsal pod starts, as it does for production's volume.
	log "$target belongs to uid $(stat -c %u "$target"): left to the image's entrypoint to own"
fi
seal
touch "$state/done"
log "clone complete: PostgreSQL $(cat "$target/PG_VERSION"), $(du -sk "$target" | cut -f1) KiB in $target"
result cloned "$target"
