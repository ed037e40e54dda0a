"""The way back: rollback, the automatic restore after a failed run, and the cleanup after either;
and the way on: finalize.

Decide first, then act. Every path back asks upgrade.sh's read-only `rollback-check`
(the one rule: the new cluster has run once its control data changed after
pg_upgrade) before it touches a container, so a refused rollback changes nothing.
In link mode a new cluster that has run makes rollback impossible; in copy/clone
mode it makes rollback drop what was written since, which the user must accept.

Rollback (and the automatic restore) and finalize are phase tables run by the one phase runner
(engine/phases.py), each recorded under its own key of the state file (`rollback`, `finalize`):
the upgrade's phases stay as they were, a run stopped half-way (killed, Ctrl-C,
`PGLEAP_FAIL=after-<phase>`) goes on after its last phase when the same command runs again,
and everything else is refused until it has (`refuse_under_way`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from toolkit.core.facts import parse_results
from toolkit.core.plan import UpgradePlan
from toolkit.core.report import Report
from toolkit.core.rollback import Verdict
from toolkit.engine.phases import FileStore, run_phases
from toolkit.engine.planning import plan_from_dict
from toolkit.engine.state import RunState
from toolkit.engine.target import Target
from toolkit.errors import PgleapError, Refused


def reap(target: Target, report: Report) -> None:
    """Helpers left by a pgleap that was killed (a frozen upgrade.sh, a temporary server still
    running on the volume) must be gone before anything else touches the volume: a second
    postmaster on the same PGDATA, in another container, is not stopped by postmaster.pid."""
    for name in target.reap_leftovers():
        report.say(f"  [yellow]removed[/] {name}, left running by an interrupted pgleap run")


def check(target: Target, plan: UpgradePlan) -> Verdict:
    return Verdict.from_output(target.run_action(plan, "rollback-check"))


def _refusal_hint(target: Target, plan: UpgradePlan, state: RunState) -> str:
    back = f"going back to PostgreSQL {plan.old_major} needs a backup or snapshot taken before the upgrade"
    if state.phase == "done":
        return (
            f"the upgraded database (PostgreSQL {plan.new_major}) is complete and keeps serving; {back}; "
            f"`{target.command('finalize')}` removes the old cluster once you are satisfied"
        )
    return (
        f"finish the upgrade with `{target.command('resume')}` (it goes on from phase {state.phase}); {back}"
    )


def _served_clients(state: RunState) -> bool:
    """Whether the new cluster was opened to clients (before that, only pgleap's own server wrote to it)."""
    return "started" in state.data.get("done_phases", []) or bool(state.data.get("switched_at"))


def loss_summary(verdict: Verdict, state: RunState) -> str:
    """What a copy/clone rollback drops: every write on the new cluster since it was opened to clients."""
    switched = state.data.get("switched_at")
    if switched:
        minutes = (time.time() - float(switched)) / 60
        since = (
            f"the upgraded database has served clients for {minutes:.0f} min (since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(float(switched)))})"
        )
    else:
        since = "the upgraded database has served clients"
    return (
        f"{since}; its last checkpoint moved {verdict.switch_checkpoint or '?'} (after pg_upgrade) -> "
        f"{verdict.now_checkpoint or '?'}: every write made on it since is lost by the rollback"
    )


# Where a rollback (or an automatic restore) and a finalize record their phases in the state file:
# a key each, beside the upgrade's `done_phases`, which stay as the upgrade left them.
ROLLBACK, FINALIZE = "rollback", "finalize"


def under_way(state: RunState) -> tuple[str, str] | None:
    """The rollback or finalize recorded as started and not finished: (its key, its last phase)."""
    for key in (ROLLBACK, FINALIZE):
        if state.data.get(key):
            return key, state.data[key].get("phase", "?")
    return None


def refuse_under_way(target: Target, state: RunState, *, allowed: str = "") -> None:
    """Anything but the same command again is refused while a rollback or finalize is half done."""
    found = under_way(state)
    if found is None or found[0] == allowed:
        return
    key, phase = found
    what = "the old cluster is being deleted" if key == FINALIZE else "the old cluster is being put back"
    raise Refused(
        f"a {key} of {target.key} is under way (phase {phase} recorded): {what}",
        f"finish it with `{target.command(key)}` (it goes on after phase {phase})",
    )


def rollback(
    target: Target,
    *,
    report: Report,
    state: RunState,
    confirm: Callable[[str], bool] | None = None,
    ask: Callable[[], None] | None = None,
) -> dict:
    """Bring the old cluster back on its old image; the new one is kept aside, not deleted.

    `confirm(loss)` is asked when the rollback would drop writes made on the new
    cluster (copy/clone after it ran); None means nobody can be asked: refused.
    `ask()` is called otherwise, once the rollback is known to be possible; it raises to refuse.
    A rollback stopped half-way goes on after its last recorded phase, without deciding again
    (upgrade.sh's rollback has moved files since: the check would no longer see the upgrade).
    """
    if not state.data.get("plan"):
        raise PgleapError(f"no upgrade recorded for {target.key}: nothing to roll back")
    refuse_under_way(target, state, allowed=ROLLBACK)
    plan = plan_from_dict(state.data["plan"])
    reap(target, report)
    store = FileStore(state, key=ROLLBACK)
    if store.data:
        report.say(f"resuming the rollback after phase [bold]{store.data.get('phase')}[/]")
    return _restore(target, plan, report, state, lambda: _decide(target, plan, report, state, confirm, ask))


def _decide(
    target: Target,
    plan: UpgradePlan,
    report: Report,
    state: RunState,
    confirm: Callable[[str], bool] | None,
    ask: Callable[[], None] | None,
) -> dict:
    """The phase `rollback-started`: upgrade.sh's verdict, then the operator's word; raises to refuse."""
    verdict = check(target, plan)
    if verdict.refusal:
        raise Refused(
            f"rollback is not possible, nothing was changed: {verdict.refusal}",
            _refusal_hint(target, plan, state),
        )
    if verdict.new_ran and _served_clients(state):
        loss = loss_summary(verdict, state)
        report.data["loses"] = loss
        if confirm is None:
            raise Refused(
                f"rollback would drop data, nothing was changed: {loss}",
                f"run again on a terminal to be asked, or add --yes to accept the loss: `{target.command('rollback')} --yes`",
            )
        if not confirm(loss):
            raise Refused("rollback not confirmed; nothing was changed")
        return {"operation": "rolled-back", "started_at": time.time(), "loses": loss}
    if ask is not None:
        ask()
    return {"operation": "rolled-back", "started_at": time.time()}


def auto_restore(target: Target, *, report: Report, state: RunState) -> dict | None:
    """After `engine.upgrade` failed: bring the old database back by itself when nothing is lost.

    Acts only when the run stopped the database, the new cluster never ran (the same
    check as rollback: before the point of no return in every mode) and a container
    can serve again. Returns the rollback's result, or None when it did nothing.
    Its phases are a rollback's: stopped half-way, `pgleap rollback` finishes it.
    """
    if not state.data.get("plan") or state.phase == "done" or under_way(state) or not target.stopped_by_run():
        return None
    plan = plan_from_dict(state.data["plan"])
    try:
        reap(target, report)
        verdict = check(target, plan)
    except PgleapError:
        return None  # the check itself failed: leave everything as it is for the operator
    if verdict.refusal or verdict.new_ran:
        return None
    report.say("[bold]restoring the old database[/] (the run failed before the point of no return)")
    return _restore(target, plan, report, state, lambda: {"operation": "restored", "started_at": time.time()})


def _restore(
    target: Target, plan: UpgradePlan, report: Report, state: RunState, decide: Callable[[], dict]
) -> dict:
    """The rollback's phase table (decided, new container out, old data back, each standby), then the
    state cleared down to `last_operation`."""

    def data() -> dict:
        with report.phase("restore the old cluster", "upgrade.sh rollback") as ph:
            out = target.restore_source(plan)
            ph.detail = f"{plan.layout.old_pgdata} on {plan.source_image}"
        return {"kept_new": dict(parse_results(out or "")).get("kept_new")}

    def replica(name: str) -> None:  # a no-op for an untouched standby
        with report.phase(f"restore standby {name}", "old data back, old image"):
            target.restore_replica(plan, name)

    store = FileStore(state, key=ROLLBACK)
    table = [
        ("rollback-started", decide),
        ("stopped-new", lambda: target.stop_new(plan)),
        ("restored-data", data),
        *[(f"restored-replica:{n}", lambda n=n: replica(n)) for n in state.data.get("replicas", [])],
    ]
    run_phases(table, store)
    status, kept = store.data.get("operation", "rolled-back"), store.data.get("kept_new")
    if store.data.get("loses"):
        report.data["loses"] = store.data["loses"]
    result = {**report.to_dict(), "status": status, "serving": target.describe().get("container") is not None}
    if kept:
        result["kept_new_cluster"] = target.volume_path(kept)
    result["cleanup"] = target.command("cleanup")
    last = {"operation": status, "at": time.time(), "plan": plan.to_dict(), "kept_new_cluster": kept}
    state.clear()
    state.save(last_operation=last)
    return result


def finalize(target: Target, *, report: Report, state: RunState) -> dict:
    """Delete the old cluster and pgleap's leftovers, once the new cluster is verified and running.
    A finalize stopped half-way goes on after its last recorded phase when run again."""
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
    refuse_under_way(target, state, allowed=FINALIZE)
    plan = plan_from_dict(state.data["plan"])
    store = FileStore(state, key=FINALIZE)
    if store.data:
        report.say(f"resuming the finalize after phase [bold]{store.data.get('phase')}[/]")

    def data() -> None:
        with report.phase("delete the old cluster", "upgrade.sh finalize"):
            target.run_action(plan, "finalize")

    def replica(name: str) -> None:
        with report.phase(f"finalize standby {name}", "its old data deleted"):
            target.finalize_replica(plan, name)

    def leftovers() -> None:
        with report.phase("remove pgleap's leftovers", "old container, scratch volume"):
            target.cleanup(plan)

    run_phases(
        [
            ("finalize-started", lambda: {"started_at": time.time()}),  # from here, no rollback
            ("finalized-data", data),
            *[(f"finalized-replica:{n}", lambda n=n: replica(n)) for n in state.data.get("replicas", [])],
            ("cleaned-up", leftovers),
        ],
        store,
    )
    state.clear()
    at = time.time()
    state.save(last_operation={"operation": "finalized", "at": at, "target_image": plan.target_image})
    return {**report.to_dict(), "status": "finalized", "finalized_at": at}


def cleanup(target: Target, *, report: Report, state: RunState) -> dict:
    """After a rollback: delete the kept new cluster and pgleap's working files and scratch volume."""
    refuse_under_way(target, state)
    if state.data.get("plan"):
        raise Refused(
            f"an upgrade of {target.key} is recorded (phase {state.phase}): cleanup is for after a rollback",
            f"finish it with `{target.command('resume')}` then `{target.command('finalize')}`, "
            f"or undo it with `{target.command('rollback')}`",
        )
    last = state.data.get("last_operation") or {}
    if not last.get("plan"):
        report.say("no rollback recorded: only pgleap's scratch volume (if any) is removed")
        target.cleanup_scratch()
        return {**report.to_dict(), "status": "nothing-recorded"}
    plan = plan_from_dict(last["plan"])
    with report.phase("delete the kept new cluster", "upgrade.sh cleanup") as ph:
        out = target.run_action(plan, "cleanup")
        target.cleanup(plan)
        ph.detail = (
            f"{dict(parse_results(out)).get('cleaned', '?')} kept new cluster(s); scratch volume removed"
        )
    state.clear()
    return {**report.to_dict(), "status": "cleaned"}
