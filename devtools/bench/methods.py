"""The ways to upgrade one cloned dataset, each timed the same way.

Downtime is measured from the moment the stop of the old primary is issued to
the moment the new primary accepts a real connection (psycopg, over TCP), with
the same stop and wait helpers for every method. Only pg_dumpall | psql does not
stop the primary: its window is the dump and restore (writes would have to be
stopped for it; the new server is started beforehand, outside the window).
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress

from docker.errors import NotFound
from docker.types import Mount
from psycopg import sql

from devtools.bench.harness import SUPERUSER, Harness
from toolkit.core.paths import OLD_ROOT, VOLUME
from toolkit.core.plan import pg_upgrade_locks
from toolkit.core.report import Report
from toolkit.db.inspect import cluster_facts
from toolkit.db.sql import Server
from toolkit.docker.target import DockerTarget
from toolkit.engine import runner as engine
from toolkit.engine.state import RunState

logger = logging.getLogger(__name__)

WRITER_TABLE = "pgleap_bench_writes"  # the logical method's writer; part of the replicated data


def _run(h: Harness, image: str, cmd: str, mounts: list[Mount], *, user: str, env: dict | None = None):
    """A one-shot container; returns (status, stdout, stderr, seconds). Removed after the timing."""
    c = h.rt.docker.containers.create(
        image, entrypoint=["bash", "-c", cmd], command=[], user=user, mounts=mounts, environment=env,
        labels=h.labels, name=h.name("run"),
    )  # fmt: skip
    t0 = time.monotonic()
    c.start()
    status = c.wait()["StatusCode"]
    seconds = time.monotonic() - t0
    out = c.logs(stdout=True, stderr=False).decode(errors="replace")
    err = c.logs(stdout=False, stderr=True).decode(errors="replace")
    c.remove(force=True, v=True)
    if status != 0:
        raise RuntimeError(f"{cmd[:60]}… failed ({status}): {err.strip()[-1500:]}")
    return out, err, seconds


def floor(h: Harness, golden: str, old: str, new: str, mount: str) -> dict:
    """Bare pg_upgrade --link by hand in the new image, old binaries and the new cluster ready beforehand."""
    vol = h.clone(golden, "floor")
    try:
        primary = h.start_server(old, vol, mount)
        target = DockerTarget(h.rt, container=primary)
        t = time.monotonic()
        plan, new_facts = engine.plan_upgrade(target, new, "link", Report(quiet=True))
        target.collect(plan)
        target.run_action(plan, "prepare")  # wrap old binaries + initdb: what one does by hand first
        old_data = f"{VOLUME}/{plan.layout.old_rel}".rstrip("/")
        staging = f"{VOLUME}/.pgleap/new-{plan.new_major}"
        mounts = [
            Mount(VOLUME, vol, type="volume"),
            Mount(OLD_ROOT, target.scratch_name(plan), type="volume"),
        ]
        user = f"{plan.uid}:{plan.gid}"
        _run(h, new, f"cp {old_data}/pg_hba.conf {staging}/", mounts, user=user)  # so clients can log in
        prepare = time.monotonic() - t
        bindir = new_facts.bindir
        # By hand one learns (after a failed run) to size the lock table for many tables: same as pgleap.
        locks = f" -o '-c max_locks_per_transaction={plan.max_locks}' -O '-c max_locks_per_transaction={plan.max_locks}'"
        cmd = (
            f". {OLD_ROOT}/collected.env && cd {VOLUME}/.pgleap/work && t0=$(date +%s.%N) && "
            f'{bindir}/pg_upgrade -b "$OLD_BINDIR" -B {bindir} -d {old_data} -D {staging} '
            f"-U {SUPERUSER} -j 2 --link{locks if plan.max_locks else ''} >&2 && "
            "awk -v a=$t0 -v b=$(date +%s.%N) 'BEGIN {printf \"%.3f\", b - a}'"
        )
        t0 = time.monotonic()
        h.rt.stop_container(primary)
        t1 = time.monotonic()
        out, _, container_seconds = _run(h, new, cmd, mounts, user=user)
        t2 = time.monotonic()
        server = h.name("floor-new")
        h.rt.docker.containers.run(
            new, ["-D", staging], entrypoint=[f"{bindir}/postgres"], user=user, name=server, detach=True,
            mounts=[Mount(VOLUME, vol, type="volume")], labels=h.labels,
        )  # fmt: skip
        h.rt.wait_accepting(server, SUPERUSER, h.password)
        t3 = time.monotonic()
        return {
            "downtime": t3 - t0,
            "stop": t1 - t0,
            "pg_upgrade": t2 - t1,
            "pg_upgrade_in_container": float(out.strip()),
            "start": t3 - t2,
            "prepared_before": prepare,
        }
    finally:
        h.drop(vol)


def pgleap(h: Harness, golden: str, old: str, new: str, mount: str, *, mode: str, downtime: str) -> dict:
    """The whole `pgleap upgrade docker --container …` run through the engine."""
    vol = h.clone(golden, f"pgleap-{mode}")
    try:
        primary = h.start_server(old, vol, mount)
        target = DockerTarget(h.rt, container=primary)
        state = RunState(target.key)
        t0 = time.monotonic()
        result = engine.upgrade(
            target, new, mode=mode, downtime=downtime, report=Report(quiet=True), state=state
        )
        whole = time.monotonic() - t0
        health = result.get("health") or []
        return {
            "downtime": result["downtime_seconds"],
            "whole_run": whole,
            "phases": [
                {"name": p["name"], "seconds": p["seconds"], "in_downtime": p["in_downtime"]}
                for p in result["phases"]
            ],
            "prepare_results": state.data.get("prepare_results", {}),
            "upgrade_results": state.data.get("upgrade_results", {}),
            "reindexed": len(result.get("reindexed", [])),
            "health_ok": bool(health) and all(r["ok"] for r in health),
            "fingerprint_identical": (
                result["fingerprint"]["before"] == result["fingerprint"]["after"]
                if "fingerprint" in result
                else None
            ),
        }
    finally:
        h.drop(vol)


def logical(h: Harness, golden: str, old: str, new: str, mount: str) -> dict:
    """`pgleap upgrade docker --strategy logical --verify-after` through the engine, with a bounded
    writer on the published port through the whole run: pgleap's own pause (writes refused on the
    old server -> the new one accepting after the hand-over), the writer's longest gap between two
    acknowledged writes (the pause a client sees), the whole run, and the second copy's disk. The
    old server starts with wal_level=logical (the one restart is the user's choice, not the pause)."""
    from devtools.writer import WRITES_TABLE, Writer, start, stop
    from toolkit.docker.logical import for_container
    from toolkit.engine import logical as strategy

    vol = h.clone(golden, "logical")
    primary = None
    try:
        primary = h.start_server(old, vol, mount, args=["-c", "wal_level=logical"], port=True)
        port = h.published_port(primary)
        local = Server("127.0.0.1", port, SUPERUSER, h.password, label="published port")
        with local.connect(SUPERUSER) as conn:
            conn.execute(sql.SQL(WRITES_TABLE).format(sql.Identifier(WRITER_TABLE)))
        side = for_container(h.rt, primary)
        state = RunState(f"docker-{side.source.volume.key}")
        # ~100 writes a second at most, bounded by count and time whatever happens to the run
        writer = Writer(port, SUPERUSER, h.password, table=WRITER_TABLE, notes=False, interval=0.01,
                        limit=500_000, seconds=3600)  # fmt: skip
        thread = start(writer)
        t0 = time.monotonic()
        try:
            result = strategy.upgrade(
                side,
                new,
                report=Report(quiet=True),
                state=state,
                replica_identity_full=True,
                verify_after=True,
                sync_timeout=7200,  # 5,000 tables under load outlast the default 15 min
            )
            whole = time.monotonic() - t0
            time.sleep(1.0)  # writes on the new server after the switch
        finally:
            stop(writer, thread)
        gap, _at = writer.longest_gap(after=t0)
        present = {
            n
            for (n,) in local.query(
                SUPERUSER, sql.SQL("SELECT n FROM {}").format(sql.Identifier(WRITER_TABLE))
            )
        }
        return {
            "downtime": result["pause_seconds"],
            "writer_pause": gap,
            "writer_writes": len(writer.acked),
            "writer_lost": len(set(writer.acked) - present),
            "writer_retries": writer.errors,
            "whole_run": whole,
            "extra_disk_mb": h.volume_mb(side.next_volume),
            "phases": result["phases"],
            "proof_rows": result["proof"].get("rows"),
        }
    finally:
        if primary:  # the logical strategy's containers and its second volume carry no bench label
            for suffix in ("", "-pgleap-next", "-pgleap-old", "-pgleap-blue", "-pgleap-green"):
                h.rt.remove(primary + suffix)
            h.rt.remove_volume(f"{vol}-pgleap-next")
            with suppress(NotFound):  # with published ports: pgleap's network
                h.rt.docker.networks.get(f"{primary}-pgleap-net").remove()
        h.drop(vol)


def naive(h: Harness, golden: str, old: str, new: str, mount: str, new_mount: str) -> dict:
    """pg_dumpall (new major's client) | psql into a fresh new-major server started beforehand."""
    vol = h.clone(golden, "naive")
    fresh = h.volume("fresh")
    try:
        primary = h.start_server(old, vol, mount)
        locks = pg_upgrade_locks(cluster_facts(h.server(primary)))
        if locks:  # pg_dump locks every table at once: the primary needs a bigger lock table (a restart)
            h.rt.stop_container(primary)
            h.rt.remove(primary)
            primary = h.start_server(old, vol, mount, args=["-c", f"max_locks_per_transaction={locks}"])
        target_server = h.start_server(new, fresh, new_mount, env={"POSTGRES_DB": "postgres"}, bare=True)
        src, dst = h.server(primary).host, h.server(target_server).host
        cmd = (
            # --no-role-passwords: a 13 cluster stores md5 hashes, a fresh 17 one authenticates with
            # scram-sha-256; the fresh server already has the superuser's password.
            f"set -o pipefail; pg_dumpall --no-role-passwords -h {src} -U {SUPERUSER} | "
            f"psql -X -q -h {dst} -U {SUPERUSER} -d postgres -o /dev/null 2>/tmp/err; rc=$?; "
            "grep -c ERROR /tmp/err || true; grep -v 'already exists' /tmp/err | tail -5 >&2; exit $rc"
        )
        out, err, seconds = _run(h, new, cmd, [], user="999:999", env={"PGPASSWORD": h.password})
        return {
            "downtime": seconds,
            "restore_errors": int(out.strip() or 0),
            "errors_sample": err.strip()[:500],
        }
    finally:
        h.drop(vol, fresh)


_TEXT_HASH = (
    "SELECT coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0) FROM ONLY {} AS t"
)


def proof(h: Harness, golden: str, old: str, mount: str) -> dict:
    """What the proof costs: every user table hashed as row text (the old fingerprint) and in
    the canonical forms (EWKB, fields, elements: toolkit/db/canonical.py), on the same
    running server, one after the other; seconds and seconds per GB of database."""
    from psycopg import sql

    from toolkit.db.canonical import table_hashes

    vol = h.clone(golden, "proof")
    try:
        server = h.server(h.start_server(old, vol, mount))
        with server.connect(SUPERUSER) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            tables = conn.execute(
                "SELECT c.oid::regclass::text, n.nspname, c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public'"
            ).fetchall()
            t0 = time.monotonic()
            for _, schema, name in tables:
                conn.execute(sql.SQL(_TEXT_HASH).format(sql.Identifier(schema, name))).fetchone()
            text = time.monotonic() - t0
            t0 = time.monotonic()
            table_hashes(conn, only={f"{schema}.{name}" for _, schema, name in tables})
            canonical = time.monotonic() - t0
        gb = size / 1024**3
        return {
            "downtime": canonical,  # the comparison after the extension updates is one canonical pass
            "text_seconds": text,
            "canonical_seconds": canonical,
            "canonical_per_gb": canonical / gb,
            "ratio": canonical / text if text else None,
            "database_gb": gb,
        }
    finally:
        h.drop(vol)
