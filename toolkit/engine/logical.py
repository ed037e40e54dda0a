"""The phase runner of `--strategy logical`: preflight -> build -> sync -> switch -> (rollback | finalize).

The old server serves until the switch; the switch is the only write pause. Each phase is
recorded in the same run state as an in-place upgrade (toolkit/engine/state.py, with
strategy "logical"), so `rollback` and `finalize` know where the run got to; a run stopped
before the switch is resumed by running the upgrade again (every step checks before it acts).
"""

from __future__ import annotations

import time
from typing import Protocol

from toolkit.core.logical_plan import LogicalPlan, plan_logical
from toolkit.core.report import Report
from toolkit.db import faults
from toolkit.db import logical as repl
from toolkit.db import logical_switch as switch
from toolkit.db.sql import Server
from toolkit.engine.logical_pause import (
    HANDING_OVER,
    finish_hand_over,
    forward_connections,
    reseed_standbys,
    slots,
    switch_over,
)
from toolkit.engine.state import RunState
from toolkit.errors import Refused

BEFORE_SWITCH = ("preflight", "built", "synced")
SYNC_TIMEOUT = 900.0  # seconds; a state recorded before the timeout was recorded means this


class LogicalSide(Protocol):
    """What a runtime provides (toolkit/docker/logical.py: LogicalDocker)."""

    name: str

    def server(self, name: str, label: str) -> Server: ...
    def ip(self, name: str) -> str: ...
    def target_major(self, image: str) -> int: ...
    def restart_old(self) -> None: ...
    def start_next(self, image: str) -> Server: ...
    def next_running(self) -> bool: ...
    def restart_next(self) -> None: ...
    def copy_schema(self, image: str, old_host: str, new_host: str, databases: list[str]) -> None: ...
    def hand_over(self, image: str) -> None: ...
    def after_hand_over(self) -> None: ...  # after the pause (Docker: the new NAME leaves pgleap's network)
    def start_blue(self) -> Server: ...
    def hand_back(self) -> None: ...
    def remove_next(self) -> None: ...
    def remove_old(self) -> None: ...
    def describe(self) -> dict: ...
    def command(self, verb: str) -> str: ...  # e.g. "pgleap rollback docker -c db", for hints
    # before the pause: what the hand-over can make ahead (nothing today on Docker or Kubernetes)
    def prepare_hand_over(self, image: str) -> None: ...
    # streaming standbys of the old primary: found at preflight, re-seeded from the new primary after
    # the switch, put back by rollback, their old data removed by finalize
    def find_standbys(self) -> list[str]: ...
    def reseed_standby(self, name: str, image: str) -> dict: ...
    def restore_standby(self, name: str, image: str) -> None: ...
    def finalize_standby(self, name: str, image: str) -> None: ...
    def remove_standby_scratch(self) -> None: ...

    @property
    def next_name(self) -> str: ...
    @property
    def blue_name(self) -> str: ...


def _refuse(plan: LogicalPlan) -> None:
    if plan.refusals:
        first = plan.refusals[0]
        more = "".join(f"\nalso refused: {r.message} ({r.hint})" for r in plan.refusals[1:])
        raise Refused(first.message, first.hint + more)


def plan(side: LogicalSide, image: str, **options) -> LogicalPlan:
    old = side.server(side.name, "old server")
    return plan_logical(
        repl.facts(old),
        source=side.name,
        target_image=image,
        target_major=side.target_major(image),
        standbys=side.find_standbys(),
        **options,
    )


def upgrade(
    side: LogicalSide,
    image: str,
    *,
    report: Report,
    state: RunState,
    restart_for_wal_level: bool = False,
    replica_identity_full: bool = False,
    verify_after: bool | None = None,
    dry_run: bool = False,
    drain: float = 2.0,
    sync_timeout: float | None = None,
) -> dict:
    """Build the new cluster beside the old one, synchronise it, switch. Returns the result.
    Without `sync_timeout` or `verify_after`, the run's recorded choice (a resume keeps the upgrade's)."""
    pending = [n for n in state.data.get("plan", {}).get("standbys", [])
               if n not in state.data.get("standbys_reseeded", [])]  # fmt: skip
    if state.phase == "switched" and state.data.get("strategy") == "logical" and pending:
        return {"strategy": "logical", "phase": "switched", "container": side.name,
                "standbys": reseed_standbys(side, state.data["target_image"], report=report, state=state)}  # fmt: skip
    if state.phase in ("switched",):
        raise Refused(
            f"{side.name} was already switched to the new cluster",
            f"`{side.command('finalize')}` keeps it, `{side.command('rollback')}` goes back",
        )
    if state.phase == HANDING_OVER and state.data.get("strategy") == "logical":
        return finish_hand_over(side, state.data["target_image"], report=report, state=state)
    if state.phase not in BEFORE_SWITCH or state.data.get("strategy") != "logical":
        options = {"restart_for_wal_level": restart_for_wal_level, "replica_identity_full": replica_identity_full,
                   "verify_after": bool(verify_after), "sync_timeout": sync_timeout or SYNC_TIMEOUT}  # fmt: skip
        planned = _preflight(side, image, report=report, state=state, dry_run=dry_run, **options)
        if planned is not None:
            return planned
    # where the proof runs is this run's choice: a switch retried after an abort may add or drop the flag
    if verify_after is None:  # a resume that names no choice (Kubernetes): the recorded one
        verify_after = not state.data.get("verify_in_pause", True)
    data = {**state.data["plan"], "verify_in_pause": not verify_after}
    old = side.server(side.name, "old server")
    if state.phase == "preflight":
        old = _build(side, image, old, data, report=report, state=state)  # a restart may change its address
    new = side.start_next(image) if not side.next_running() else side.server(side.next_name, "new server")
    _follow_old(side, old, new, data)  # a resumed run: the old container may have a new address
    if state.phase == "built":
        timeout = sync_timeout or float(state.data.get("sync_timeout") or SYNC_TIMEOUT)
        _sync(old, new, data, report=report, state=state, timeout=timeout)
    return switch_over(side, image, old, new, data, report=report, state=state, drain=drain)


