# Shared helpers for the scripts that run inside the old and new images.
# Sourced, never executed. POSIX tools and bash only: the images have no Python.

log() { printf '%s pgleap[%s]: %s\n' "$(date -u +%H:%M:%S)" "${PGLEAP_STEP:-${0##*/}}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Result lines for the caller: "PGLEAP key=value" on stdout, everything else is log.
result() { printf 'PGLEAP %s=%s\n' "$1" "$2"; }

# glibc's own libraries: never copied, the new image's newer glibc serves the
# old binaries (glibc is backwards compatible, mixing two glibcs is not).
is_glibc_lib() {
	case "${1##*/}" in
		libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libresolv.so.*|\
		ld-linux*.so.*|libutil.so.*|libnsl.so.*|libanl.so.*|libmvec.so.*|libBrokenLocale.so.*|\
		libnss_*.so.*|libthread_db.so.*|libmemusage.so|libpcprofile.so|libc_malloc_debug.so.*)
			return 0 ;;
	esac
	return 1
}

# pg_config of this image's server, wherever the distribution put it.
find_pg_config() {
	local c
	for c in "$(command -v postgres 2>/dev/null | sed 's#/postgres$#/pg_config#')" \
		/usr/lib/postgresql/*/bin/pg_config /opt/bitnami/postgresql/bin/pg_config \
		/usr/local/bin/pg_config "$(command -v pg_config 2>/dev/null)"; do
		if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
	done
	return 1
}

# Server paths: PG_BINDIR PG_PKGLIBDIR PG_SHAREDIR PG_MAJOR_VERSION (from pg_config,
# as CloudNativePG does; Debian layout as a fallback when pg_config is absent).
server_paths() {
	local pgc postgres_bin
	if pgc="$(find_pg_config)"; then
		PG_BINDIR="$("$pgc" --bindir)"
		PG_PKGLIBDIR="$("$pgc" --pkglibdir)"
		PG_SHAREDIR="$("$pgc" --sharedir)"
	else
		postgres_bin="$(command -v postgres || true)"
		if [ -z "$postgres_bin" ]; then
			for postgres_bin in /usr/lib/postgresql/*/bin/postgres; do :; done
			[ -x "$postgres_bin" ] || postgres_bin=""
		fi
		[ -n "$postgres_bin" ] || die "no PostgreSQL server in this image (no postgres binary, no pg_config)"
		PG_BINDIR="${postgres_bin%/postgres}"
		PG_PKGLIBDIR="${PG_BINDIR%/bin}/lib"
		PG_SHAREDIR="/usr/share/postgresql/$(basename "${PG_BINDIR%/bin}")"
	fi
	[ -x "$PG_BINDIR/postgres" ] || die "no postgres binary in $PG_BINDIR"
	PG_MAJOR_VERSION="$("$PG_BINDIR/postgres" -V | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')"
	PG_FULL_VERSION="$("$PG_BINDIR/postgres" -V | sed -E 's/^[^0-9]*([0-9.]+).*/\1/')"
	export PG_BINDIR PG_PKGLIBDIR PG_SHAREDIR PG_MAJOR_VERSION PG_FULL_VERSION
}

glibc_version() { getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}'; }

# ICU major linked by the server (empty when built without ICU).
icu_version() {
	ldd "$PG_BINDIR/postgres" 2>/dev/null | sed -nE 's/.*libicuuc\.so\.([0-9]+).*/\1/p' | head -n1
}

# ---- test-only fault injection (tests/faults) ----------------------------------------------
# PGLEAP_FAULT=<point> is set only by the fault-injection tests. At that point the
# script prints "PGLEAP fault=<point>", then freezes every process of the container
# (SIGSTOP to all but PID 1 and itself) and waits, so the test can SIGKILL the
# container (or pgleap) exactly there. Unset, these functions do nothing.
fault_reached() {
	log "test fault point $1 reached: freezing, waiting to be killed"
	result fault "$1"
	kill -STOP -1 2>/dev/null || true
	while :; do sleep 1; done
}
fault() {
	if [ "${PGLEAP_FAULT:-}" = "$1" ]; then fault_reached "$1"; fi
	return 0
}
# fault_watch POINT COMMAND...: in the background, fire POINT as soon as COMMAND
# succeeds (for points inside a long-running program: initdb, pg_upgrade).
fault_watch() {
	[ "${PGLEAP_FAULT:-}" = "$1" ] || return 0
	local point="$1"
	shift
	(
		while ! "$@" 2>/dev/null; do sleep 0.01; done
		fault_reached "$point"
	) &
}

# ---- what made pg_upgrade fail ----------------------------------------------------------------
# pg_upgrade itself only says "consult the last few lines of <log>", a file inside the
# new cluster. Print the last ERROR line of the failing log, the object pg_restore was
# creating, and the log's path, as one line (nothing when no log has an ERROR).
# Arguments: directories holding pg_upgrade's logs (pg_upgrade_output.d, or the working
# directory for PostgreSQL <= 14). The dump/restore logs win over the server logs.
pg_upgrade_failure() {
	local log="" f error object at statement
	while IFS= read -r f; do
		if grep -qs 'ERROR:' "$f"; then log="$f"; break; fi
	done < <(
		find "$@" -name 'pg_upgrade_dump_*.log' -type f -printf '%T@ %p\n' 2>/dev/null | sort -rn | cut -d' ' -f2-
		find "$@" -name '*.log' ! -name 'pg_upgrade_dump_*.log' -type f -printf '%T@ %p\n' 2>/dev/null | sort -rn | cut -d' ' -f2-
	)
	[ -n "$log" ] || return 0
	error="$(grep -n 'ERROR:' "$log" | tail -n1)"
	at="${error%%:*}"
	# The object: what pg_restore was creating when the error came; the statement: the first
	# real SQL line of "Command was:" (binary-upgrade comments and OID settings skipped).
	object="$(head -n "$at" "$log" | sed -nE 's/^pg_restore: creating (.*)$/\1/p' | tail -n1)"
	[ -n "$object" ] || object="$(head -n "$at" "$log" |
		sed -nE 's/^pg_restore: from TOC entry [0-9]+; [0-9]+ [0-9]+ (.*) [^ ]+$/\1/p' | tail -n1)"
	statement="$(tail -n "+$at" "$log" | head -n 60 | sed -E '1s/.*ERROR:.*//; s/^Command was:[[:space:]]*//' |
		grep -vE '^[[:space:]]*$|^[[:space:]]*--|binary_upgrade_|^pg_restore:|^pg_dump:' | head -n1 | cut -c1-200)"
	error="$(printf '%s' "${error#*:}" | sed -E 's/^.*ERROR:[[:space:]]*/ERROR:  /')"
	# Inside a helper the volume is mounted at PGLEAP_VOLUME: name the log as the operator sees it.
	if [ -n "${PGLEAP_VOLUME:-}" ] && [ "${log#"$PGLEAP_VOLUME"/}" != "$log" ]; then
		log="${log#"$PGLEAP_VOLUME"/} on the data volume"
	fi
	printf '%s%s%s (full log: %s)\n' "$error" "${object:+ (while creating $object)}" \
		"${statement:+ in: $statement}" "$log"
}
