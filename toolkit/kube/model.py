"""The Kubernetes runtime's vocabulary: its phases, what a command did, the recorded state,
the hooks it calls and the small predicates on live objects every step shares."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.core.progress import Progress
from toolkit.errors import PgleapError
from toolkit.kube import objects, secret_mask
from toolkit.kube.api import Kube
from toolkit.kube.plan import KubePlan

UPGRADE_PHASES = (
    "recorded",
    "retention",
    "prepared",  # --downtime minimal: old binaries and initdb on the volume while the old pod serves
    "replicas-stopped",  # the read StatefulSet scaled to 0 (kept running with --keep-readers)
    "stopped",
    "snapshotted",
    "fingerprinted",  # the stopped old cluster's fingerprint, read in a serve-old Job (with a DataProof)
    "upgraded",
    "compared",  # the new cluster's, read in a serve-new Job before the switch, equal to the old one
    "proved",  # post-upgrade on the serve-new cluster, then the user data compared again (as Docker's)
    "switched",
    "started",
    "verified",
    "reseeded",  # every standby's volume holds a pg_basebackup of the new primary, in place
    "replicas-started",  # the standbys run on the new image
    "streaming",  # every standby is ready and streams from the new primary
    "done",
)
ROLLBACK_PHASES = (
    "rollback-started",
    "stopped-new",
    "restored-data",
    "restored-replicas",  # upgrade.sh rollback on every re-seeded standby's volume
    "restored-sts",
    "rolled-back",
)
FINALIZE_PHASES = ("finalize-started", "finalized-data", "finalized-replicas", "finalized")
# Upgrade phases during which the database does not serve.
DOWNTIME_PHASES = (
    "stopped", "snapshotted", "fingerprinted", "upgraded", "compared", "proved", "switched", "started"
)  # fmt: skip


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait; the pod stop adds the StatefulSet's terminationGracePeriodSeconds."""

    stop_margin: float = 120
    retention: float = 120
    delete: float = 120
    snapshot: float = 900
    job: float = 6 * 3600
    ready: float = 900
    poll: float = 2.0


@dataclass(frozen=True)
class HookContext:
    """What the post-upgrade/verify hook gets: the running new cluster and how to reach it.

    The hook runs at least once: after a crash between the hook and the recording
    of "verified", `resume` calls it again, so it must be safe to repeat.
    """

    kube: Kube
    plan: KubePlan
    namespace: str
    statefulset: str
    pod: str
    container: str
    log: Callable[[str], None]


PostUpgradeHook = Callable[[HookContext], None]
# (context of the running old primary, (old, new) probed images, its PGDATA, scripts) → the plan
# with what the live cluster decided; raises Refused before the first write (kube_inspect).
PreflightHook = Callable[..., KubePlan]
# (context of the new primary, replication slots of the standbys) → the slots that stream now.
StandbyProbe = Callable[[HookContext, tuple[str, ...]], Iterable[str]]


@dataclass(frozen=True)
class DataProof:
    """The engine's one fingerprint definition, handed to the runtime (toolkit/kube/hooks.py):
    `fingerprint(ctx)` reads the cluster a serve Job runs (ctx.pod, its "upgrade" container) into
    a JSON-able dict; `compare(before, after)` names every difference (empty: identical).
    `post_upgrade(ctx)` runs the engine's post-upgrade on that served cluster before the switch,
    and `compare_user(before, after)` then gives (user-data differences, extension-owned tables
    changed), as Docker's `proved` phase: without them the runtime skips that phase."""

    fingerprint: Callable[[HookContext], dict[str, Any]]
    compare: Callable[[dict[str, Any], dict[str, Any]], list[str]]
    post_upgrade: Callable[[HookContext], dict[str, Any]] | None = None
    compare_user: Callable[[dict[str, Any], dict[str, Any]], tuple[list[str], list[str]]] | None = None


def no_post_upgrade(ctx: HookContext) -> None:
    """Default hook: nothing to run (the engine supplies extension updates and verification)."""
    ctx.log(f"no post-upgrade hook given: {ctx.namespace}/{ctx.pod} runs, not verified by pgleap")


@dataclass
class Outcome(Progress):
    """What a command did, in the one progress model (toolkit/core/progress.py): `changed` lists
    the writes made, `unchanged` the checks that found it done, `seconds` phase → time it took
    in this run (a view on `phases`; an upgrade's phases between stop and start are downtime)."""

    operation: str
    phase: str

    def in_downtime(self, name: str) -> bool:
        return super().in_downtime(name) or (self.operation == "upgrade" and name in DOWNTIME_PHASES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "phase": self.phase,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "notes": self.notes,
            "seconds": dict(self.seconds),
            "phases": self.phase_rows(),
        }


@dataclass(frozen=True)
class State:
    """The state ConfigMap, parsed."""

    operation: str
    phase: str
    plan: KubePlan
    original: dict[str, Any]
    read_original: dict[str, Any] | None = None  # the read StatefulSet as it was
    holder: str | None = None  # the run holding the StatefulSet (toolkit.kube.lease), if any


def ours(sts: Mapping[str, Any] | None, plan: KubePlan) -> bool:
    """A StatefulSet pgleap created in this run (it carries the run id)."""
    return sts is not None and ((sts.get("metadata") or {}).get("annotations") or {}).get(
        objects.ANN_RUN
    ) == (plan.run_id)


def pod_ready(pod: Mapping[str, Any] | None) -> bool:
    for cond in ((pod or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def is_ready(sts: Mapping[str, Any] | None, replicas: int) -> bool:
    status = (sts or {}).get("status") or {}
    return replicas == 0 or (status.get("readyReplicas") or 0) >= replicas


def job_result(job: Mapping[str, Any]) -> str | None:
    """ "Complete", "Failed" or None while it runs."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return cond["type"]
    return None


def refuse_masked(sts: Mapping[str, Any]) -> None:
    """Never create a StatefulSet with a masked secret in place of the user's value."""
    masked = secret_mask.masked_left(sts)
    if masked:
        raise PgleapError(
            f"cannot recreate StatefulSet {sts['metadata']['name']}: the literal value of "
            f"{', '.join(masked)} is not stored by pgleap and no live StatefulSet holds it any more",
            "re-apply your own StatefulSet manifest (it has the value), then `pgleap resume` or "
            "`pgleap rollback`; better, move the value into a Secret",
        )


def job_shape(job: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """What a Job runs: per container its name, image, command and env."""
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [
        (
            c.get("name"),
            c.get("image"),
            c.get("command"),
            sorted(json.dumps(e, sort_keys=True) for e in c.get("env") or []),
        )
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])
    ]
