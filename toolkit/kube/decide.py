"""Kubernetes rollback decides first: upgrade.sh's read-only `rollback-check` before any change.

The same rule as Docker (toolkit/engine/undo.py): the new cluster "has run" once its control
data changed after pg_upgrade. With --link a new cluster that has run shares the old
cluster's files, so rollback is refused; with copy/clone it drops every write made on
the new cluster since, which the user must accept. The check runs as a short Job on
the data volume (pinned to the node of the running pod: RWO) and is deleted after;
the StatefulSet, its pods and the recorded phase are not touched until it says yes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from toolkit.core.rollback import Verdict
from toolkit.errors import PgleapError, Refused
from toolkit.kube import objects, render

if TYPE_CHECKING:
    from toolkit.kube.model import Outcome, State
    from toolkit.kube.plan import KubePlan
    from toolkit.kube.runtime import KubeRuntime

CHECK_ACTION = "rollback-check"


def pin_to_pod(rt: KubeRuntime, plan: KubePlan, pod: str) -> tuple[dict[str, Any], ...] | None:
    """nodeSelectorTerms for the node of a running pod (RWO: a Job shares its node to mount)."""
    found = rt.kube.get("Pod", plan.namespace, pod)
    node = ((found or {}).get("spec") or {}).get("nodeName")
    if not node:
        return None
    return ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]},)


def run_check(
    rt: KubeRuntime, plan: KubePlan, original: dict[str, Any], scripts: Any, out: Outcome
) -> Verdict:
    """Run the check Job to its end and read its verdict; the Job is deleted after."""
    name = objects.job_name(plan.sts, CHECK_ACTION)
    ns = plan.namespace

    def gone() -> bool | None:
        return True if rt.kube.get("Job", ns, name) is None else None

    if rt.kube.delete("Job", ns, name, propagation="Background"):  # a verdict of an earlier attempt
        rt.kube.wait(f"old Job {name} to be gone", gone, timeout=rt.t.delete, interval=rt.t.poll)
    rt.ensure_scripts(plan, scripts, out)
    pin = pin_to_pod(rt, plan, f"{plan.sts}-0")
    rt.kube.create(render.upgrade_job(plan, original, CHECK_ACTION, node_terms=pin))
    lines: list[str] = []
    try:
        rt._follow_job(plan, name, ("upgrade",), sink=lines)
        job = rt.kube.get("Job", ns, name) or {}
        conditions = (job.get("status") or {}).get("conditions") or []
        ok = any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)
    finally:
        rt.kube.delete("Job", ns, name, propagation="Background")
    if not ok:
        raise PgleapError(
            f"the rollback check Job {name} failed: nothing was changed",
            f"read its log above; fix the cause and run `pgleap rollback sts {plan.sts}` again",
        )
    return Verdict.from_output("\n".join(lines))


def decide(
    rt: KubeRuntime,
    state: State,
    scripts: Any,
    out: Outcome,
    confirm: Callable[[str], bool] | None,
) -> None:
    """Refused (exit 3) before any change when the volume says no or the loss is not accepted."""
    plan = state.plan
    upgrade_job = objects.job_name(plan.sts, "upgrade")
    job = rt.kube.get("Job", plan.namespace, upgrade_job)
    if job is None:
        out.unchanged.append("the upgrade Job never ran: nothing on the volume to check")
        return
    if not (job.get("status") or {}).get("conditions"):
        rt.log("waiting for the running upgrade Job to end before deciding")
        rt._follow_job(plan, upgrade_job)
    verdict = run_check(rt, plan, state.original, scripts, out)
    if verdict.refusal:
        raise Refused(
            f"rollback is not possible, nothing was changed: {verdict.refusal}",
            f"the upgraded database (PostgreSQL {plan.core.new_major}) keeps serving; going back to PostgreSQL "
            f"{plan.core.old_major} needs a backup or a snapshot taken before the upgrade"
            + (f" (VolumeSnapshot {plan.snapshot})" if plan.snapshot else "")
            + (f"; `pgleap resume sts {plan.sts}` finishes the upgrade" if state.phase != "done" else ""),
        )
    if verdict.new_ran:
        loss = (
            f"the upgraded database has run (state: {verdict.new_state or '?'}; checkpoint "
            f"{verdict.switch_checkpoint or '?'} after pg_upgrade, {verdict.now_checkpoint or '?'} now): "
            f"every write made on it since is lost by the rollback ({plan.core.mode} mode keeps the old data as it was)"
        )
        if confirm is None:
            raise Refused(
                f"rollback would drop data, nothing was changed: {loss}",
                f"run again on a terminal to be asked, or add --yes to accept the loss: "
                f"`pgleap rollback sts {plan.sts} -n {plan.namespace} --yes`",
            )
        if not confirm(loss):
            raise Refused("rollback not confirmed; nothing was changed", "")
        out.notes.append(f"accepted: {loss}")
    else:
        out.unchanged.append("rollback check: the new cluster never ran, nothing is lost")
