"""The phase sequence of one upgrade, resumable, written against a target the runtime provides.

inspect -> plan -> collect -> stop -> fingerprint -> upgrade (pg_upgrade) -> verify
-> post-upgrade (extensions + trap repairs, collation reindex, statistics) -> prove
(fingerprint again, against the old cluster's) -> health -> start -> done.

With downtime="minimal" (toolkit/engine/minimal.py) the order is collect -> prepare
(initdb) -> stop -> pg_upgrade -> start -> post-upgrade -> health: only the
middle three happen while the database is down.

Each phase is recorded before the next starts (the one phase runner and its file
store, toolkit/engine/phases.py); `resume` picks up at the first phase not recorded
as done. Every phase checks before it acts, so running one
twice is safe. The old cluster stays on the volume until `finalize`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict

from toolkit.core.facts import parse_results
from toolkit.core.plan import UpgradePlan
from toolkit.core.report import Report
from toolkit.db import faults, postupgrade, verify
from toolkit.engine import minimal
from toolkit.engine.phases import FileStore, PhaseStore, run_phases
from toolkit.engine.planning import (
    plan_from_dict,
    plan_upgrade,
    point_of_no_return,
    show_plan,
    warn_no_return,
)
from toolkit.engine.proof import compare_after_upgrade, fingerprint_detail, prove, way_forward
from toolkit.engine.state import RunState
from toolkit.engine.target import Target
from toolkit.engine.undo import reap, refuse_under_way
from toolkit.errors import Refused

logger = logging.getLogger(__name__)

PHASES = (
    "planned",
    "collected",
    "prepared",  # --downtime minimal only: staging cluster made before the stop
    "stopped",
    "fingerprinted",
    "upgraded",
    "verified",
    "post_upgraded",
    "proved",  # the fingerprint again, after extension updates and trap repairs
    "started",
    "done",
)


def upgrade(
    target: Target,
    target_image: str,
    *,
    mode: str = "link",
    verify_data: bool = True,
    downtime: str = "verified",
    dry_run: bool = False,
    report: Report,
    state: RunState,
    replicas: list[str] | None = None,
    accept: tuple[str, ...] = (),
    confirm: Callable[[UpgradePlan], None] | None = None,
) -> dict:
    """Run (or resume) the whole upgrade; returns the JSON-able report.

    `confirm(plan)` is called once the plan is known, before anything changes; it raises to refuse.

    `accept`: verification failures the operator has read and accepts on a resume
    ("fingerprint", "health"): the run goes on and starts the upgraded database.

    `replicas`: standbys to re-seed after the primary (None: those found streaming from it).
    downtime="verified" (default) does everything while the database is stopped,
    data fingerprints included; "minimal" keeps only pg_upgrade and the restart
    inside the window (see toolkit/engine/minimal.py for what that gives up).
    """
    downtime = state.data.get("downtime", downtime)  # a resumed run keeps its choice
    minimal.check_supported(target, downtime)
    refuse_under_way(target, state)  # a rollback or finalize half done: only it may go on
    _refuse_another_target(target, target_image, state)
    if state.phase == "done":
        return _awaiting_finalize(target, target_image, report, state)
    reap(target, report)
    if state.data.get("plan"):
        plan = plan_from_dict(state.data["plan"])
        # A resumed run verifies as the first run chose: a "before" fingerprint can only be
        # taken before pg_upgrade touched the old cluster.
        verify_data = state.data.get("verify_data", verify_data)
        report.say(f"resuming after phase [bold]{state.phase}[/]")
    else:
        plan = _plan_and_record(
            target, target_image, mode=mode, verify_data=verify_data, downtime=downtime, dry_run=dry_run,
            report=report, state=state, replicas=replicas, confirm=confirm,
        )  # fmt: skip
        if plan is None:
            return {**report.to_dict(), "status": "dry-run"}
    report.data["plan"] = plan.to_dict()

    store = FileStore(state)  # each phase recorded, then its fault point and Ctrl-C stop (engine/phases.py)
    run_phases([("collected", lambda: _collect(target, plan, report))], store)

    report.data["downtime_mode"] = downtime
    if downtime == "minimal":
        minimal.run(target, plan, report=report, state=state, store=store, accept=accept)
        return _finish(target, plan, report, state, store)

    _verified_window(target, plan, report, state, store, verify_data=verify_data, accept=accept)
    return _finish(target, plan, report, state, store)


def _verified_window(
    target: Target,
    plan: UpgradePlan,
    report: Report,
    state: RunState,
    store: PhaseStore,
    *,
    verify_data: bool,
    accept: tuple[str, ...],
) -> None:
    """--downtime verified: stop through start, with everything the proof needs inside the window."""
    state.save(down_since=report.down(state.data.get("down_since")))  # a resume counts from the first stop
    before = [("fingerprinted", lambda: _fingerprint_before(target, plan, report))] if verify_data else []
    run_phases(
        [
            ("stopped", lambda: _stop(target, plan, report)),
            *before,
            ("upgraded", lambda: _pg_upgrade(target, plan, report)),
        ],
        store,
    )
    _on_the_new_cluster(target, plan, report, state, store, verify_data=verify_data, accept=accept)
    run_phases([("started", lambda: _start(target, plan, report))], store)
    report.up(state.data.get("switched_at"))


def _collect(target: Target, plan: UpgradePlan, report: Report) -> None:
    with report.phase("collect old binaries", "old image -> scratch volume"):
        target.collect(plan)


def _start(target: Target, plan: UpgradePlan, report: Report) -> dict:
    with report.phase("start the upgraded database", plan.target_image):
        target.start_new(plan)
    return {"switched_at": time.time()}  # a copy/clone rollback says what it drops


def _refuse_another_target(target: Target, target_image: str, state: RunState) -> None:
    if state.phase and state.phase != "done" and state.data.get("target_image") != target_image:
        raise Refused(
            f"an unfinished upgrade to {state.data.get('target_image')} is recorded for {target.key}",
            "run `pgleap resume` or `pgleap rollback` first",
        )


def _plan_and_record(
    target: Target,
    target_image: str,
    *,
    mode: str,
    verify_data: bool,
    downtime: str,
    dry_run: bool,
    report: Report,
    state: RunState,
    replicas: list[str] | None,
    confirm: Callable[[UpgradePlan], None] | None,
) -> UpgradePlan | None:
    """A new run: inspect and plan, show the plan, ask; then record it (phase `planned`).
    None for a dry run; nothing is recorded before `confirm` has returned."""
    plan, new = plan_upgrade(target, target_image, mode, report)
    show_plan(plan, report, downtime, verify_data)
    report.data["plan"] = plan.to_dict()
    replicas = list(replicas) if replicas is not None else target.find_replicas()
    for name in replicas:
        report.say(
            f"  standby    {name}: re-seeded from the new primary once it is verified; its reads stop until then"
        )
    report.data["replicas_planned"] = replicas
    if dry_run:
        return None
    if confirm is not None:
        confirm(plan)
    state.save(
        target_image=target_image, plan=plan.to_dict(), new_bindir=new.bindir, source=target.describe(),
        replicas=replicas, verify_data=verify_data, downtime=downtime,
        known_invalid_indexes=report.data.get("known_invalid_indexes", []),
    )  # fmt: skip
    FileStore(state).record("planned")
    return plan


def _stop(target: Target, plan: UpgradePlan, report: Report) -> None:
    """A clean shutdown, or the old database started again and a refusal."""
    with report.phase("stop the database", "clean shutdown"):
        target.stop_source()
        data = target.probe_data()
        if not data.cleanly_shut_down and data.pg_version == plan.old_major:
            target.start_source()
            raise Refused(
                f"the cluster did not shut down cleanly (state: {data.state}); it was started again",
                "check the container's log and stop timeout, then run again",
            )


def _fingerprint_before(target: Target, plan: UpgradePlan, report: Report) -> dict:
    old = target.probe_image(plan.source_image)
    with report.phase("fingerprint before", "old cluster, read-only") as ph:
        with target.old_server(old, target.probe_data(), plan.superuser) as server:
            before = verify.fingerprint(server)
        ph.detail = fingerprint_detail(before)
    return {"fingerprint_before": asdict(before)}


def _pg_upgrade(target: Target, plan: UpgradePlan, report: Report) -> dict:
    if plan.mode == "swap":
        warn_no_return(plan, report, "pg_upgrade --swap starts now")
    with report.phase(f"pg_upgrade --{plan.mode}", f"PostgreSQL {plan.old_major} -> {plan.new_major}") as ph:
        out = target.run_action(plan, "upgrade")
        results = dict(parse_results(out))
        ph.detail = (
            f"pg_upgrade {results.get('pg_upgrade_seconds', '?')} s; new PGDATA {plan.layout.new_pgdata}"
        )
        commented = [v for k, v in parse_results(out) if k == "commented"]
        if commented:
            report.say(
                f"  [yellow]settings commented out[/] (unknown to {plan.new_major}): {', '.join(commented)}"
            )
    return {"upgrade_results": results, "commented_settings": commented}


def _on_the_new_cluster(
    target: Target,
    plan: UpgradePlan,
    report: Report,
    state: RunState,
    store: PhaseStore,
    *,
    verify_data: bool,
    accept: tuple[str, ...],
) -> None:
    """On pgleap's own server of the new cluster, before clients: compare, update and repair, prove, check."""
    if plan.mode == "link" and not store.done("verified"):
        warn_no_return(plan, report, "the new cluster starts now")
    fingerprint = "fingerprint" in accept
    with target.new_server(plan, state.data["new_bindir"]) as server:
        post = ("post_upgraded", lambda: _post_upgrade(target, plan, report, server))
        table = [
            ("verified", lambda: compare_after_upgrade(server, plan, state, report, accept=fingerprint)),
            post,
            ("proved", lambda: prove(server, plan, state, report, accept=fingerprint)),
        ]
        run_phases(table if verify_data else [post], store)
        verify.run_health_checks(
            server,
            report,
            failure="health checks failed after the upgrade",
            hint=way_forward(plan, "health"),
            known_invalid=state.data.get("known_invalid_indexes"),
            accept="health" in accept,
        )
        faults.point("after-health")  # test-only, as the checkpoints


