#!/usr/bin/env bash
# Runs in the OLD image. Copies its server (bindir, pkglibdir, sharedir, at the
# same relative layout so the binaries still find their files) and the shared
# libraries those need (minus glibc's own) into PGLEAP_OLD_ROOT, so that the NEW
# image can run the old binaries for pg_upgrade. No custom image needed.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
PGLEAP_STEP=collect

out="${PGLEAP_OLD_ROOT:?PGLEAP_OLD_ROOT must name the scratch directory}"
if [ -f "$out/collected.env" ]; then
	log "old binaries already collected in $out, nothing to do"
	cat "$out/collected.env"
	exit 0
fi
server_paths
log "collecting PostgreSQL $PG_FULL_VERSION from $PG_BINDIR"
rm -rf "${out:?}/root" "${out:?}/lib" "${out:?}/collected.env.tmp"
mkdir -p "$out/root" "$out/lib"

for dir in "$PG_BINDIR" "$PG_PKGLIBDIR" "$PG_SHAREDIR"; do
	mkdir -p "$out/root$(dirname "$dir")"
	cp -a "$dir" "$out/root$(dirname "$dir")/"
	fault collect  # test-only: killed with the copy half done, collected.env not written
done

# The shared-library closure (ldd resolves it transitively) of every binary
# and loadable module.
count=0
while IFS= read -r lib; do
	if is_glibc_lib "$lib"; then continue; fi
	cp -L "$lib" "$out/lib/"
	count=$((count + 1))
done < <(
	find "$PG_BINDIR" "$PG_PKGLIBDIR" -maxdepth 1 -type f \( -perm -u+x -o -name '*.so' \) -print0 |
		xargs -0 ldd 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u
)

{
	echo "OLD_MAJOR=$PG_MAJOR_VERSION"
	echo "OLD_VERSION=$PG_FULL_VERSION"
	echo "OLD_BINDIR=$out/root$PG_BINDIR"
	echo "OLD_GLIBC=$(glibc_version)"
	echo "OLD_ICU=$(icu_version)"
	echo "OLD_LIBS=$count"
} > "$out/collected.env.tmp"
mv "$out/collected.env.tmp" "$out/collected.env"
# Docker runs this as root on a fresh volume: hand it to the data owner, who
# wraps the binaries later. (A Kubernetes emptyDir is writable through fsGroup.)
if [ "$(id -u)" = 0 ] && [ -n "${PGLEAP_CHOWN:-}" ]; then
	chown -R "$PGLEAP_CHOWN" "$out"
fi
log "copied $count libraries and $(du -sh "$out" | cut -f1) in all"
cat "$out/collected.env"
