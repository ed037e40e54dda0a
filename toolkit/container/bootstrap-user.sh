#!/usr/bin/env bash
# Runs in the OLD image as the data owner, on a cleanly shut down cluster that
# has no container: asks a single-user backend for the role with OID 10 (the
# bootstrap superuser, which initdb of the new cluster must reuse).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
PGLEAP_STEP=bootstrap-user

data="${PGLEAP_PGDATA:?}"
bindir="${PGLEAP_BINDIR:?}"
chmod 0700 "$data"
name="$(echo 'SELECT rolname FROM pg_authid WHERE oid = 10;' |
	"$bindir/postgres" --single -D "$data" -j template1 2>/dev/null |
	sed -nE 's/.*rolname = "([^"]*)".*/\1/p' | head -n1)"
[ -n "$name" ] || die "could not read the bootstrap superuser from $data (is it a cleanly shut down cluster?)"
result bootstrap_user "$name"
