"""The state ConfigMap as the engine's PhaseStore (toolkit/engine/phases.py).

The ConfigMap keeps only the last phase reached, with its operation and the time
(`operation`, `phase`, `updated`: the keys it has always had, so runs recorded by earlier
versions resume). A phase is done when it comes at or before that one in the operation's
phase table (model.UPGRADE_PHASES, ROLLBACK_PHASES, FINALIZE_PHASES): resume by index.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from toolkit.kube import objects
from toolkit.kube.api import Kube


def write_phase(kube: Kube, namespace: str, sts: str, operation: str, phase: str) -> None:
    """Record `phase` of `operation` in the state ConfigMap of StatefulSet `sts`."""
    kube.patch(
        "ConfigMap",
        namespace,
        objects.state_cm_name(sts),
        {
            "data": {
                "operation": operation,
                "phase": phase,
                "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        },
    )


class ConfigMapStore:
    """Phases of one operation, recorded in the state ConfigMap; `reached` is the phase read
    from it when the run (or the resume) began. `on_record(phase)` runs after each write (the
    runtime's Outcome and log)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        sts: str,
        operation: str,
        phases: Sequence[str],
        reached: str,
        *,
        on_record: Callable[[str], None] = lambda phase: None,
    ) -> None:
        self.kube, self.namespace, self.sts, self.operation = kube, namespace, sts, operation
        self.phases, self.reached, self.on_record = tuple(phases), reached, on_record
        self.phases.index(reached)  # ValueError: a phase this operation does not have

    def done(self, phase: str) -> bool:
        return self.phases.index(phase) <= self.phases.index(self.reached)

    def record(self, phase: str, **extra: Any) -> None:
        if extra:  # the ConfigMap's format has no place for them: a step must keep its own
            raise TypeError(f"the state ConfigMap records no step results ({', '.join(extra)})")
        write_phase(self.kube, self.namespace, self.sts, self.operation, phase)
        self.reached = phase
        self.on_record(phase)
