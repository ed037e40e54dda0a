"""The phase sequence of one upgrade, resumable, written against a target the runtime provides.

inspect -> plan -> collect -> stop -> fingerprint -> upgrade (pg_upgrade) -> verify
-> post-upgrade (extensions + trap repairs, collation reindex, statistics) -> prove
(fingerprint again, against the old cluster's) -> health -> start -> done.

With downtime="minimal" (toolkit/engine/minimal.py) the order is collect -> prepare
(initdb) -> stop -> pg_upgrade -> start -> post-upgrade -> health: only the
middle three happen while the database is down.

Each phase is recorded before the next starts; `resume` picks up at the first
phase not recorded as done. Every phase checks before it acts, so running one
twice is safe. The old cluster stays on the volume until `finalize`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict

from rich.markup import escape

from toolkit.core import interrupt
from toolkit.core.facts import ClusterFacts, DatabaseFacts, ImageFacts, parse_results
from toolkit.core.layout import Layout
from toolkit.core.plan import ExtensionAction, UpgradePlan, make_plan
from toolkit.core.report import Report, plural
from toolkit.db import faults, postupgrade, preflight, verify
from toolkit.db.inspect import inspect_sql
from toolkit.db.sql import Server
from toolkit.engine import minimal
from toolkit.engine.state import RunState
from toolkit.engine.target import Target
from toolkit.errors import PgleapError, Refused, VerificationFailed

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


def _reap(target: Target, report: Report) -> None:
    """Helpers left by a pgleap that was killed (a frozen upgrade.sh, a temporary server still
    running on the volume) must be gone before anything else touches the volume: a second
    postmaster on the same PGDATA, in another container, is not stopped by postmaster.pid."""
    for name in target.reap_leftovers():
        report.say(f"  [yellow]removed[/] {name}, left running by an interrupted pgleap run")


def point_of_no_return(plan: UpgradePlan) -> str | None:
    """The step after which the old cluster can no longer be brought back, or None (copy/clone)."""
    if plan.mode == "link":
        return "the first start of the new cluster (it writes to data files it shares with the old one)"
    if plan.mode == "swap":
        return "pg_upgrade --swap (it moves the old cluster's files into the new one)"
    return None


def _warn_no_return(plan: UpgradePlan, report: Report, when: str) -> None:
    report.data["point_of_no_return"] = point_of_no_return(plan)
    report.say(
        f"[bold yellow]point of no return[/]: {when}; from here on `pgleap rollback` cannot bring "
        f"the old cluster back ({plan.mode} mode): an interrupted run is finished with `pgleap resume`, "
        "and only a backup or snapshot brings back the old version"
    )


def _reached(state: RunState, phase: str) -> bool:
    done = state.data.get("done_phases", [])
    return phase in done


def _mark(state: RunState, phase: str, **extra) -> None:
    done = state.data.get("done_phases", [])
    if phase not in done:
        done.append(phase)
    state.save(phase=phase, done_phases=done, **extra)


def plan_upgrade(
    target: Target, target_image: str, mode: str, report: Report
) -> tuple[UpgradePlan, ImageFacts]:
    """Inspect both images, the data and the cluster; refuse early; return the plan."""
    with report.phase("inspect images", f"{target.source_image} -> {target_image}") as ph:
        old = target.probe_image(target.source_image)
        new = target.probe_image(target_image)
        ph.detail = f"PostgreSQL {old.version} -> {new.version}; glibc {old.glibc} -> {new.glibc}"
    with report.phase("inspect data directory") as ph:
        data = target.probe_data()
        ph.detail = f"{data.status}, state '{data.state}', {data.data_kb / 1024:.0f} MiB"
    layout = target.layout(target_image)
    # Refusals that need no server come first (nothing started, nothing changed).
    from toolkit.core.plan import check_data, check_mode, check_versions

    check_versions(old, new)
    check_data(data, old)
    check_mode(mode, new.major, data)
    target.check_writable(data)
    with report.phase("inspect cluster (SQL)") as ph:
        live = target.live_server()
        if live is not None:
            facts = inspect_sql(live, new, report)
            # The plan's own refusals (a target lacking an extension, shipping it older) name the
            # root cause; preflight's library check would only name its symptom (a missing .so).
            plan = make_plan(old=old, new=new, data=data, cluster=facts, layout=layout, mode=mode)
            preflight.run(live, old=old, new=new, data=data, mount=layout.old_mount, report=report)
        else:
            in_use = target.running_users()
            if in_use:
                raise Refused(
                    f"container {in_use[0]} is running on this volume",
                    f"stop it (docker stop {in_use[0]}), or give --container {in_use[0]} instead of --volume",
                )
            if not data.cleanly_shut_down:
                raise Refused(
                    f"the cluster was not shut down cleanly (state: {data.state})",
                    "start it once on its old image and stop it cleanly (docker start/stop), then run pgleap again",
                )
            with target.old_server(old, data, superuser="") as server:
                facts = inspect_sql(server, new, report)
                plan = make_plan(old=old, new=new, data=data, cluster=facts, layout=layout, mode=mode)
                preflight.run(server, old=old, new=new, data=data, mount=layout.old_mount, report=report)
        ph.detail = f"superuser {facts.superuser}, {len(facts.databases)} databases"
    return plan, new


def show_plan(plan: UpgradePlan, report: Report) -> None:
    report.result(
        f"[bold]Plan[/]: PostgreSQL {plan.old_version} -> {plan.new_version}, mode {plan.mode}\n"
        f"  images     {plan.source_image} -> {plan.target_image}\n"
        f"  PGDATA     {plan.layout.old_pgdata} (volume at {plan.layout.old_mount}) -> "
        f"{plan.layout.new_pgdata} (volume at {plan.layout.new_mount})\n"
        f"  initdb     --username={plan.superuser} {' '.join(plan.initdb_args)}\n"
        f"  rollback   {plan.rollback_note}\n"
        f"  downtime   about {plan.estimated_downtime_seconds():.0f} s (estimate)"
    )
    changes = [a for a in plan.extension_actions if a.action != "none"]
    for a in changes:
        report.result(
            f"  extension  {escape(a.database)}: {a.extension} {a.installed} -> {a.target} ({a.action})"
        )
    if plan.collation_libraries_changed:
        report.result(
            f"  collation  glibc {plan.glibc[0]} -> {plan.glibc[1]}, ICU {plan.icu[0] or '-'} -> "
            f"{plan.icu[1] or '-'}: dependent indexes are rebuilt"
        )
    for t in report.data.get("traps", []):
        report.result(
            f"  trap       {escape(t['database'])}: {escape(t['column'])} (~{t['rows']} rows) crosses {t['trap']}: "
            f"repaired in the extension update's transaction, then checked"
        )
    for w in plan.warnings:
        report.result(f"  [yellow]warning[/]    {escape(w)}")


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
    fail_after: str | None = None,
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
    if state.phase and state.phase != "done" and state.data.get("target_image") != target_image:
        raise Refused(
            f"an unfinished upgrade to {state.data.get('target_image')} is recorded for {target.key}",
            "run `pgleap resume` or `pgleap rollback` first",
        )
    if state.phase == "done":
        return _awaiting_finalize(target, target_image, report, state)
    _reap(target, report)
    if state.data.get("plan"):
        plan = plan_from_dict(state.data["plan"])
        new_bindir = state.data["new_bindir"]
        # A resumed run verifies as the first run chose: a "before" fingerprint can only be
        # taken before pg_upgrade touched the old cluster.
        verify_data = state.data.get("verify_data", verify_data)
        report.say(f"resuming after phase [bold]{state.phase}[/]")
    else:
        plan, new = plan_upgrade(target, target_image, mode, report)
        new_bindir = new.bindir
        show_plan(plan, report)
        report.data["plan"] = plan.to_dict()
        replicas = list(replicas) if replicas is not None else target.find_replicas()
        for name in replicas:
            report.say(
                f"  standby    {name}: re-seeded from the new primary once it is verified; its reads stop until then"
            )
        report.data["replicas_planned"] = replicas
        if dry_run:
            return {**report.to_dict(), "status": "dry-run"}
        if confirm is not None:
            confirm(plan)
        state.save(
            target_image=target_image, plan=plan.to_dict(), new_bindir=new_bindir, source=target.describe(),
            replicas=replicas, verify_data=verify_data, downtime=downtime,
            known_invalid_indexes=report.data.get("known_invalid_indexes", []),
        )  # fmt: skip
        _mark(state, "planned")
    report.data["plan"] = plan.to_dict()

    def checkpoint(phase: str, **extra) -> None:
        _mark(state, phase, **extra)
        if fail_after == phase:  # fault injection for tests: as if pgleap died here
            raise PgleapError(f"injected failure after phase {phase}")
        faults.point(f"after-{phase}")  # test-only (PGLEAP_FAULT): wait here to be killed
        interrupt.stop_if_requested(phase)  # Ctrl-C/SIGTERM: stop here, the phase is recorded

    if not _reached(state, "collected"):
        with report.phase("collect old binaries", "old image -> scratch volume"):
            target.collect(plan)
        checkpoint("collected")

    report.data["downtime_mode"] = downtime
    if downtime == "minimal":
        minimal.run(
            target,
            plan,
            report=report,
            state=state,
            reached=lambda p: _reached(state, p),
            checkpoint=checkpoint,
            accept=accept,
        )
        return _finish(target, plan, report, state, checkpoint)

    state.save(down_since=report.down(state.data.get("down_since")))  # a resume counts from the first stop
    if not _reached(state, "stopped"):
        with report.phase("stop the database", "clean shutdown"):
            target.stop_source()
            data = target.probe_data()
            if not data.cleanly_shut_down and data.pg_version == plan.old_major:
                target.start_source()
                raise Refused(
                    f"the cluster did not shut down cleanly (state: {data.state}); it was started again",
                    "check the container's log and stop timeout, then run again",
                )
        checkpoint("stopped")

    if verify_data and not _reached(state, "fingerprinted"):
        old = target.probe_image(plan.source_image)
        with report.phase("fingerprint before", "old cluster, read-only") as ph:
            with target.old_server(old, target.probe_data(), plan.superuser) as server:
                before = verify.fingerprint(server)
            ph.detail = _fp_detail(before)
        checkpoint("fingerprinted", fingerprint_before=asdict(before))

    if not _reached(state, "upgraded"):
        if plan.mode == "swap":
            _warn_no_return(plan, report, "pg_upgrade --swap starts now")
        with report.phase(
            f"pg_upgrade --{plan.mode}", f"PostgreSQL {plan.old_major} -> {plan.new_major}"
        ) as ph:
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
        checkpoint("upgraded", upgrade_results=results, commented_settings=commented)

    if plan.mode == "link" and not _reached(state, "verified"):
        _warn_no_return(plan, report, "the new cluster starts now")
    with target.new_server(plan, new_bindir) as server:
        if verify_data and not _reached(state, "verified"):
            with report.phase("fingerprint after", "before extension updates") as ph:
                after = verify.fingerprint(server)
                before = fingerprint_from_dict(state.data["fingerprint_before"])
                comparison = verify.compare(before, after)
                ph.detail = _fp_detail(after) + (" — identical" if comparison.identical else " — DIFFERENT")
            report.data["fingerprint"] = {"before": before.to_dict(), "after": after.to_dict()}
            if not comparison.identical:
                report.data["differences"] = comparison.differences
                if "fingerprint" not in accept:
                    raise VerificationFailed(
                        "the upgraded data differs from the old data: "
                        + "; ".join(comparison.differences[:10]),
                        _way_forward(plan, "fingerprint"),
                    )
                report.say("  [yellow]accepted[/] the differences above (--accept fingerprint)")
            checkpoint("verified")
        if not _reached(state, "post_upgraded"):
            done = postupgrade.run(
                server,
                report=report,
                libc_changed=plan.libc_changed,
                icu_changed=plan.icu_changed,
                analyze=lambda: target.analyze(server, plan),
            )
            checkpoint("post_upgraded", **done)
        if verify_data and not _reached(state, "proved"):
            _prove(server, plan, state, report, accept="fingerprint" in accept)
            checkpoint("proved")
        verify.run_health_checks(
            server,
            report,
            failure="health checks failed after the upgrade",
            hint=_way_forward(plan, "health"),
            known_invalid=state.data.get("known_invalid_indexes"),
            accept="health" in accept,
        )
        if fail_after == "health":
            raise PgleapError("injected failure after the health checks")

    if not _reached(state, "started"):
        with report.phase("start the upgraded database", plan.target_image):
            target.start_new(plan)
        checkpoint("started", switched_at=time.time())  # a copy/clone rollback says what it drops
    report.up(state.data.get("switched_at"))
    return _finish(target, plan, report, state, checkpoint)


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


def _prove(server: Server, plan: UpgradePlan, state: RunState, report: Report, *, accept: bool) -> None:
    """Compare the user data again after the extension updates and trap repairs: what an
    extension update did to stored values shows here, not in the comparison before it."""
    with report.phase("fingerprint after extensions", "against the old cluster, canonical forms") as ph:
        forms: dict[str, int] = {}
        after = verify.fingerprint(server, forms=forms)
        before = fingerprint_from_dict(state.data["fingerprint_before"])
        comparison = verify.compare(before, after, include_extension_tables=False)
        ph.detail = _fp_detail(after) + (" — identical" if comparison.identical else " — DIFFERENT")
    report.data["fingerprint_after_extensions"] = {
        "identical": comparison.identical,
        "forms": forms,
        "extension_tables_changed": comparison.extension_differences,
        "differences": comparison.differences,
    }
    for line in comparison.extension_differences:
        report.say(f"  [dim]extension-owned, changed by its update (not user data):[/] {escape(line)}")
    if comparison.identical:
        return
    if not accept:
        raise VerificationFailed(
            "user data reads differently after the extension updates: "
            + "; ".join(comparison.differences[:10]),
            _way_forward(plan, "fingerprint"),
        )
    report.say("  [yellow]accepted[/] the differences above (--accept fingerprint)")
    report.data["accepted"] = [*report.data.get("accepted", []), "fingerprint"]


def _way_forward(plan: UpgradePlan, check: str) -> str:
    """What the operator can do after a failed check: the database is not open to clients yet."""
    back = (
        "`pgleap rollback` brings the old cluster back"
        if plan.mode in ("copy", "clone")
        else "rollback is no longer possible (link/swap), restore a backup to go back"
    )
    return (
        f"nothing was opened to clients; read the differences, then either {back}, or start the "
        f"upgraded database as it is with `pgleap resume … --accept {check}`"
    )


def _finish(target: Target, plan: UpgradePlan, report: Report, state: RunState, checkpoint) -> dict:
    """After the primary serves again: re-seed the standbys, then record the run as done."""
    for name in state.data.get("replicas", []):
        if _reached(state, f"replica:{name}"):
            continue
        with report.phase(f"re-seed standby {name}", "pg_basebackup from the new primary") as ph:
            info = target.reseed_replica(plan, name)
            ph.detail = f"streaming (lag {info['lag_bytes']} B); its reads were down {info['seconds']:.1f} s"
        checkpoint(f"replica:{name}", **{f"replica_{name}": info})
        report.data.setdefault("replicas", []).append(info)
    _mark(state, "done", downtime_seconds=report.downtime)
    report.data["extensions_updated"] = state.data.get("extensions_updated", [])
    report.data["extensions_left"] = state.data.get("extensions_left", [])
    report.data["reindexed"] = state.data.get("reindexed", [])
    report.data["trap_repairs"] = state.data.get("trap_repairs", [])
    return {**report.to_dict(), "status": "upgraded"}


def finalize(target: Target, *, report: Report, state: RunState) -> dict:
    """Delete the old cluster and pgleap's leftovers, once the new cluster is verified and running."""
    if state.phase != "done":
        last = (state.data.get("last_operation") or {}).get("operation")
        if not state.phase and last == "finalized":
            raise Refused(f"nothing to finalize for {target.key}: it was finalized already")
        if not state.phase and last:  # after a rollback there is nothing to finalize, only to clean up
            raise Refused(
                f"nothing to finalize for {target.key}: the last operation was {last}",
                f"`{target.command('cleanup')}` deletes the kept new cluster and pgleap's scratch volume",
            )
        raise PgleapError(
            f"the upgrade of {target.key} is not complete (phase: {state.phase or 'none'})",
            "finish it with `pgleap resume` (or undo it with `pgleap rollback`) before finalizing",
        )
    plan = plan_from_dict(state.data["plan"])
    with report.phase("delete the old cluster", "upgrade.sh finalize"):
        target.run_action(plan, "finalize")
        for name in state.data.get("replicas", []):
            target.finalize_replica(plan, name)
        target.cleanup(plan)
    state.clear()
    at = time.time()
    state.save(last_operation={"operation": "finalized", "at": at, "target_image": plan.target_image})
    return {**report.to_dict(), "status": "finalized", "finalized_at": at}


