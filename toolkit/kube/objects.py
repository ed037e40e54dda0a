"""Names, labels and clean copies of the Kubernetes objects pgleap makes (pure).

Shared by the renderers (render.py, new_sts.py) and by the code that finds objects again by
name or label (import them from here).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

from toolkit.kube.plan import LABEL_REHEARSAL_OF, KubePlan

MANAGED_BY = "pgleap"
LABEL_STS = "pgleap.io/statefulset"
LABEL_ACTION = "pgleap.io/action"
ANN_RUN = "pgleap.io/run-id"
ANN_FROM = "pgleap.io/upgraded-from"

_SERVER_FIELDS = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "managedFields",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def short_name(*parts: str, limit: int = 63) -> str:
    """`pgleap-<sts>-<what>` cut to `limit` characters with a hash when too long (Job names: 63)."""
    name = "-".join(parts)
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def scripts_cm_name(sts: str) -> str:
    return short_name("pgleap", sts, "scripts", limit=253)


def state_cm_name(sts: str) -> str:
    return short_name("pgleap", sts, "state", limit=253)


def job_name(sts: str, action: str) -> str:
    return short_name("pgleap", sts, action)


def replica_job_name(pod: str, action: str) -> str:
    """`pgleap-<standby pod>-<reseed|rollback|finalize>`."""
    return short_name("pgleap", pod, action)


def replica_job_names(plan: KubePlan) -> list[str]:
    """Every Job name a run may create on the standbys' volumes."""
    rp = plan.replicas
    if rp is None:
        return []
    return [replica_job_name(sb.pod, a) for sb in rp.standbys for a in ("reseed", "rollback", "finalize")]


def labels_for(plan: KubePlan, action: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/name": "pgleap",
        LABEL_STS: plan.sts[:63],
    }
    if action:
        labels[LABEL_ACTION] = action
    if plan.rehearsal_of:
        labels[LABEL_REHEARSAL_OF] = plan.rehearsal_of
    return labels


def clean_object(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without status and server-set metadata, fit to be created again."""
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    spec = out.get("spec") or {}
    template_meta = (spec.get("template") or {}).get("metadata")
    if template_meta:
        template_meta.pop("creationTimestamp", None)
    for claim in spec.get("volumeClaimTemplates") or []:
        claim.pop("status", None)
        for key in _SERVER_FIELDS:
            (claim.get("metadata") or {}).pop(key, None)
    return out


def pod_spec(sts: Mapping[str, Any]) -> dict[str, Any]:
    return ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}
