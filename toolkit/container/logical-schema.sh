#!/usr/bin/env bash
# Runs in the NEW image (its pg_dump reads the old server; a newer pg_dump reads every older
# major), on the old server's network. Copies the roles with their password hashes, then each
# database's schema (extensions are created at the new image's versions: pg_dump names no
# version). Data follows by logical replication, not through here.
#
# PGLEAP_OLD_HOST, PGLEAP_NEW_HOST: addresses of the two servers (port 5432)
# PGUSER, PGPASSWORD: the superuser of both (from the user's container, via the Docker API)
# PGLEAP_DATABASES: the databases, one per line
# PGLEAP_PASSWORD_FILE: instead of PGPASSWORD, the user's mounted Secret file (POSTGRES_PASSWORD_FILE)
set -euo pipefail
if [ -z "${PGPASSWORD:-}" ] && [ -n "${PGLEAP_PASSWORD_FILE:-}" ]; then
  PGPASSWORD="$(cat "$PGLEAP_PASSWORD_FILE")"
  export PGPASSWORD
fi

old="${PGLEAP_OLD_HOST:?}"
new="${PGLEAP_NEW_HOST:?}"
: "${PGUSER:?}"

log() { echo "pgleap[logical-schema] $*" >&2; }

log "roles with their password hashes"
# The bootstrap superuser exists on both sides with the password of the user's environment:
# its lines are left out (an md5 hash from an old major would not pass the new image's
# scram-sha-256 pg_hba.conf). Every other failure stops the copy.
pg_dumpall -h "$old" --roles-only --no-role-passwords >/dev/null  # fail early if unreachable
pg_dumpall -h "$old" --roles-only \
  | grep -v -E "^(CREATE|ALTER) ROLE \"?${PGUSER}\"?( |;)" \
  | psql -h "$new" -d postgres -q -v ON_ERROR_STOP=1 >/dev/null

while IFS= read -r db; do
  [ -n "$db" ] || continue
  log "schema of database $db"
  pg_dump -h "$old" -d "$db" --schema-only \
    | psql -h "$new" -d "$db" -q -v ON_ERROR_STOP=1 >/dev/null
done <<<"${PGLEAP_DATABASES:?}"
log "done"
