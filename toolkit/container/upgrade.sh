#!/usr/bin/env bash
# Runs in the NEW image, as the owner of the data, with the whole volume at
# PGLEAP_VOLUME and the old image's server (from collect.sh) at PGLEAP_OLD_ROOT.
#
# PGLEAP_ACTION:
#   prepare   wrap the old binaries and initdb the new cluster in a staging
#             directory; safe while the old server still runs (it only writes
#             under $VOLUME/.pgleap), so it can happen before the downtime
#   check     initdb the new cluster in a staging directory, pg_upgrade --check
#   upgrade   (check if not done), pg_upgrade, carry the configuration over,
#             then put the new cluster where the new image expects it
#   rollback  put the old cluster back where it was, keep the new one aside
#   rollback-check  (read-only) whether rollback is possible and whether the new
#             cluster has run (what a copy/clone rollback would drop)
#   cleanup   after a rollback: delete the kept new cluster(s) and pgleap's working files
#   finalize  delete the old cluster and pgleap's working files
#   place     (standby re-seed) move a pg_basebackup from the staging folder into place
#   serve-old / serve-new  run the stopped old cluster (read-only) or the placed new one (read-write,
#             for the post-upgrade before the switch) on
#             127.0.0.1 only, for pgleap's fingerprint through a port-forward (Kubernetes);
#             pgleap ends it with SIGINT (a fast, clean shutdown). Each runs in the image of its
#             cluster (serve-old in the OLD image) with that image's own server: nothing collected.
#
# Every step checks what is already done (marker files in $VOLUME/.pgleap) and
# is safe to run again after a crash. Nothing of the user's is deleted except by
# finalize; a failed new cluster is kept as .pgleap/failed-new-<time>.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

action="${PGLEAP_ACTION:?PGLEAP_ACTION must be prepare, check, upgrade, rollback, rollback-check, cleanup or finalize}"
volume="${PGLEAP_VOLUME:?}"
old_rel="${PGLEAP_OLD_REL-}"
new_rel="${PGLEAP_NEW_REL-}"
old_major="${PGLEAP_OLD_MAJOR:?}"
new_major="${PGLEAP_NEW_MAJOR:?}"
mode="${PGLEAP_MODE:-link}"
old_root="${PGLEAP_OLD_ROOT:-/pgleap/old}"

join() { if [ -n "$2" ]; then echo "$1/$2"; else echo "$1"; fi; }
state="$volume/.pgleap"
old_data="$(join "$volume" "$old_rel")"
new_data="$(join "$volume" "$new_rel")"
staging="$state/new-$new_major"
aside="$state/old-$old_major"
work="$state/work"
same_place=false
[ "$old_rel" = "$new_rel" ] && same_place=true

# The entries of a cluster directory: everything but pgleap's own folder,
# lost+found, and the top folder of the other cluster when it is nested inside.
cluster_entries() {
	local dir="$1" other_rel="$2" own_rel="$3" nested="" entry rest
	if [ -n "$other_rel" ] && [ "$other_rel" != "$own_rel" ]; then
		if [ -z "$own_rel" ]; then
			nested="${other_rel%%/*}"
		else
			rest="${other_rel#"$own_rel"/}"
			[ "$rest" != "$other_rel" ] && nested="${rest%%/*}"
		fi
	fi
	for entry in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
		[ -e "$entry" ] || [ -L "$entry" ] || continue
		case "${entry##*/}" in
			.pgleap|lost+found) continue ;;
		esac
		[ -n "$nested" ] && [ "${entry##*/}" = "$nested" ] && continue
		printf '%s\n' "$entry"
	done
}

# Move a cluster's entries (renames, so instant on one filesystem) into `dest`.
# Not atomic: callers write a marker before they start, and running it again
# moves what is left.
move_entries() {
	local src="$1" dest="$2" other_rel="$3" own_rel="$4" entry moved=0
	mkdir -p "$dest"
	while IFS= read -r entry; do
		mv "$entry" "$dest/"
		moved=$((moved + 1))
		if [ "$moved" = 1 ]; then fault "move:${dest##*/}"; fi  # test-only: killed half-way through
	done < <(cluster_entries "$src" "$other_rel" "$own_rel")
}

seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}'; }

controldata_field() { "$1/pg_controldata" "$2" | sed -nE "s/^$3:[[:space:]]*//p"; }

# Where the old cluster lives right now (moved aside once the new one is placed).
current_old_data() {
	if [ -f "$state/old-aside" ] || { [ -f "$aside/PG_VERSION" ] && [ ! -f "$old_data/PG_VERSION" ]; }; then
		echo "$aside"
	else
		echo "$old_data"
	fi
}

