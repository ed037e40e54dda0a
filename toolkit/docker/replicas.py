"""Streaming replicas on Docker: find them, and re-seed each from the upgraded primary.

pg_upgrade upgrades one cluster; a standby of the old major cannot follow the new
primary (new system identifier). After the primary is upgraded and verified, each
standby is stopped, its old data moved aside on its own volume (kept until
finalize, put back by rollback), re-seeded with pg_basebackup from the new
primary (replication slot, -R so it starts as a standby) and started on the new
image. Reads on that standby are unavailable from its stop until it streams again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid

from toolkit.core.paths import VOLUME
from toolkit.core.plan import UpgradePlan
from toolkit.db.sql import Server
from toolkit.docker.refs import SourceContainer
from toolkit.docker.runtime import DockerRuntime, docker_layout
from toolkit.errors import PgleapError, Refused

logger = logging.getLogger(__name__)


def find_replicas(rt: DockerRuntime, primary: Server) -> list[str]:
    """Containers whose address streams from the primary (pg_stat_replication.client_addr)."""
    rows = primary.query(
        "postgres", "SELECT host(client_addr) FROM pg_stat_replication WHERE client_addr IS NOT NULL"
    )
    addresses = {r[0] for r in rows}
    found = []
    for container in rt.docker.containers.list():
        networks = container.attrs["NetworkSettings"].get("Networks") or {}
        if any(n.get("IPAddress") in addresses for n in networks.values()):
            found.append(container.name)
    return sorted(found)


def bare_plan(
    rt: DockerRuntime, source: SourceContainer, target_image: str, *, superuser: str, uid: int, gid: int
) -> UpgradePlan:
    """The few fields of an UpgradePlan a re-seed reads (majors, layout, owner, superuser), for a
    run that has no in-place plan (`--strategy logical`); the rest are neutral."""
    layout = docker_layout(rt, source.image, target_image, source.pgdata, source.mount)
    return UpgradePlan(
        source_image=source.image, target_image=target_image, old_major=rt.probe_image(source.image).major,
        new_major=rt.probe_image(target_image).major, old_version="", new_version="", mode="copy",
        layout=layout, superuser=superuser, uid=uid, gid=gid, initdb_args=(), checksums=False, data_kb=0,
        free_kb=0, extension_actions=(), glibc=("", ""), icu=("", ""), databases=(),
    )  # fmt: skip


def finalize(rt: DockerRuntime, plan: UpgradePlan, replica_name: str, scratch: str) -> None:
    """The old standby's data aside on its volume and its old container go (after a re-seed)."""
    old_name = f"{replica_name}-pgleap-old"
    if rt.exists(old_name):
        source = rt.source_container(old_name)
        rt.upgrade_action(replica_plan(rt, plan, source), source.volume, scratch, "finalize")
        rt.remove(old_name)


def slot_name(replica: str) -> str:
    return "pgleap_" + "".join(ch if ch.isalnum() else "_" for ch in replica.lower())[:50]


def replica_plan(rt: DockerRuntime, plan: UpgradePlan, replica: SourceContainer) -> UpgradePlan:
    """The primary's plan with the standby's own layout (its mount and PGDATA)."""
    layout = docker_layout(rt, replica.image, plan.target_image, replica.pgdata, replica.mount)
    return dataclasses.replace(plan, layout=layout)


def primary_host(rt: DockerRuntime, primary_name: str) -> tuple[str, str]:
    """(network, host) to reach the primary: its name on a user network (stable), else its IP."""
    attrs = rt.docker.containers.get(primary_name).attrs
    networks = attrs["NetworkSettings"].get("Networks") or {}
    for net in networks:
        if net not in ("bridge", "host", "none"):
            return net, primary_name
    net, info = next(iter(networks.items()))
    return net, info["IPAddress"]