def _fp_detail(fp: verify.Fingerprint) -> str:
    d = fp.to_dict()
    return f"{plural(d['tables'], 'table')}, {plural(d['rows'], 'row')} in {plural(len(d['databases']), 'database')}"


def plan_from_dict(data: dict) -> UpgradePlan:
    fields = {k: v for k, v in data.items() if k in UpgradePlan.__dataclass_fields__}
    fields["layout"] = Layout.from_dict(data["layout"])
    fields["initdb_args"] = tuple(data["initdb_args"])
    fields["extension_actions"] = tuple(ExtensionAction(**a) for a in data["extension_actions"])
    fields["glibc"] = tuple(data["glibc"])
    fields["icu"] = tuple(data["icu"])
    fields["databases"] = tuple(data["databases"])
    fields["warnings"] = tuple(data["warnings"])
    return UpgradePlan(**fields)


def fingerprint_from_dict(data: dict) -> verify.Fingerprint:
    def tuples(m: dict) -> dict:
        return {db: {k: tuple(v) for k, v in tables.items()} for db, tables in m.items()}

    return verify.Fingerprint(
        tables=tuples(data["tables"]),
        extension_tables=tuples(data["extension_tables"]),
        sequences=tuples(data["sequences"]),
        extensions=data["extensions"],
        roles=[tuple(r) for r in data["roles"]],
    )


__all__ = ["ClusterFacts", "DatabaseFacts", "finalize", "plan_upgrade", "upgrade"]
