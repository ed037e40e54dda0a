"""Ctrl-C and SIGTERM during `upgrade sts` / `resume sts`, as on Docker (toolkit/core/interrupt.py).

The first signal lets the step under way finish; once its phase is recorded in the state
ConfigMap (`checkpoint`, called by the runtime's `_set_phase`) the run stops. A second
signal stops at once (KeyboardInterrupt); a Job it was waiting for keeps running in the
cluster and the next `resume` adopts it. Before the point of no return the runtime's
automatic restore puts the old StatefulSet back. Either way the interruption is recorded
in the state ConfigMap and the command exits 130 naming which of resume and rollback is open.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from toolkit.core import interrupt
from toolkit.errors import PgleapError
from toolkit.kube import objects
from toolkit.kube.model import UPGRADE_PHASES, State

if TYPE_CHECKING:
    from toolkit.kube.runtime import KubeRuntime

T = TypeVar("T")
KEY = "interrupted"  # state ConfigMap key: {"during": ..., "at": ISO time}
# Phases after which the new cluster may have run: its StatefulSet exists on the new image, or
# (link mode, --downtime verified) the serve-new Job started it read-only for its fingerprint.
NEW_MAY_RUN = ("switched",)
NEW_MAY_RUN_VERIFIED_LINK = ("upgraded", "compared", "proved", "switched")
# What runs to reach each phase, for "interrupted during …" (in the runtime's order, model.UPGRADE_PHASES).
_WHAT = {
    "retention": "the PVC retention patch",
    "prepared": "the prepare Job (collect, initdb beside the running pod)",
    "replicas-stopped": "the stop of the standbys",
    "stopped": "the stop of the database",
    "snapshotted": "the VolumeSnapshot",
    "fingerprinted": "the fingerprint of the stopped old cluster (serve-old Job)",
    "upgraded": "the upgrade Job (pg_upgrade)",
    "compared": "the fingerprint of the new cluster (serve-new Job)",
    "proved": "the extension updates and the second fingerprint of the new cluster (serve-new Job)",
    "switched": "the switch to the new StatefulSet",
    "started": "the start of the new cluster",
    "verified": "the verification",
    "reseeded": "the re-seed of the standbys",
    "replicas-started": "the start of the standbys",
    "streaming": "the wait for the standbys to stream",
    "done": "the end of the upgrade",
}
STEPS = {phase: _WHAT[phase] for phase in UPGRADE_PHASES if phase != "recorded"}


def checkpoint(operation: str, phase: str) -> None:
    """After `phase` is recorded: stop here if asked, else name the next step for the messages."""
    if operation != "upgrade":  # a restore or rollback after the interruption runs to its end
        return
    interrupt.set_step(STEPS.get(phase, phase))
    interrupt.stop_if_requested(phase)
    order = list(STEPS)  # the upgrade's phases, in order
    nxt = order.index(phase) + 1 if phase in order[:-1] else None
    interrupt.set_step(STEPS[order[nxt]] if nxt else None)


def guarded(
    rt: KubeRuntime,
    namespace: str,
    name: str,
    run: Callable[[], T],
    *,
    prog: str = "pgleap",
    resume: bool = False,
) -> T:
    """`run` (an upgrade or a resume) with SIGINT/SIGTERM caught; exit 130 saying what is open."""
    if resume:
        clear(rt, namespace, name)
    during = "the upgrade (stopped at once)"
    try:
        with interrupt.guarded():
            try:
                return run()
            except KeyboardInterrupt:  # the second signal: the step under way was cut short
                during = f"{interrupt.current_step()} (stopped at once)"
                raise
    except (interrupt.Interrupted, KeyboardInterrupt) as exc:
        during = exc.during if isinstance(exc, interrupt.Interrupted) else during
        raise after(rt, namespace, name, during, prog=prog) from None


def clear(rt: KubeRuntime, namespace: str, name: str) -> None:
    """A resume: the recorded interruption is over."""
    cm = rt.kube.get("ConfigMap", namespace, objects.state_cm_name(name))
    if cm is not None and KEY in (cm.get("data") or {}):
        rt.kube.patch("ConfigMap", namespace, objects.state_cm_name(name), {"data": {KEY: None}})


def after(rt: KubeRuntime, namespace: str, name: str, during: str, *, prog: str = "pgleap") -> PgleapError:
    """Record the interruption and say which way on is open (exit 130)."""
    state = rt.read_state(namespace, name)
    cmd = f"{prog} {{}} sts {name} -n {namespace}"
    resume, rollback = f"`{cmd.format('resume')}`", f"`{cmd.format('rollback')}`"

    def stop(message: str, hint: str) -> PgleapError:
        return PgleapError(
            f"interrupted during {during}; {message}", hint, exit_code=interrupt.EXIT_INTERRUPTED
        )

    if state is None:
        return stop("nothing was changed", "run the upgrade again when ready")
    at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    rt.kube.patch(
        "ConfigMap",
        namespace,
        objects.state_cm_name(name),
        {"data": {KEY: json.dumps({"during": during, "at": at, "phase": state.phase})}},
    )
    if state.operation == "rollback" and state.phase == "rolled-back":
        return stop(
            f"the upgrade was undone: {namespace}/{name} serves again on its old image "
            f"({state.plan.core.old_image}, automatic restore)",
            f"run the upgrade again when ready (`{cmd.format('finalize')}` first clears pgleap's record)",
        )
    if state.operation == "rollback":
        return stop(
            f"the automatic restore stopped at phase {state.phase}",
            f"{resume} finishes the rollback",
        )
    phase, mode = state.phase, state.plan.core.mode
    recorded = "" if f"phase {phase} recorded" in during else f"phase {phase} recorded; "
    where, on = _where(state, recorded, resume, f"`{cmd.format('finalize')}`")
    possible = rollback_open(mode, state.operation, phase, state.plan.core.downtime)
    if possible is None and not recorded and phase == "upgraded":
        possible = True  # stopped right after recording it: the serve-new Job has not started
    return stop(where, _way_back(on, rollback, mode, possible, phase))


def _at(phase: str) -> tuple[int, tuple[str, ...]]:
    """How far `phase` is in the upgrade's order (past its end when it is not an upgrade phase)."""
    order = ("recorded", *STEPS)
    return (order.index(phase) if phase in order else len(order)), order