def _post_upgrade(target: Target, plan: UpgradePlan, report: Report, server) -> dict:
    return postupgrade.run(
        server,
        report=report,
        libc_changed=plan.core.libc_changed,
        icu_changed=plan.core.icu_changed,
        analyze=lambda: target.analyze(server, plan),
    )


def _awaiting_finalize(target: Target, target_image: str, report: Report, state: RunState) -> dict:
    """An earlier upgrade is complete and not finalized: say so; another target is refused."""
    recorded = state.data.get("target_image")
    plan = plan_from_dict(state.data["plan"])
    back = (
        f"`{target.command('rollback')}` brings PostgreSQL {plan.old_major} back (dropping what was written since)"
        if point_of_no_return(plan) is None
        else f"no rollback ({plan.mode} mode, past the point of no return)"
    )
    if recorded != target_image:
        raise Refused(
            f"an upgrade of {target.key} to {recorded} (PostgreSQL {plan.new_major}) is complete and awaits "
            f"finalize; upgrading to {target_image} has to wait",
            f"`{target.command('finalize')}` removes the old cluster, then run the upgrade to {target_image}; {back}",
        )
    report.say(
        f"already upgraded to {recorded}; it awaits finalize: `{target.command('finalize')}` removes the "
        f"old cluster; {back}"
    )
    return {**report.to_dict(), "status": "already-done", "awaits": "finalize", "target_image": recorded}


def _finish(target: Target, plan: UpgradePlan, report: Report, state: RunState, store: PhaseStore) -> dict:
    """After the primary serves again: re-seed the standbys, then record the run as done."""

    def reseed(name: str) -> dict:
        with report.phase(f"re-seed standby {name}", "pg_basebackup from the new primary") as ph:
            info = target.reseed_replica(plan, name)
            ph.detail = f"streaming (lag {info['lag_bytes']} B); its reads were down {info['seconds']:.1f} s"
        report.data.setdefault("replicas", []).append(info)
        return {f"replica_{name}": info}

    run_phases(
        [(f"replica:{n}", lambda n=n: reseed(n)) for n in state.data.get("replicas", [])], store
    )  # fmt: skip
    store.record("done", downtime_seconds=report.downtime)  # the end: no stop point after it
    report.data["extensions_updated"] = state.data.get("extensions_updated", [])
    report.data["extensions_left"] = state.data.get("extensions_left", [])
    report.data["reindexed"] = state.data.get("reindexed", [])
    report.data["trap_repairs"] = state.data.get("trap_repairs", [])
    return {**report.to_dict(), "status": "upgraded"}