load_old_binaries() {
	[ -f "$old_root/collected.env" ] || die "old binaries not collected in $old_root (collect.sh must run first, in the old image)"
	# shellcheck disable=SC1091
	. "$old_root/collected.env"
	# shellcheck disable=SC2153  # OLD_MAJOR comes from collected.env
	[ "$OLD_MAJOR" = "$old_major" ] || die "collected binaries are PostgreSQL $OLD_MAJOR, the plan says $old_major"
	if [ ! -f "$old_root/wrapped" ]; then
		# Each old binary becomes a wrapper that points the loader at the copied
		# libraries; exec -a keeps argv[0] so the binary finds its share/lib dirs
		# relative to this bindir (dash has no exec -a, hence bash).
		local real="${OLD_BINDIR}.real" bin name
		mkdir -p "$real"
		for bin in "$OLD_BINDIR"/*; do
			[ -f "$bin" ] || continue
			name="${bin##*/}"
			mv "$bin" "$real/$name"
			# shellcheck disable=SC2016  # $0, $@ and LD_LIBRARY_PATH belong to the wrapper
			printf '#!/bin/bash\nexport LD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"\nexec -a "$0" "%s" "$@"\n' \
				"$old_root/lib" "$real/$name" > "$bin"
			chmod 0755 "$bin"
		done
		touch "$old_root/wrapped"
	fi
	"$OLD_BINDIR/postgres" -V >/dev/null || die "the old PostgreSQL binaries do not run in this image (see the loader error above)"
}

check_old_cluster() {
	local data
	data="$(current_old_data)"
	[ -d "$data" ] || die "old data directory $data does not exist (wrong volume or PGDATA?)"
	[ -f "$data/PG_VERSION" ] || die "$data is not a PostgreSQL data directory (no PG_VERSION): wrong PGDATA?"
	[ "$(cat "$data/PG_VERSION")" = "$old_major" ] || die "$data holds PostgreSQL $(cat "$data/PG_VERSION"), the plan says $old_major"
	# PostgreSQL refuses group-writable data directories (fsGroup makes them 2770).
	chmod 0700 "$data"
	local control="$data/global/pg_control"
	if [ ! -f "$control" ] && [ -f "$control.old" ]; then
		# Left by an interrupted pg_upgrade --link; the new cluster never started.
		log "restoring $control (renamed by an interrupted pg_upgrade --link)"
		mv "$control.old" "$control"
	fi
	local st
	st="$(controldata_field "$OLD_BINDIR" "$data" 'Database cluster state')"
	case "$st" in
		"shut down") ;;
		*) die "the old cluster was not shut down cleanly (state: $st); start it on its old image and stop it cleanly (docker stop / scale to 0), then run again" ;;
	esac
}

# One value from a single-user backend of the old cluster ("name = "value"" lines).
single_user_value() {
	local data="$1" query="$2" column="$3"
	printf '%s\n' "$query" | "$OLD_BINDIR/postgres" --single -D "$data" -j template1 2>/dev/null |
		sed -nE "s/^[[:space:]]*[0-9]+: $column = \"([^\"]*)\".*/\1/p" | head -n1
}

