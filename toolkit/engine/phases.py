"""The one phase runner both runtimes use, and the store protocol it records into.

An upgrade (or a rollback, a finalize) is an ordered table of `(phase, step)` pairs. The
runner skips the phases its store says are done, runs each other step, records its phase,
and only then offers the two places a run may stop between steps:
`faults.point("after-<phase>")` (test-only: PGLEAP_FAULT waits there to be killed,
PGLEAP_FAIL fails there) and the `checkpoint`, by default `interrupt.stop_if_requested`
(Ctrl-C/SIGTERM: stop here, the phase is recorded). So a crash or a stop anywhere leaves
the last finished phase recorded, and running the same table again resumes after it.

Where a phase is recorded is the store's business:
  - Docker: `FileStore`, the run-state file on the machine running pgleap
    (engine/state.py: `done_phases` and `phase`; a rollback's or finalize's under their own
    key, engine/undo.py, so the upgrade's stay);
  - Kubernetes: the state ConfigMap (kube/phase_store.py: `phase`, done by index in the
    operation's phase table).
A caller may run several short tables against one store (Docker's phases around its
new-cluster session); a phase is recorded once, whichever table runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from toolkit.core import interrupt
from toolkit.db import faults
from toolkit.engine.state import RunState

# A step does the phase's work; what it returns (if anything) is recorded with the phase.
Step = Callable[[], Mapping[str, Any] | None]


class PhaseStore(Protocol):
    """Where a runtime keeps how far a run got."""

    def done(self, phase: str) -> bool:
        """Was `phase` recorded by this run or an earlier, interrupted one?"""
        ...

    def record(self, phase: str, **extra: Any) -> None:
        """Record `phase` as done (with what its step returned), durably, before the next starts."""
        ...


def run_phases(
    table: Iterable[tuple[str, Step]],
    store: PhaseStore,
    *,
    seconds: Callable[[str, float], None] | None = None,
    checkpoint: Callable[[str], None] = interrupt.stop_if_requested,
    clock: Callable[[], float] = time.monotonic,
) -> list[str]:
    """Run the steps of `table` whose phase `store` has not recorded; returns the phases run.

    `seconds(phase, s)` gets each step's duration (by `clock`) before its phase is recorded,
    for the progress model. `checkpoint(phase)` runs after the phase is recorded and its
    fault point passed: the place an interrupted run stops (a runtime may name the next step
    there, or pass a no-op for an operation that must run to its end)."""
    ran: list[str] = []
    for phase, step in table:
        if store.done(phase):
            continue
        began = clock()
        extra = step() or {}
        if seconds is not None:
            seconds(phase, clock() - began)
        store.record(phase, **extra)
        ran.append(phase)
        faults.point(f"after-{phase}")
        checkpoint(phase)
    return ran


class FileStore:
    """The run-state file as a PhaseStore: `done_phases` lists every phase recorded, `phase`
    the last one; what a step returned is saved beside them.

    Without `key` these live at the top level of the document (the upgrade's: the format state
    files have always had, so earlier runs resume). With `key` (Docker's rollback, finalize)
    they live in the object under that key, so the upgrade's phases stay as they were and
    `status` can tell an upgrade stopped at a phase from a rollback under way after it."""

    def __init__(self, state: RunState, key: str | None = None) -> None:
        self.state, self.key = state, key

    @property
    def data(self) -> dict[str, Any]:
        """What this store recorded (empty before its first phase)."""
        if self.key is None:
            return self.state.data
        return self.state.data.get(self.key) or {}

    def done(self, phase: str) -> bool:
        return phase in self.data.get("done_phases", [])

    def record(self, phase: str, **extra: Any) -> None:
        done = list(self.data.get("done_phases", []))
        if phase not in done:
            done.append(phase)
        if self.key is None:
            self.state.save(phase=phase, done_phases=done, **extra)
        else:
            self.state.save(**{self.key: {**self.data, "phase": phase, "done_phases": done, **extra}})