def _preflight(side: LogicalSide, image: str, *, report: Report, state: RunState, dry_run: bool,
               sync_timeout: float, **options: bool) -> dict | None:  # fmt: skip
    """Plan and refuse before anything changes; record the plan and the choices a `resume` keeps
    (phase `preflight`). A dry run's result."""
    with report.phase("preflight", "wal_level, slots, replica identity, what is carried how"):
        the_plan = plan(side, image, **options)
    if dry_run:
        return {"strategy": "logical", "dry_run": True, "plan": the_plan.to_dict()}
    _refuse(the_plan)
    state.save(strategy="logical", phase="preflight", plan=the_plan.to_dict(), logical_source=side.describe(),
               target_image=image, started=time.time(), verify_in_pause=not options["verify_after"],
               sync_timeout=sync_timeout)  # fmt: skip
    faults.point("logical-preflight")
    return None


def _build(
    side: LogicalSide, image: str, old: Server, data: dict, *, report: Report, state: RunState
) -> Server:
    """The new cluster beside the old one: wal_level, roles, schema, publications, subscriptions
    (phase `built`); an interrupted build is discarded and made again from the start. Returns the
    old server as reached after a wal_level restart."""
    if old.query("postgres", "SHOW wal_level")[0][0] != "logical":  # not again after a crash
        with report.phase("restart for wal_level", "the old server restarts once"):
            repl.set_wal_level_logical(old)
            side.restart_old()
            old = side.server(side.name, "old server")
    repl.set_identity_full(old, data["identity_full"])
    with report.phase("build", "new volume and container, roles, schema, publications, subscriptions"):
        discard_copy(side, old, data)  # what an interrupted build left: built again from the start
        new = side.start_next(image)
        # the new server publishes too after the switch (reverse replication, for rollback)
        repl.set_wal_level_logical(new)
        side.restart_next()
        new = side.server(side.next_name, "new server")  # a restart may change the address
        repl.fresh_databases(old, new, data["databases"])
        catalog = repl.catalog_hash(old, data["databases"])  # before the dump: DDL from here on aborts
        side.copy_schema(image, side.ip(side.name), side.ip(side.next_name), data["databases"])
        for db in data["databases"]:
            repl.copy_extension_config(old, new, db)
        connections = forward_connections(side, old, data["replicated"])
        for db, tables in data["replicated"].items():
            repl.create_publication(old, db, tables)
            repl.create_subscription(
                new, db, repl.sub_name("fwd", db), connections[db], repl.PUBLICATION, copy_data=True
            )
    state.save(phase="built", catalog=catalog)
    return old


def _sync(old: Server, new: Server, data: dict, *, report: Report, state: RunState, timeout: float) -> None:
    """The initial copy of every table, then streaming until the new side has caught up (phase `synced`)."""
    faults.point("logical-built")  # the initial copy runs
    with report.phase("sync", "initial copy of every table, then streaming") as ph:
        seconds = switch.wait_synced(new, list(data["replicated"]), timeout, publisher=old)
        switch.wait_caught_up(old, slots(data, "fwd"), timeout)
        ph.detail = f"{len(data['replicated'])} subscription(s), copy took {seconds:.1f} s"
    state.save(phase="synced")
    faults.point("logical-synced")


def _follow_old(side: LogicalSide, old: Server, new: Server, data: dict) -> None:
    """The forward subscriptions (those not yet dropped) to the old server's address as it is now."""
    for db, info in forward_connections(side, old, data["replicated"]).items():
        repl.repoint_subscription(new, db, repl.sub_name("fwd", db), info)


def discard_copy(side: LogicalSide, old: Server, data: dict) -> None:
    """The new copy and its replication: subscriptions on the new side (while it runs), the old
    side's publications and slots, the new container and volume. Nothing of the old data."""
    if side.next_running():
        new = side.server(side.next_name, "new server")
        made = set(new.databases())
        for db in data["replicated"]:
            if db in made:
                repl.drop_subscription(new, db, repl.sub_name("fwd", db))
    for db in data["replicated"]:
        repl.drop_publication(old, db)
        repl.drop_slot(old, repl.sub_name("fwd", db))
    side.remove_next()