def reseed(
    rt: DockerRuntime,
    plan: UpgradePlan,
    *,
    primary_name: str,
    primary: Server,
    replica_name: str,
    scratch: str,
    max_lag_bytes: int = 16 * 1024 * 1024,
    timeout: float = 600,
) -> dict:
    """Stop the standby, move its old data aside, pg_basebackup from the new primary, start it, wait for streaming."""
    old_name = f"{replica_name}-pgleap-old"
    holder = old_name if rt.exists(old_name) else replica_name
    source = rt.source_container(holder)
    source.name = replica_name
    rplan = replica_plan(rt, plan, source)
    t0 = time.monotonic()
    rt.stop_container(holder)
    slot = slot_name(replica_name)
    with primary.connect("postgres") as conn:
        if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone():
            conn.execute("SELECT pg_create_physical_replication_slot(%s)", (slot,))
    network, host = primary_host(rt, primary_name)
    staging = f"{VOLUME}/.pgleap/new-{plan.new_major}"
    script = (
        'set -euo pipefail; mkdir -p "$(dirname "$STAGING")"; rm -rf "$STAGING"; '
        'exec pg_basebackup -h "$PRIMARY" -p 5432 -U "$PGUSER" -D "$STAGING" -X stream -R -c fast '
        '-S "$SLOT" --no-password --progress'
    )
    env = {"STAGING": staging, "PRIMARY": host, "PGUSER": plan.superuser, "SLOT": slot}
    if source.password or primary.password:
        env["PGPASSWORD"] = primary.password or source.password  # env of the container, never argv
    logs = _run(rt, plan.target_image, ["bash", "-c", script], env, source, rplan, network)
    logger.info("pg_basebackup of %s: %s", replica_name, logs[-200:])
    rt.upgrade_action(rplan, source.volume, scratch, "place")
    if not rt.exists(old_name):
        rt.rename(replica_name, old_name)
    if not rt.exists(replica_name):
        rt.recreate(source, rplan, replica_name)
    rt.start(replica_name)
    lag = wait_streaming(primary, slot, max_lag_bytes=max_lag_bytes, timeout=timeout)
    return {
        "replica": replica_name,
        "slot": slot,
        "seconds": round(time.monotonic() - t0, 2),
        "lag_bytes": lag,
    }


def _run(
    rt: DockerRuntime,
    image: str,
    cmd: list[str],
    env: dict,
    source: SourceContainer,
    rplan: UpgradePlan,
    network: str,
) -> str:
    status, logs, _ = rt.run_to_exit(
        image, entrypoint=cmd[:1], command=cmd[1:], environment=env, user=f"{rplan.uid}:{rplan.gid}",
        mounts=[source.volume.mount(VOLUME)], network=network, labels={"org.pgleap.role": "basebackup"},
        name=f"pgleap-basebackup-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip
    if status != 0:
        hint = "the primary's pg_hba.conf needs a `host replication` line for this user and address"
        if "no pg_hba.conf entry" in logs:
            raise Refused(
                f"pg_basebackup from the new primary was refused: {logs.strip().splitlines()[-1]}", hint
            )
        raise PgleapError(f"pg_basebackup for {source.name} failed (exit {status})", logs.strip()[-1500:])
    return logs


def wait_streaming(primary: Server, slot: str, *, max_lag_bytes: int, timeout: float) -> int:
    """Until the standby on `slot` streams with replay lag below the threshold; returns the lag in bytes."""
    deadline = time.monotonic() + timeout
    query = (
        "SELECT r.state, pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint "
        "FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s"
    )
    while time.monotonic() < deadline:
        row = primary.query("postgres", query, (slot,))
        if row and row[0][0] == "streaming" and row[0][1] is not None and row[0][1] <= max_lag_bytes:
            return int(row[0][1])
        time.sleep(0.5)
    raise PgleapError(
        f"the standby on slot {slot} does not stream within {timeout:.0f} s", "check its container log"
    )


def restore(rt: DockerRuntime, plan: UpgradePlan, replica_name: str, scratch: str) -> None:
    """Rollback of one standby: the new one aside, the old one back on its old image (no-op if untouched)."""
    old_name = f"{replica_name}-pgleap-old"
    holder = old_name if rt.exists(old_name) else replica_name
    source = rt.source_container(holder)
    source.name = replica_name
    rplan = replica_plan(rt, plan, source)
    if holder == old_name:
        rt.remove(replica_name)
        rt.rename(old_name, replica_name)
    rt.stop_container(replica_name)
    rt.upgrade_action(rplan, source.volume, scratch, "rollback")
