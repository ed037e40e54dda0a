"""Facts + target image → the frozen Kubernetes plan the runtime carries out (pure).

The plan is stored as JSON in the state ConfigMap, so `resume` and `rollback`
render exactly the objects the first run rendered, even after the StatefulSet
is gone. It holds only Kubernetes-side decisions; what pg_upgrade does is in
`job_env`, supplied by the engine's plan.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from toolkit.errors import Refused
from toolkit.kube_facts import StsFacts, parse_image
from toolkit.layout import Layout, compute_layout

MODES = ("link", "copy", "clone", "swap")
VOLUME_MOUNT = "/pgleap/volume"
OLD_ROOT = "/pgleap/old"
SCRIPTS_DIR = "/pgleap/scripts"
ACTIONS = ("upgrade", "rollback", "finalize")

# Env keys pgleap derives from the layout; the caller may not contradict them.
_DERIVED = ("PGLEAP_VOLUME", "PGLEAP_OLD_REL", "PGLEAP_NEW_REL", "PGLEAP_OLD_MAJOR", "PGLEAP_NEW_MAJOR")
_SECRETISH = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|PGPASS", re.IGNORECASE)


@dataclass(frozen=True)
class KubePlan:
    """Every Kubernetes-side decision of one upgrade run."""

    run_id: str
    namespace: str
    sts: str
    container: str
    old_image: str
    new_image: str
    old_major: int
    new_major: int
    data_claim: str
    data_pvc: str
    mount_path: str
    sub_path: str
    layout: Layout
    uid: int
    gid: int | None
    fs_group: int | None
    mode: str
    termination_grace_seconds: int
    node_terms: tuple[dict[str, Any], ...] = ()
    snapshot: str | None = None
    snapshot_class: str | None = None
    patch_retention: bool = False
    job_env: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KubePlan:
        data = json.loads(text)
        data["layout"] = Layout(**data["layout"])
        data["node_terms"] = tuple(data["node_terms"])
        return cls(**data)

    def env_for(self, action: str) -> dict[str, str]:
        """The main container's env for one Job action."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        return {**self.job_env, "PGLEAP_ACTION": action}


def node_pin_terms(facts: StsFacts) -> tuple[dict[str, Any], ...]:
    """nodeSelectorTerms that keep the Job where the RWO volume can attach.

    The PV's own nodeAffinity (local volumes, zonal disks) is the truth; without
    it, the node the database last ran on is where the volume is known to work.
    """
    claim = facts.data_claim_facts
    if claim and claim.access_modes and not ({"ReadWriteOnce", "ReadWriteOncePod"} & set(claim.access_modes)):
        return ()  # shared volume: any node can mount it
    if claim and claim.node_terms:
        return claim.node_terms
    if facts.pod_node:
        return ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [facts.pod_node]}]},)
    return ()


def layout_env(plan_layout: Layout, old_major: int, new_major: int, mode: str) -> dict[str, str]:
    """The env keys pgleap derives itself."""
    return {
        "PGLEAP_VOLUME": VOLUME_MOUNT,
        "PGLEAP_OLD_ROOT": OLD_ROOT,
        "PGLEAP_OLD_REL": plan_layout.old_rel,
        "PGLEAP_NEW_REL": plan_layout.new_rel,
        "PGLEAP_OLD_MAJOR": str(old_major),
        "PGLEAP_NEW_MAJOR": str(new_major),
        "PGLEAP_MODE": mode,
    }


def merge_job_env(derived: dict[str, str], given: dict[str, str] | None) -> dict[str, str]:
    """Caller's env over pgleap's; refuse secrets and contradictions of the layout."""
    given = dict(given or {})
    for key, value in given.items():
        if not isinstance(value, str):
            raise ValueError(f"job env {key} must be a string, got {type(value).__name__}")
        if _SECRETISH.search(key):
            raise ValueError(f"job env {key} looks like a secret; the upgrade Job needs none")
        if key in _DERIVED and value != derived[key]:
            raise ValueError(f"job env {key}={value!r} contradicts the layout ({derived[key]!r})")
    if "PGLEAP_ACTION" in given:
        raise ValueError("PGLEAP_ACTION is set per Job by pgleap, not by the caller")
    return {**derived, **given}


def make_plan(
    facts: StsFacts,
    target_image: str,
    *,
    mode: str = "link",
    snapshot: bool | None = None,
    job_env: dict[str, str] | None = None,
    patch_retention: bool = True,
    run_id: str | None = None,
) -> KubePlan:
    """Decide everything Kubernetes-side; `snapshot=None` means "if a snapshot class fits"."""
    if mode not in MODES:
        raise Refused(f"unknown mode {mode!r}", f"use one of {', '.join(MODES)}")
    target = parse_image(target_image)
    if target.major is None or facts.image.major is None or facts.uid is None:
        raise Refused(f"cannot plan {facts.name}: image majors or data owner unknown", "run the guard first")
    layout = compute_layout(facts.mount_path, facts.sub_path, facts.pgdata, target.major, target.kind)
    run_id = run_id or uuid.uuid4().hex[:12]
    take_snapshot = bool(facts.snapshot_classes) if snapshot is None else snapshot
    derived = layout_env(layout, facts.image.major, target.major, mode)
    return KubePlan(
        run_id=run_id,
        namespace=facts.namespace,
        sts=facts.name,
        container=facts.container,
        old_image=facts.image.ref,
        new_image=target.ref,
        old_major=facts.image.major,
        new_major=target.major,
        data_claim=facts.data_claim,
        data_pvc=facts.data_pvc,
        mount_path=facts.mount_path,
        sub_path=facts.sub_path,
        layout=layout,
        uid=facts.uid,
        gid=facts.gid,
        fs_group=facts.fs_group,
        mode=mode,
        termination_grace_seconds=facts.termination_grace_seconds,
        node_terms=node_pin_terms(facts),
        snapshot=f"pgleap-{facts.name}-{run_id}"[:253] if take_snapshot else None,
        snapshot_class=facts.snapshot_classes[0] if take_snapshot and facts.snapshot_classes else None,
        patch_retention=patch_retention and "Delete" in (facts.when_scaled, facts.when_deleted),
        job_env=merge_job_env(derived, job_env),
    )