# When the caller gives no initdb options (the Kubernetes Job cannot ask a running
# server), read them from the stopped old cluster: checksums and WAL segment size
# from pg_controldata; encoding, locale and provider of template1 and the OID-10
# role from a single-user backend.
auto_initdb_args() {
	local data q enc collate ctype provider="c" icu="" checksum walseg
	data="$(current_old_data)"
	q="SELECT pg_encoding_to_char(encoding) AS enc, datcollate AS lc_collate, datctype AS lc_ctype"
	if [ "$old_major" -ge 17 ]; then q="$q, datlocprovider::text AS prov, datlocale AS icu"
	elif [ "$old_major" -ge 15 ]; then q="$q, datlocprovider::text AS prov, daticulocale AS icu"; fi
	q="$q FROM pg_database WHERE datname = 'template1';"
	enc="$(single_user_value "$data" "$q" enc)"
	[ -n "$enc" ] || die "could not read template1's encoding from the old cluster (single-user mode failed)"
	collate="$(single_user_value "$data" "$q" lc_collate)"
	ctype="$(single_user_value "$data" "$q" lc_ctype)"
	if [ "$old_major" -ge 15 ]; then
		provider="$(single_user_value "$data" "$q" prov)"
		icu="$(single_user_value "$data" "$q" icu)"
	fi
	if [ -z "${PGLEAP_SUPERUSER:-}" ]; then
		PGLEAP_SUPERUSER="$(single_user_value "$data" "SELECT rolname AS su FROM pg_authid WHERE oid = 10;" su)"
		export PGLEAP_SUPERUSER
	fi
	PGLEAP_INITDB_ARGS="--encoding=$enc --lc-collate=$collate --lc-ctype=$ctype"
	if [ "$provider" = i ]; then PGLEAP_INITDB_ARGS="$PGLEAP_INITDB_ARGS --locale-provider=icu --icu-locale=$icu"; fi
	checksum="$(controldata_field "$OLD_BINDIR" "$data" 'Data page checksum version')"
	if [ "$checksum" != 0 ]; then PGLEAP_INITDB_ARGS="$PGLEAP_INITDB_ARGS --data-checksums"
	elif [ "$new_major" -ge 18 ]; then PGLEAP_INITDB_ARGS="$PGLEAP_INITDB_ARGS --no-data-checksums"; fi
	walseg="$(controldata_field "$OLD_BINDIR" "$data" 'Bytes per WAL segment')"
	PGLEAP_INITDB_ARGS="$PGLEAP_INITDB_ARGS --wal-segsize=$((walseg / 1024 / 1024))"
	export PGLEAP_INITDB_ARGS
	log "initdb options read from the old cluster: --username=$PGLEAP_SUPERUSER $PGLEAP_INITDB_ARGS"
}

