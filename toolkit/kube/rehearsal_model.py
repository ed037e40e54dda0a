"""The parts of a `pgleap rehearse sts` run that are data, not steps: the run, the database-side
hooks, and the report (toolkit/kube/rehearsal.py runs them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.kube import rehearsal_manifests as kube_rehearsal
from toolkit.kube.facts import StsFacts
from toolkit.kube.model import HookContext
from toolkit.kube.plan import KubePlan


@dataclass
class RehearsalRun:
    """One rehearsal: production as read, its plan, the scripts, and the report being built."""

    sts: dict[str, Any]
    facts: StsFacts
    plan: KubePlan  # production's plan: the clone Job runs production's image as its user
    scripts: Mapping[str, str]
    result: dict[str, Any]
    kube: Any
    log: Callable[[str], None]

    @property
    def rname(self) -> str:
        return kube_rehearsal.rehearsal_name(self.facts.name)

    @property
    def view(self) -> KubePlan:
        """The plan as the rehearsal StatefulSet's (its name: its Jobs, ConfigMaps, pods)."""
        return dataclasses.replace(
            self.plan, sts=self.rname, rehearsal_of=kube_rehearsal.label_value(self.facts.name)
        )

    def context(self, pod: str, sts: str) -> HookContext:
        return HookContext(
            self.kube, self.plan, self.facts.namespace, sts, pod, self.facts.container, self.log
        )


@dataclass(frozen=True)
class RehearsalHooks:
    """The database-side steps (kube_hook.py supplies the engine's; tests may pass their own)."""

    fingerprint: Callable[[HookContext], Any]
    compare: Callable[[Any, Any], list[str]]  # (before, after) → differences
    post_upgrade: Callable[[HookContext], Mapping[str, Any] | None]
    replication_problems: Callable[[HookContext], list[str]]
    # (before, after extension updates) → differences in user data (extension-owned tables may
    # change legitimately); None: `compare`.
    compare_user: Callable[[Any, Any], list[str]] | None = None


def source_host(run: RehearsalRun, pod: Mapping[str, Any] | None) -> str | None:
    """Production's pod IP, or its stable DNS name through the StatefulSet's Service."""
    service = (run.sts.get("spec") or {}).get("serviceName")
    return ((pod or {}).get("status") or {}).get("podIP") or (
        f"{run.facts.name}-0.{service}.{run.facts.namespace}.svc" if service else None
    )


def summary(fp: Any) -> str:
    summary = fp.to_dict() if hasattr(fp, "to_dict") else {}
    return f"{summary.get('tables', '?')} tables, {summary.get('rows', '?')} rows" if summary else ""


def hook_report(done: Mapping[str, Any], before: Any) -> dict[str, Any]:
    """Extensions before/after, collation-dependent indexes and health checks, for the report."""
    before_ext = (
        before.get("extensions") if isinstance(before, Mapping) else getattr(before, "extensions", {})
    ) or {}
    after_ext = done.get("extensions") or {}
    return {
        "extensions": [
            {"database": db, "extension": ext, "before": version, "after": (after_ext.get(db) or {}).get(ext)}
            for db, exts in sorted(before_ext.items())
            for ext, version in sorted(exts.items())
        ],
        "extensions_left": list(done.get("extensions_left") or []),
        "collation_indexes": list(done.get("collation_indexes") or []),
        "health": list(done.get("health") or []),
    }


def predicted_downtime(phases: list[Mapping[str, Any]], snapshot_measured: bool) -> tuple[float, str]:
    """The phases a real run spends with the database stopped, as measured on the clone."""
    down = sum(p["seconds"] for p in phases if p["in_downtime"])
    basis = (
        "stop, pg_upgrade Job, StatefulSet switch and start, measured on the clone; the real run's "
        "VolumeSnapshot of the stopped volume adds about the snapshot time measured here"
        if snapshot_measured
        else "stop, pg_upgrade Job, StatefulSet switch and start, measured on the clone; a VolumeSnapshot "
        "before the real run (if taken) adds its own time, not measured here"
    )
    if snapshot_measured:
        down += sum(p["seconds"] for p in phases if p["name"] == "snapshot of the running volume")
    return round(down, 1), basis


def proof_report(seen: Mapping[str, Any]) -> dict[str, Any]:
    """The report's fingerprint verdicts and extensions/indexes/health from what the runtime's data
    proof saw on the clone (KubeRuntime.proof_seen); a step that did not run adds nothing."""
    report: dict[str, Any] = {}
    for key, name in (("compared", "fingerprint"), ("proved", "fingerprint_after_extensions")):
        if key in seen:
            report[name] = {"identical": not seen[key], "differences": list(seen[key])[:20]}
    if "before" in seen:
        report.update(hook_report(seen.get("done") or {}, seen["before"]))
    return report
