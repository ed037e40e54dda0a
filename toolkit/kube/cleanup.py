"""`pgleap cleanup sts NAME`: after a rollback (or a finalize), remove what pgleap kept.

As `cleanup docker`: a rollback keeps the new cluster on the volume (upgrade.sh's
`.pgleap/failed-new-*`) and leaves pgleap's Jobs and ConfigMaps; finalize after a
rollback removes the latter only. `upgrade.sh cleanup` runs as a Job on the data volume
(pinned to the running pod's node: RWO) and refuses by itself while its markers say an
upgrade is under way or done. A recorded upgrade, an unfinished rollback or a finalize
under way is refused first, nothing changed. The VolumeSnapshot, if any, is the user's
backup: it is named, not deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from toolkit.core.facts import parse_results
from toolkit.errors import PgleapError, Refused
from toolkit.kube import decide as kube_decide
from toolkit.kube import history, objects, render
from toolkit.kube.model import Outcome

if TYPE_CHECKING:
    from toolkit.kube.plan import KubePlan
    from toolkit.kube.runtime import KubeRuntime

ACTION = "cleanup"


def refusal(rt: KubeRuntime, namespace: str, name: str) -> PgleapError | None:
    """Why cleanup must not run now (read-only), or None."""
    state = rt.read_state(namespace, name)
    if state is None or (state.operation == "rollback" and state.phase == "rolled-back"):
        return None
    cmd = f"pgleap {{}} sts {name} -n {namespace}"
    if state.operation == "upgrade":
        return Refused(
            f"an upgrade of {namespace}/{name} is recorded (phase {state.phase}): cleanup is for after a "
            "rollback or a finalize",
            f"finish it with `{cmd.format('resume')}` then `{cmd.format('finalize')}`, or undo it with "
            f"`{cmd.format('rollback')}`",
        )
    return Refused(
        f"a {state.operation} of {namespace}/{name} stopped at phase {state.phase}",
        f"finish it with `{cmd.format('resume')}` first",
    )


def what(rt: KubeRuntime, namespace: str, name: str) -> str:
    """The one-line summary for the confirmation."""
    plan = _plan(rt, namespace, name)
    if plan is None:
        return f"clean up {namespace}/{name}: nothing recorded, nothing to delete"
    return (
        f"clean up {namespace}/{name}: delete the new cluster kept on PVC {plan.data_pvc} (if any) and "
        "pgleap's Jobs and ConfigMaps"
    )


def _plan(rt: KubeRuntime, namespace: str, name: str) -> KubePlan | None:
    state = rt.read_state(namespace, name)
    if state is not None:
        return state.plan
    last = history.read(rt.kube, namespace, name)
    return history.plan_of(last) if last else None


def cleanup(rt: KubeRuntime, namespace: str, name: str, *, scripts: Mapping[str, str]) -> Outcome:
    """Delete the kept new cluster (after a rollback) and pgleap's Jobs and ConfigMaps."""
    refused = refusal(rt, namespace, name)
    if refused is not None:
        raise refused
    out = Outcome(ACTION, "cleaned")
    plan = _plan(rt, namespace, name)
    if plan is None:
        out.unchanged.append(f"nothing recorded for {namespace}/{name}: nothing to clean up")
        return out
    last = history.read(rt.kube, namespace, name) or {}
    rolled_back = rt.read_state(namespace, name) is not None or "rollback" in (
        last.get("operation"),
        last.get("after"),  # a finalize after a rollback
    )

    def run() -> Outcome:
        if rolled_back:
            _clean_volume(rt, plan, scripts, out)
        else:
            out.unchanged.append(
                f"the last operation was {last.get('operation')}: nothing kept on the volume"
            )
        rt._cleanup(plan, out)
        history.record(
            rt.kube, plan, last.get("operation") or "rollback", last.get("phase") or "rolled-back",
            **{"cleaned-at": history.now()},
        )  # fmt: skip
        if plan.snapshot:
            out.notes.append(
                f"VolumeSnapshot {plan.snapshot} kept (your backup): delete it when no longer needed"
            )
        return out

    return rt._held(namespace, name, ACTION, run)


def _clean_volume(rt: KubeRuntime, plan: KubePlan, scripts: Mapping[str, str], out: Outcome) -> None:
    """upgrade.sh cleanup on the data volume, next to the running old cluster (same node)."""
    live = rt.kube.get("StatefulSet", plan.namespace, plan.sts)
    if live is None:
        raise Refused(
            f"StatefulSet {plan.namespace}/{plan.sts} is gone: the volume cannot be cleaned beside it",
            "re-create it (or roll back) first",
        )
    name = objects.job_name(plan.sts, ACTION)
    if rt.kube.delete("Job", plan.namespace, name, propagation="Background"):
        rt.kube.wait(
            f"old Job {name} to be gone",
            lambda: True if rt.kube.get("Job", plan.namespace, name) is None else None,
            timeout=rt.t.delete,
            interval=rt.t.poll,
        )
    rt.ensure_scripts(plan, scripts, out)
    pin = kube_decide.pin_to_pod(rt, plan, f"{plan.sts}-0")
    rt.kube.create(render.upgrade_job(plan, objects.clean_object(live), ACTION, node_terms=pin))
    lines: list[str] = []
    rt._follow_job(plan, name, ("upgrade",), sink=lines)
    job = rt.kube.get("Job", plan.namespace, name) or {}
    conditions = (job.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions):
        raise PgleapError(
            f"the cleanup Job {name} failed: the old cluster is untouched",
            f"read `kubectl -n {plan.namespace} logs job/{name} --all-containers`",
        )
    rt.kube.delete("Job", plan.namespace, name, propagation="Background")
    cleaned = dict(parse_results("\n".join(lines))).get("cleaned", "?")
    out.changed.append(f"deleted the kept new cluster(s) on PVC {plan.data_pvc} ({cleaned})")