# Conditions for the test-only fault points inside long-running programs (see fault_watch).
initdb_running() { [ -d "$staging/base/1" ] && [ ! -f "$state/initdb-done" ]; }
upgrade_log_has() {
	local f
	# shellcheck disable=SC2231  # $2 is a file name pattern
	for f in "$staging"/pg_upgrade_output.d/*/log/$2 "$work"/$2; do
		if [ -f "$f" ] && grep -qs -- "$1" "$f"; then return 0; fi
	done
	return 1
}
# pg_restore of a database schema has begun, the file transfer has not.
restore_running() {
	upgrade_log_has pg_restore 'pg_upgrade_dump_*.log' && ! upgrade_log_has 'user relation files' pg_upgrade_internal.log
}
# At least one relation file has been linked/copied and the transfer has not ended.
transfer_running() {
	upgrade_log_has 'user relation files' pg_upgrade_internal.log || return 1
	! upgrade_log_has 'Setting next OID' pg_upgrade_internal.log || return 1
	[ -f "$state/transfer-seen" ] || touch "$state/transfer-seen"
	if [ "$mode" = link ]; then
		find "$(current_old_data)/base" -type f -links +1 -print -quit | grep -q .
	else
		find "$staging/base" -type f -size +0 -newer "$state/transfer-seen" -print -quit | grep -q .
	fi
}

init_staging() {
	if [ -f "$state/initdb-done" ] && [ -f "$staging/PG_VERSION" ]; then
		log "new cluster already initialised in $staging"
		chmod 0700 "$staging"  # a prepare Job's; the kubelet's fsGroup made it 2770 since, which PostgreSQL refuses
		return
	fi
	if [ -e "$staging" ]; then
		log "removing an incomplete staging cluster from an earlier run"
		rm -rf "$staging"
	fi
	mkdir -p "$staging"
	chmod 0700 "$staging"
	log "initdb $staging as ${PGLEAP_SUPERUSER:?} ${PGLEAP_INITDB_ARGS:-}"
	fault_watch initdb initdb_running
	local t0
	t0="$(date +%s.%N)"
	# shellcheck disable=SC2086
	"$PG_BINDIR/initdb" -D "$staging" --username="$PGLEAP_SUPERUSER" ${PGLEAP_INITDB_ARGS:-} >"$state/initdb.log" 2>&1 ||
		{ cat "$state/initdb.log" >&2; die "initdb failed"; }
	printf 'PGLEAP_SUPERUSER=%q\nPGLEAP_INITDB_ARGS=%q\n' "$PGLEAP_SUPERUSER" "${PGLEAP_INITDB_ARGS:-}" > "$state/initdb.env"
	touch "$state/initdb-done"
	result initdb_seconds "$(seconds_since "$t0")"
}

# The transfer flag: copy is pg_upgrade's default and only has a flag from 16 on.
mode_flag() {
	case "$mode" in
		link) echo --link ;;
		clone) echo --clone ;;
		swap) echo --swap ;;
		copy) if [ "$new_major" -ge 16 ]; then echo --copy; fi ;;
		*) die "unknown mode $mode" ;;
	esac
}

run_pg_upgrade() {
	local extra=("$@") data locks="${PGLEAP_MAX_LOCKS:-0}"
	data="$(current_old_data)"
	mkdir -p "$work"
	cd "$work"
	# pg_dump locks every table of a database at once: with many tables the
	# default lock table is too small ("out of shared memory"), so the plan sizes it.
	if [ "$locks" -gt 0 ]; then
		extra+=(-o "-c max_locks_per_transaction=$locks" -O "-c max_locks_per_transaction=$locks")
	fi
	# pg_upgrade reports on stdout; stdout is for PGLEAP result lines, so it goes to the log.
	"$PG_BINDIR/pg_upgrade" -b "$OLD_BINDIR" -B "$PG_BINDIR" -d "$data" -D "$staging" \
		-U "$PGLEAP_SUPERUSER" -j "${PGLEAP_JOBS:-2}" "${extra[@]}" >&2
}

# Keep the user's configuration; comment out what the new major no longer knows.
carry_config() {
	local data f names tmp
	data="$(current_old_data)"
	for f in postgresql.conf postgresql.auto.conf pg_hba.conf pg_ident.conf; do
		[ -f "$data/$f" ] && cp -p "$data/$f" "$staging/$f"
	done
	names="$state/settings-$new_major.txt"
	if [ ! -s "$names" ]; then
		"$PG_BINDIR/postgres" --describe-config | cut -f1 | tr '[:upper:]' '[:lower:]' > "$names"
	fi
	for f in postgresql.conf postgresql.auto.conf; do
		[ -f "$staging/$f" ] || continue
		tmp="$staging/$f.pgleap"
		awk -v names="$names" -v major="$new_major" -v dropped="$state/dropped-settings" '
			BEGIN { while ((getline n < names) > 0) known[n] = 1 }
			{
				line = $0
				if (match(line, /^[[:space:]]*[A-Za-z_][A-Za-z0-9_.]*[[:space:]]*(=|[[:space:]])/)) {
					name = line; sub(/^[[:space:]]*/, "", name); sub(/[[:space:]=].*/, "", name)
					lname = tolower(name)
					if (index(lname, ".") == 0 && lname != "include" && lname != "include_dir" && lname != "include_if_exists" && !(lname in known)) {
						print "# pgleap: not a setting in PostgreSQL " major ": " line
						print name >> dropped
						next
					}
				}
				print line
			}' "$staging/$f" > "$tmp"
		mv "$tmp" "$staging/$f"
	done
	if [ -f "$state/dropped-settings" ]; then
		while IFS= read -r f; do result commented "$f"; done < "$state/dropped-settings"
		rm -f "$state/dropped-settings"
	fi
	# Values the new major rejects: let the server say which, comment them out.
	local i err bad
	for i in 1 2 3 4 5 6 7 8 9 10; do
		if err="$("$PG_BINDIR/postgres" -D "$staging" -C server_version 2>&1 >/dev/null)"; then
			return 0
		fi
		bad="$(printf '%s\n' "$err" | sed -nE 's/.*parameter "([^"]+)".*/\1/p' | head -n1)"
		[ -n "$bad" ] || die "the carried-over configuration does not load in PostgreSQL $new_major: $err"
		log "commenting out $bad: $err"
		sed -i -E "s/^([[:space:]]*${bad}[[:space:]]*(=|[[:space:]]).*)$/# pgleap: rejected by PostgreSQL $new_major: \1/I" \
			"$staging/postgresql.conf" "$staging/postgresql.auto.conf" 2>/dev/null || true
		result commented "$bad"
		[ "$i" -lt 10 ] || die "too many settings rejected by PostgreSQL $new_major: $err"
	done
}

place_new_cluster() {
	if $same_place; then
		# Markers before each batch of renames: a crash half-way leaves a cluster
		# split over two directories, and rollback must know which one to gather.
		if [ ! -f "$state/old-aside" ]; then
			log "moving the old cluster aside to $aside (renames)"
			touch "$state/moving-aside"
			move_entries "$old_data" "$aside" "" "$old_rel"
			touch "$state/old-aside"
			rm -f "$state/moving-aside"
		fi
		log "moving the new cluster into $new_data (renames)"
		touch "$state/moving-new"
		move_entries "$staging" "$new_data" "" ""
		rmdir "$staging" 2>/dev/null || true
	else
		if [ -e "$new_data" ] && [ -n "$(ls -A "$new_data" 2>/dev/null)" ]; then
			die "$new_data already exists and is not empty; move it away or choose another layout"
		fi
		mkdir -p "$(dirname "$new_data")"
		rmdir "$new_data" 2>/dev/null || true
		mv "$staging" "$new_data"
	fi
	if ! chmod 0700 "$new_data" 2>/dev/null; then
		# A standby seeded onto a fresh claim (--strategy logical on Kubernetes) whose PGDATA is the
		# claim's root: the root belongs to root (fsGroup), and the image's entrypoint, starting as
		# root, sets its owner and mode as it does for any PGDATA (a non-root pod could not have
		# initialised its primary there either).
		if [ "$action" != place ] || [ "$new_data" != "$volume" ]; then
			chmod 0700 "$new_data"  # fails again, with its own message
		fi
		log "the volume root $new_data is not ours to chmod: the server's entrypoint sets its mode at start"
	fi
	touch "$state/placed"
}

print_results() {
	result new_pgdata "$new_data"
	result old_pgdata "$(current_old_data)"
	[ -f "$state/upgraded" ] && result upgraded "$(cat "$state/upgraded")"
	[ -f "$work/update_extensions.sql" ] && result update_extensions_sql "$work/update_extensions.sql"
	return 0
}

do_upgrade() {
	PGLEAP_STEP=upgrade
	if [ -f "$state/placed" ]; then
		log "already upgraded: PostgreSQL $new_major cluster in $new_data, nothing to do"
		print_results
		return
	fi
	mkdir -p "$state"
	fault start  # test-only: the first thing after the old binaries were collected
	server_paths
	[ "$PG_MAJOR_VERSION" = "$new_major" ] || die "this image runs PostgreSQL $PG_MAJOR_VERSION, the plan says $new_major"
	if [ ! -f "$state/upgraded" ]; then
		load_old_binaries
		check_old_cluster
		if [ -f "$state/pg_upgrade-started" ]; then
			if [ "$mode" = swap ]; then
				die "an earlier pg_upgrade --swap was interrupted: the old cluster may be partly moved; restore from your snapshot/backup"
			fi
			log "an earlier pg_upgrade was interrupted; starting again from a fresh new cluster"
			rm -f "$state/initdb-done" "$state/pg_upgrade-started"
		fi
		if [ -z "${PGLEAP_INITDB_ARGS+set}" ] || [ -z "${PGLEAP_SUPERUSER:-}" ]; then
			if [ -f "$state/initdb-done" ] && [ -f "$state/initdb.env" ]; then
				# shellcheck disable=SC1091
				. "$state/initdb.env"
			else
				auto_initdb_args
			fi
		fi
		init_staging
		if [ "$action" = check ] || [ "${PGLEAP_CHECK:-1}" = 1 ]; then
			PGLEAP_STEP=check
			log "pg_upgrade --check"
			local tc
			tc="$(date +%s.%N)"
			# shellcheck disable=SC2046  # an empty flag must vanish
			run_pg_upgrade --check $(mode_flag) || die "pg_upgrade --check failed (nothing was changed); see its report in the log below"
			result check_seconds "$(seconds_since "$tc")"
			[ "$action" = check ] && { result checked ok; return; }
		fi
		PGLEAP_STEP=pg_upgrade
		touch "$state/pg_upgrade-started"
		fault_watch restore restore_running
		fault_watch transfer transfer_running
		local t0 t1
		t0="$(date +%s.%N)"
		# shellcheck disable=SC2046
		if ! run_pg_upgrade $(mode_flag); then
			local failed
			failed="$state/failed-new-$(date -u +%Y%m%dT%H%M%S)"
			[ -e "$staging" ] && mv "$staging" "$failed"
			local data
			data="$(current_old_data)"
			if [ "$mode" = link ] && [ -f "$data/global/pg_control.old" ] && [ ! -f "$data/global/pg_control" ]; then
				mv "$data/global/pg_control.old" "$data/global/pg_control"
			fi
			rm -f "$state/initdb-done" "$state/pg_upgrade-started"
			# pg_upgrade's own message only points at a log inside the new cluster: name the cause.
			local why
			why="$(pg_upgrade_failure "$failed" "$work")" || true
			[ "$mode" = swap ] && die "pg_upgrade --swap failed${why:+: $why}; the old cluster may be damaged: restore from your snapshot/backup (failed new cluster kept in $failed)"
			die "pg_upgrade failed${why:+: $why}; the old cluster is unchanged and usable (failed new cluster kept in $failed; logs above)"
		fi
		result pg_upgrade_seconds "$(seconds_since "$t0")"
		PGLEAP_STEP=config
		t1="$(date +%s.%N)"
		carry_config
		result config_seconds "$(seconds_since "$t1")"
		printf 'mode=%s checkpoint=%s\n' "$mode" \
			"$(controldata_field "$PG_BINDIR" "$staging" 'Latest checkpoint location')" > "$state/upgraded"
		fault upgraded  # test-only: pg_upgrade done, new cluster not placed, never started
	fi
	PGLEAP_STEP=place
	place_new_cluster
	log "PostgreSQL $new_major cluster ready in $new_data"
	print_results
}

# The one rollback decision, read-only (the `rollback-check` action prints it, `rollback`
# obeys it; the Docker and Kubernetes runtimes ask it before they touch anything).
# The new cluster "has run" once its control data changed after pg_upgrade ended: a
# server that ran and stopped cleanly wrote a new shutdown checkpoint, one that runs
# now or was killed leaves the state "in production". --downtime minimal starts the
# new cluster in the user's container, and a container removed by force never
# checkpoints: the checkpoint alone missed that, the state does not.
# Sets rb_refusal (empty: rollback possible), rb_new_ran, rb_switch_cp, rb_now_cp, rb_new_state.
rollback_verdict() {
	local recorded_mode="" effective base_cp
	rb_refusal="" rb_new_ran=no rb_switch_cp="" rb_now_cp="" rb_new_state=""
	if [ -f "$state/upgraded" ]; then
		recorded_mode="$(sed -nE 's/.*mode=([a-z]+).*/\1/p' "$state/upgraded")"
		rb_switch_cp="$(sed -nE 's/.*checkpoint=([^ ]+).*/\1/p' "$state/upgraded")"
	fi
	effective="${recorded_mode:-$mode}"
	if [ "$effective" = swap ] && [ -f "$state/pg_upgrade-started" ]; then
		rb_refusal="pg_upgrade --swap has run: the old cluster's files now belong to the new cluster; restore from a snapshot or backup instead"
		return 0
	fi
	if [ -f "$state/placed" ] && [ -f "$new_data/global/pg_control" ]; then
		server_paths
		rb_now_cp="$(controldata_field "$PG_BINDIR" "$new_data" 'Latest checkpoint location' || true)"
		rb_new_state="$(controldata_field "$PG_BINDIR" "$new_data" 'Database cluster state' || true)"
		base_cp="$rb_switch_cp"
		# Served by a serve-new Job only (pgleap's reads and post-upgrade, no client): in copy/clone
		# mode nothing a client wrote is lost; with --link any start already changed shared files.
		if [ "$effective" != link ] && [ -f "$state/served-new" ]; then
			base_cp="$(sed -nE 's/.*checkpoint=([^ ]+).*/\1/p' "$state/served-new")"
		fi
		if [ "$rb_new_state" != "shut down" ] || { [ -n "$base_cp" ] && [ "$rb_now_cp" != "$base_cp" ]; }; then
			rb_new_ran=yes
		fi
	fi
	if [ "$rb_new_ran" = yes ] && [ "$effective" = link ]; then
		rb_refusal="the new cluster has been started (state: $rb_new_state; checkpoint ${rb_switch_cp:-?} after pg_upgrade, $rb_now_cp now); with --link the old cluster shares its files and can no longer be used safely"
	fi
	return 0
}

do_rollback_check() {
	PGLEAP_STEP=rollback-check
	rollback_verdict
	result new_ran "$rb_new_ran"
	result switch_checkpoint "$rb_switch_cp"
	result now_checkpoint "$rb_now_cp"
	result new_state "$rb_new_state"
	[ -n "$rb_refusal" ] && result refused "$rb_refusal"
	return 0
}

do_rollback() {
	PGLEAP_STEP=rollback
	local failed
	rollback_verdict
	[ -z "$rb_refusal" ] || die "$rb_refusal. Restore from a snapshot or backup"
	failed="$state/failed-new-$(date -u +%Y%m%dT%H%M%S)"
	if $same_place && { [ -f "$state/placed" ] || [ -f "$state/old-aside" ] || [ -f "$state/moving-aside" ]; }; then
		# Whatever is in $new_data once the new cluster's move began is the new
		# cluster's (the old one was wholly aside by then); before that, it is the
		# part of the old cluster not yet moved aside, and stays.
		if [ -f "$state/placed" ] || [ -f "$state/moving-new" ]; then
			log "moving the new cluster out of $new_data into $failed"
			move_entries "$new_data" "$failed" "" "$new_rel"
		fi
		log "moving the old cluster back into $old_data"
		move_entries "$aside" "$old_data" "" ""
		rmdir "$aside" 2>/dev/null || true
		if [ -e "$staging" ]; then mv "$staging" "$failed-staging"; fi
	elif [ -f "$state/placed" ]; then
		if [ -e "$new_data" ]; then mv "$new_data" "$failed"; fi
	elif [ -e "$staging" ]; then
		mv "$staging" "$failed"
	fi
	if [ -f "$old_data/global/pg_control.old" ] && [ ! -f "$old_data/global/pg_control" ]; then
		log "restoring global/pg_control of the old cluster (renamed by pg_upgrade --link)"
		mv "$old_data/global/pg_control.old" "$old_data/global/pg_control"
	fi
	rm -f "$state/placed" "$state/old-aside" "$state/moving-aside" "$state/moving-new" "$state/upgraded" \
		"$state/initdb-done" "$state/pg_upgrade-started" "$state/transfer-seen" "$state/served-new"
	[ -f "$old_data/PG_VERSION" ] || die "the old cluster is not back in $old_data; look in $state"
	chmod 0700 "$old_data"
	result rolled_back "$old_data"
	[ -e "$failed" ] && result kept_new "$failed"
	return 0
}

do_finalize() {
	PGLEAP_STEP=finalize
	if [ ! -d "$state" ]; then
		log "nothing to finalize: no $state"
		result finalized already
		return
	fi
	[ -f "$state/placed" ] || die "the upgrade is not complete (no new cluster in place); run upgrade or rollback first"
	local entry
	if [ -d "$aside" ]; then
		log "deleting the old cluster in $aside"
		rm -rf "$aside"
	elif ! $same_place && [ -f "$old_data/PG_VERSION" ] && [ "$(cat "$old_data/PG_VERSION")" = "$old_major" ]; then
		log "deleting the old cluster in $old_data"
		while IFS= read -r entry; do rm -rf "$entry"; done < <(cluster_entries "$old_data" "$new_rel" "$old_rel")
		if [ -n "$old_rel" ]; then rmdir "$old_data" 2>/dev/null || true; fi
	fi
	rm -rf "$state"
	result finalized "$new_data"
}

# After a rollback (or a restore after a failed run): the kept new clusters
# (failed-new-*) and pgleap's working files go; refused while the markers say an
# upgrade is under way or done (that is finalize's or rollback's business).
do_cleanup() {
	PGLEAP_STEP=cleanup
	local marker kept=0 entry
	if [ ! -d "$state" ]; then
		log "nothing to clean up: no $state"
		result cleaned none
		return
	fi
	for marker in placed old-aside moving-aside moving-new upgraded pg_upgrade-started; do
		[ ! -e "$state/$marker" ] || die "an upgrade is under way or done on this volume ($state/$marker exists); finish it with resume/finalize or undo it with rollback"
	done
	if [ -d "$aside" ] && [ -n "$(ls -A "$aside" 2>/dev/null)" ]; then
		die "$aside is not empty (it may hold the old cluster); run rollback first"
	fi
	for entry in "$state"/failed-new-*; do
		[ -e "$entry" ] || continue
		log "deleting the kept new cluster $entry"
		kept=$((kept + 1))
	done
	rm -rf "$state"
	result cleaned "$kept"
}

# A standby re-seeded by pg_basebackup into the staging folder: put it where the new
# image expects PGDATA, the old standby aside (kept until finalize, restored by rollback).
do_place() {
	PGLEAP_STEP=place
	if [ -f "$state/placed" ]; then
		log "new cluster already in place in $new_data"
		print_results
		return
	fi
	[ -f "$staging/PG_VERSION" ] || die "no new cluster in $staging to put in place"
	[ "$(cat "$staging/PG_VERSION")" = "$new_major" ] || die "$staging is not a PostgreSQL $new_major cluster"
	printf 'mode=copy checkpoint=\n' > "$state/upgraded"  # the old standby's files are its own
	place_new_cluster
	print_results
}

# Before the downtime: only what does not need the old cluster stopped.
do_prepare() {
	PGLEAP_STEP=prepare
	if [ -f "$state/placed" ] || [ -f "$state/upgraded" ]; then
		log "already upgraded, nothing to prepare"
		result prepared already
		return
	fi
	mkdir -p "$state" "$work"
	server_paths
	[ "$PG_MAJOR_VERSION" = "$new_major" ] || die "this image runs PostgreSQL $PG_MAJOR_VERSION, the plan says $new_major"
	load_old_binaries
	if [ -f "$state/pg_upgrade-started" ]; then
		# The upgrade step decides what an interrupted run means (swap: refuse).
		log "an earlier pg_upgrade was interrupted; left for the upgrade step to handle"
		result prepared interrupted
		return
	fi
	init_staging
	# The new major's setting names, read once here instead of inside the downtime.
	"$PG_BINDIR/postgres" --describe-config | cut -f1 | tr '[:upper:]' '[:lower:]' > "$state/settings-$new_major.txt"
	result prepared "$staging"
}

# A cluster served for the fingerprint: loopback only, trust only from loopback (the Job
# pod has no Service; only who may port-forward to it reaches it), its own socket folder.
do_serve() {
	local which="$1" bindir data hba sock
	PGLEAP_STEP="serve-$which"
	server_paths
	if [ "$which" = old ]; then
		[ ! -f "$state/upgraded" ] || die "pg_upgrade already ran: the old cluster is no longer served"
		# In the OLD image (no collect in the downtime window): its own server runs its own cluster.
		[ "$PG_MAJOR_VERSION" = "$old_major" ] || die "serve-old runs in the old image (PostgreSQL $old_major); this one runs PostgreSQL $PG_MAJOR_VERSION"
		OLD_BINDIR="$PG_BINDIR"
		check_old_cluster
		bindir="$PG_BINDIR"
		data="$(current_old_data)"
	else
		[ -f "$state/placed" ] || die "no upgraded cluster in place in $new_data"
		[ "$PG_MAJOR_VERSION" = "$new_major" ] || die "serve-new runs in the new image (PostgreSQL $new_major); this one runs PostgreSQL $PG_MAJOR_VERSION"
		bindir="$PG_BINDIR"
		data="$new_data"
		chmod 0700 "$data"
	fi
	sock="$(mktemp -d)"
	hba="$sock/pgleap_hba.conf"
	printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' > "$hba"
	# The old cluster read-only; the new one read-write for the post-upgrade before the switch
	# (extension updates, repairs): only pgleap reaches it, through the port-forward to loopback.
	local readonly=off
	[ "$which" = new ] || readonly=on
	log "serving the $which cluster in $data on 127.0.0.1:${PGLEAP_SERVE_PORT:-5432} (read-only: $readonly)"
	if [ "$which" = old ]; then
		exec "$bindir/postgres" -D "$data" -c listen_addresses=127.0.0.1 -c "port=${PGLEAP_SERVE_PORT:-5432}" \
			-c "unix_socket_directories=$sock" -c "hba_file=$hba" -c "default_transaction_read_only=$readonly"
	fi
	# The new cluster: postgres as a child, so that after its clean shutdown (pgleap's SIGINT to
	# PID 1, passed on) its checkpoint is recorded: a copy/clone rollback then knows the cluster
	# served only pgleap since, and drops nothing a client wrote (rollback_verdict).
	local pid rc=0 cp
	rm -f "$state/served-new"
	"$bindir/postgres" -D "$data" -c listen_addresses=127.0.0.1 -c "port=${PGLEAP_SERVE_PORT:-5432}" \
		-c "unix_socket_directories=$sock" -c "hba_file=$hba" -c "default_transaction_read_only=$readonly" &
	pid=$!
	trap 'kill -INT "$pid" 2>/dev/null || true' INT TERM
	while kill -0 "$pid" 2>/dev/null; do
		rc=0
		wait "$pid" || rc=$?
	done
	trap - INT TERM
	[ "$rc" = 0 ] || die "the served new cluster ended with status $rc"
	if [ "$(controldata_field "$bindir" "$data" 'Database cluster state')" = "shut down" ]; then
		cp="$(controldata_field "$bindir" "$data" 'Latest checkpoint location')"
		printf 'checkpoint=%s\n' "$cp" > "$state/served-new"
		log "the new cluster was shut down cleanly after serving pgleap only (checkpoint $cp)"
	fi
}

case "$action" in
	prepare) do_prepare ;;
	serve-old) do_serve old ;;
	serve-new) do_serve new ;;
	check|upgrade) do_upgrade ;;
	place) do_place ;;
	rollback) do_rollback ;;
	rollback-check) do_rollback_check ;;
	cleanup) do_cleanup ;;
	finalize) do_finalize ;;
	*) die "unknown PGLEAP_ACTION $action" ;;
esac
