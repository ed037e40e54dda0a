"""The way back: rollback, the automatic restore after a failed run, and the cleanup after either.

Decide first, then act. Every path back asks upgrade.sh's read-only `rollback-check`
(the one rule: the new cluster has run once its control data changed after
pg_upgrade) before it touches a container, so a refused rollback changes nothing.
In link mode a new cluster that has run makes rollback impossible; in copy/clone
mode it makes rollback drop what was written since, which the user must accept.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from toolkit.core.facts import parse_results
from toolkit.core.plan import UpgradePlan
from toolkit.core.report import Report
from toolkit.core.rollback import Verdict
from toolkit.engine.planning import plan_from_dict
from toolkit.engine.runner import _reap
from toolkit.engine.state import RunState
from toolkit.engine.target import Target
from toolkit.errors import PgleapError, Refused


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
    """
    if not state.data.get("plan"):
        raise PgleapError(f"no upgrade recorded for {target.key}: nothing to roll back")
    plan = plan_from_dict(state.data["plan"])
    _reap(target, report)
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
    elif ask is not None:
        ask()
    return _restore(target, plan, report, state, "rolled-back")


def auto_restore(target: Target, *, report: Report, state: RunState) -> dict | None:
    """After `engine.upgrade` failed: bring the old database back by itself when nothing is lost.

    Acts only when the run stopped the database, the new cluster never ran (the same
    check as rollback: before the point of no return in every mode) and a container
    can serve again. Returns the rollback's result, or None when it did nothing.
    """
    if not state.data.get("plan") or state.phase == "done" or not target.stopped_by_run():
        return None
    plan = plan_from_dict(state.data["plan"])
    try:
        _reap(target, report)
        verdict = check(target, plan)
    except PgleapError:
        return None  # the check itself failed: leave everything as it is for the operator
    if verdict.refusal or verdict.new_ran:
        return None
    report.say("[bold]restoring the old database[/] (the run failed before the point of no return)")
    return _restore(target, plan, report, state, "restored")


def _restore(target: Target, plan: UpgradePlan, report: Report, state: RunState, status: str) -> dict:
    with report.phase("restore the old cluster", "upgrade.sh rollback") as ph:
        out = target.restore_source(plan)
        ph.detail = f"{plan.layout.old_pgdata} on {plan.source_image}"
    for name in state.data.get("replicas", []):  # each restore is a no-op for an untouched standby
        with report.phase(f"restore standby {name}", "old data back, old image"):
            target.restore_replica(plan, name)
    kept = dict(parse_results(out or "")).get("kept_new")
    result = {**report.to_dict(), "status": status, "serving": target.describe().get("container") is not None}
    if kept:
        result["kept_new_cluster"] = target.volume_path(kept)
    result["cleanup"] = target.command("cleanup")
    last = {"operation": status, "at": time.time(), "plan": plan.to_dict(), "kept_new_cluster": kept}
    state.clear()
    state.save(last_operation=last)
    return result


def cleanup(target: Target, *, report: Report, state: RunState) -> dict:
    """After a rollback: delete the kept new cluster and pgleap's working files and scratch volume."""
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
