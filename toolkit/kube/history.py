"""The last finished operation on a StatefulSet, kept after finalize deletes the run's state.

`finalize` (and a finalize after a rollback) deletes pgleap's state ConfigMap, so `status`
would forget that anything happened. A small ConfigMap `pgleap-<sts>-last` keeps what
finished, when, between which images, and the plan (no secret: the plan never holds one),
so `status` can say "rolled-back at …" and `cleanup sts` knows which volume to clean.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from toolkit.kube import objects
from toolkit.kube.api import Kube
from toolkit.kube.plan import KubePlan

FINISHED = {"rollback": "rolled-back", "finalize": "finalized", "upgrade": "done", "cleanup": "cleaned"}


def cm_name(sts: str) -> str:
    return objects.short_name("pgleap", sts, "last", limit=253)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def record(kube: Kube, plan: KubePlan, operation: str, phase: str, **extra: str) -> None:
    """Write (or overwrite) the record of the operation that just finished."""
    data = {
        "operation": operation,
        "phase": phase,
        "at": now(),
        "from": plan.core.old_image,
        "to": plan.core.new_image,
        "run-id": plan.run_id,
        "plan.json": plan.to_json(),
        **extra,
    }
    name = cm_name(plan.sts)
    if kube.get("ConfigMap", plan.namespace, name) is None:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": plan.namespace, "labels": objects.labels_for(plan)},
                "data": data,
            }
        )
    else:
        kube.patch("ConfigMap", plan.namespace, name, {"data": data})


def read(kube: Kube, namespace: str, sts: str) -> dict[str, str] | None:
    cm = kube.get("ConfigMap", namespace, cm_name(sts))
    return dict((cm or {}).get("data") or {}) or None


def plan_of(last: dict[str, str]) -> KubePlan | None:
    try:
        return KubePlan.from_json(last["plan.json"])
    except (KeyError, TypeError, ValueError):
        return None


def rollback_possible(state_data: dict[str, str]) -> bool | None:
    """From the state ConfigMap's data: True, False, or None (unknown: rollback's check decides)."""
    from toolkit.kube.interrupted import rollback_open

    if not state_data.get("operation"):
        return False  # nothing recorded: nothing to roll back
    try:
        plan = json.loads(state_data.get("plan.json") or "{}")
    except ValueError:
        return None
    return rollback_open(
        plan.get("mode", "link"),
        state_data["operation"],
        state_data.get("phase", ""),
        plan.get("downtime", "verified"),
    )


def machine_fields(kube: Kube, namespace: str, sts: str) -> dict[str, Any]:
    """What a script needs besides the phases (as on Docker): pgleap's version, the time, and
    whether rollback is still possible."""
    from toolkit import __version__

    state = kube.get("ConfigMap", namespace, objects.state_cm_name(sts))
    return {
        "pgleap_version": __version__,
        "finished_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rollback_possible": rollback_possible((state or {}).get("data") or {}),
    }


def status_extra(kube: Kube, namespace: str, sts: str) -> dict[str, Any]:
    """For `status`: the last finished operation and when, and an interruption if one is recorded."""
    out: dict[str, Any] = {}
    last = read(kube, namespace, sts)
    if last:
        out["last_operation"] = {
            k: last.get(k)
            for k in ("operation", "after", "phase", "at", "from", "to", "run-id", "cleaned-at")
            if last.get(k)
        }
    state = kube.get("ConfigMap", namespace, objects.state_cm_name(sts))
    data = (state or {}).get("data") or {}
    out["rollback_possible"] = rollback_possible(data)
    if data.get("updated"):
        out["updated"] = data["updated"]
    if data.get("interrupted"):
        try:
            out["interrupted"] = json.loads(data["interrupted"])
        except ValueError:
            out["interrupted"] = data["interrupted"]
    return out