def _where(state: State, recorded: str, resume: str, finalize: str) -> tuple[str, str]:
    """Where the interrupted upgrade stands and the way on, by how far its phases got."""
    phase = state.phase
    at, order = _at(phase)
    if phase == "done":
        return "the upgrade itself is complete", f"{finalize} once you are satisfied"
    if at <= order.index("retention"):
        return "the database was not stopped and still serves", f"{resume} continues the upgrade"
    if at <= order.index("upgraded"):
        return f"{recorded}the new cluster has not started", f"{resume} continues the upgrade"
    started = (
        "may have started"
        if phase in _may_run(state.plan.core.mode, state.plan.core.downtime)
        else "has started"
    )
    return f"{recorded}the new cluster {started}", f"{resume} finishes the upgrade"


def _way_back(on: str, rollback: str, mode: str, possible: bool | None, phase: str) -> str:
    """The hint: the way on, then whether and at what cost `rollback` still brings the old
    cluster back."""
    at, order = _at(phase)
    if possible is False:
        why = (
            "swap mode: pg_upgrade --swap moved the old cluster's files"
            if mode == "swap"
            else "link mode: the new cluster has run on the old cluster's files"
        )
        return f"{on}; {rollback} is no longer possible ({why})"
    if possible is None:
        return f"{on}, or {rollback} if the new cluster has not run yet (it checks the volume first)"
    if at <= order.index("retention"):
        return f"{on}, or {rollback} drops pgleap's record of it"
    loss = (
        " (dropping the writes made on the new cluster since the switch; it asks first)"
        if at > order.index("upgraded")
        else ""
    )
    return f"{on}, or {rollback} brings the old cluster back{loss}"


def _may_run(mode: str, downtime: str) -> tuple[str, ...]:
    return NEW_MAY_RUN_VERIFIED_LINK if mode == "link" and downtime != "minimal" else NEW_MAY_RUN


def rollback_open(mode: str, operation: str, phase: str, downtime: str = "verified") -> bool | None:
    """Can `rollback sts` still bring the old cluster back? None: the volume decides (the new
    cluster may have started; rollback's check asks upgrade.sh first)."""
    if operation != "upgrade":
        return None if operation == "rollback" else False
    order = ("recorded", *STEPS)
    at = order.index(phase) if phase in order else len(order)
    if mode == "swap":
        return at < order.index("upgraded")  # pg_upgrade --swap moves the old cluster's files
    if mode != "link" or at < order.index("upgraded"):
        return True  # copy/clone: the old cluster is untouched (a rollback drops the new one's writes)
    if phase in _may_run(mode, downtime):
        return None
    return phase == "upgraded"  # minimal: nothing ran before the switch
