"""Kubernetes objects pgleap creates or changes, as plain dicts (no I/O beyond templates).

The objects pgleap authors (Job, ConfigMaps, VolumeSnapshot) come from Jinja2
templates in `manifests/`, where each safety decision sits next to its reason.
The new StatefulSet is the user's own object with a few fields changed, so it
is a copy-and-edit in Python rather than a template: a template would have to
re-emit every field a user might have set.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import jinja2
import yaml

from toolkit.core.paths import OLD_ROOT, STAGED_OLD_ROOT
from toolkit.kube.new_sts import primary_statefulset, replica_statefulset
from toolkit.kube.objects import (
    ANN_RUN,
    clean_object,
    job_name,
    labels_for,
    pod_spec,
    replica_job_name,
    scripts_cm_name,
    state_cm_name,
)

# Still re-exported only for rehearsal_manifests.py (its imports are to move to objects.py next).
from toolkit.kube.objects import MANAGED_BY as MANAGED_BY
from toolkit.kube.objects import short_name as short_name
from toolkit.kube.plan import SCRIPTS_DIR, VOLUME_MOUNT, KubePlan
from toolkit.kube.secret_mask import mask_secrets
from toolkit.kube.topology import Standby
from toolkit.resources import data_dir

# What a StatefulSet's pod spec lends the Job so it schedules where the database could.
_COPIED_POD_FIELDS = ("nodeSelector", "tolerations", "imagePullSecrets", "priorityClassName")


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("manifests"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # JSON is YAML: every value goes in as a JSON literal, so no quoting or indentation bugs.
    env.filters["tojson"] = yaml_json
    return env


# Characters YAML may not hold raw in a double-quoted scalar (non-printable, or line breaks it
# would fold), written as \uXXXX escapes instead. Only inside JSON strings can they occur.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def yaml_json(value: Any) -> str:
    """A JSON literal that is also valid YAML: non-ASCII kept as characters (YAML does not pair
    the surrogate escapes `json.dumps` writes for characters outside the BMP)."""
    text = json.dumps(value, ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def from_template(template: str, **values: Any) -> dict[str, Any]:
    return yaml.safe_load(_env().get_template(template).render(**values))


def merge_node_terms(
    existing: list[dict[str, Any]] | None, pins: tuple[dict[str, Any], ...]
) -> list[dict[str, Any]]:
    """AND two sets of nodeSelectorTerms (each set is an OR of terms): their cross product."""
    if not pins:
        return copy.deepcopy(existing or [])
    if not existing:
        return [copy.deepcopy(t) for t in pins]
    merged = []
    for term in existing:
        for pin in pins:
            both: dict[str, Any] = {}
            for key in ("matchExpressions", "matchFields"):
                items = list(term.get(key) or []) + list(pin.get(key) or [])
                if items:
                    both[key] = copy.deepcopy(items)
            merged.append(both)
    return merged


def _container(sts: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec(sts).get("containers") or [] if c["name"] == name)


def job_pod_parts(plan: KubePlan, sts: Mapping[str, Any], node_terms: tuple[dict[str, Any], ...]) -> dict:
    """Scheduling and resources copied from the StatefulSet (its `plan.container`), plus the node pin."""
    spec = pod_spec(sts)
    parts: dict[str, Any] = {k: copy.deepcopy(spec[k]) for k in _COPIED_POD_FIELDS if spec.get(k)}
    affinity = copy.deepcopy(spec.get("affinity") or {})
    if node_terms:
        node_aff = affinity.setdefault("nodeAffinity", {})
        required = node_aff.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        required["nodeSelectorTerms"] = merge_node_terms(required.get("nodeSelectorTerms"), node_terms)
    if affinity:
        parts["affinity"] = affinity
    resources = _container(sts, plan.container).get("resources")
    if resources:
        parts["resources"] = copy.deepcopy(resources)
    policy = (spec.get("securityContext") or {}).get("fsGroupChangePolicy")
    if policy:
        parts["fsGroupChangePolicy"] = policy
    return parts


def container_security(plan: KubePlan) -> dict[str, Any]:
    """Restricted Pod Security Standard, as the StatefulSet's user."""
    sc: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": plan.core.uid,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if plan.core.gid is not None:
        sc["runAsGroup"] = plan.core.gid
    return sc


def upgrade_job(
    plan: KubePlan,
    sts: Mapping[str, Any],
    action: str = "upgrade",
    *,
    node_terms: tuple[dict[str, Any], ...] | None = None,
) -> dict[str, Any]:
    """The Job for `action`; `node_terms` overrides the plan's pin (finalize: the running pod's node)."""
    on_volume = staged_old_root(plan, action)
    old_root = STAGED_OLD_ROOT if on_volume else OLD_ROOT
    env = [
        {"name": k, "value": v}
        for k, v in sorted({**plan.env_for(action), "PGLEAP_OLD_ROOT": old_root}.items())
    ]
    return from_template(
        "upgrade-job.yaml.j2",
        plan=plan,
        job_name=job_name(plan.sts, action),
        action=action,
        env=env,
        pod=job_pod_parts(plan, sts, plan.node_terms if node_terms is None else node_terms),
        labels=labels_for(plan, action),
        annotations={ANN_RUN: plan.run_id},
        scripts_cm=scripts_cm_name(plan.sts),
        container_security=container_security(plan),
        old_root=old_root,
        old_root_on_volume=on_volume,
        volume_mount=VOLUME_MOUNT,
    )


def staged_old_root(plan: KubePlan, action: str) -> bool:
    """--downtime minimal: the prepare Job collects the old binaries onto the data volume and the
    upgrade Job finds them there (collect.sh sees collected.env), so no collect runs in the window."""
    return plan.core.downtime == "minimal" and action in ("prepare", "upgrade")


def reseed_command() -> list[str]:
    return ["bash", f"{SCRIPTS_DIR}/reseed.sh"]


def replica_job(
    plan: KubePlan,
    standby_sts: Mapping[str, Any],
    standby: Standby,
    action: str = "reseed",
    *,
    node_terms: tuple[dict[str, Any], ...] | None = None,
) -> dict[str, Any]:
    """The Job on one standby's PVC: `reseed` (pg_basebackup from the new primary, then upgrade.sh
    place), or upgrade.sh `rollback`/`finalize`. `standby_sts` is the StatefulSet holding the
    standby as it was; `node_terms` overrides the pin (finalize: the running pod's node)."""
    rp = plan.replicas
    if rp is None:
        raise ValueError(f"the plan for {plan.sts} has no standbys")
    view = plan.replica_view()
    env: list[dict[str, Any]] = [
        {"name": k, "value": v}
        for k, v in sorted(view.env_for("place" if action == "reseed" else action).items())
    ]
    if action == "reseed":
        env += [
            {"name": "PGLEAP_PRIMARY_HOST", "value": rp.primary_host},
            {"name": "PGLEAP_REPLICATION_USER", "value": rp.replication_user},
            {"name": "PGLEAP_SLOT", "value": standby.slot},
        ]
        if rp.password_secret:
            # From the user's Secret at the pod's start: the value never passes through pgleap.
            env.append(
                {
                    "name": "PGPASSWORD",
                    "valueFrom": {
                        "secretKeyRef": {"name": rp.password_secret["name"], "key": rp.password_secret["key"]}
                    },
                }
            )
    command = reseed_command() if action == "reseed" else ["bash", f"{SCRIPTS_DIR}/upgrade.sh"]
    return from_template(
        "replica-job.yaml.j2",
        plan=view,
        job_name=replica_job_name(standby.pod, action),
        action=action,
        command=command,
        env=env,
        pod=job_pod_parts(view, standby_sts, standby.node_terms if node_terms is None else node_terms),
        labels={**labels_for(plan, action), "pgleap.io/standby": standby.pod[:63].rstrip("-.")},
        annotations={ANN_RUN: plan.run_id},
        scripts_cm=scripts_cm_name(plan.sts),
        container_security=container_security(view),
        volume_mount=VOLUME_MOUNT,
        claim=standby.pvc,
    )


def scripts_configmap(plan: KubePlan, scripts: Mapping[str, str]) -> dict[str, Any]:
    """The shell scripts (name → content) as a ConfigMap; keys must be plain file names."""
    for name in scripts:
        if "/" in name or not name:
            raise ValueError(f"script name {name!r} must be a plain file name")
    return from_template(
        "scripts-configmap.yaml.j2",
        plan=plan,
        name=scripts_cm_name(plan.sts),
        labels=labels_for(plan),
        annotations={ANN_RUN: plan.run_id},
        scripts=dict(sorted(scripts.items())),
    )


def state_configmap(
    plan: KubePlan,
    original_sts: Mapping[str, Any],
    *,
    operation: str,
    phase: str,
    read_sts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """pgleap's state: original StatefulSet(s) (cleaned, secrets masked) + plan + where the run is,
    with a digest of them that resume and rollback verify (toolkit/kube/stored.py)."""
    from toolkit.kube.stored import digest

    plan_json = plan.to_json()
    sts_json = json.dumps(mask_secrets(clean_object(original_sts)), sort_keys=True)
    read_sts_json = json.dumps(mask_secrets(clean_object(read_sts)), sort_keys=True) if read_sts else ""
    return from_template(
        "state-configmap.yaml.j2",
        plan=plan,
        name=state_cm_name(plan.sts),
        labels=labels_for(plan),
        annotations={ANN_RUN: plan.run_id},
        operation=operation,
        phase=phase,
        plan_json=plan_json,
        sts_json=sts_json,
        read_sts_json=read_sts_json,
        digest=digest(plan_json, sts_json, read_sts_json),
    )


def volume_snapshot(plan: KubePlan) -> dict[str, Any] | None:
    """A VolumeSnapshot of the data PVC, or None when the plan takes none."""
    if not plan.snapshot:
        return None
    return from_template(
        "volumesnapshot.yaml.j2", plan=plan, labels=labels_for(plan), annotations={ANN_RUN: plan.run_id}
    )


def objects_for(
    plan: KubePlan,
    original_sts: Mapping[str, Any],
    scripts: Mapping[str, str],
    read_sts: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every object an upgrade creates or changes, in the order it does so (for plan/render)."""
    objs = [state_configmap(plan, original_sts, operation="upgrade", phase="recorded", read_sts=read_sts)]
    snap = volume_snapshot(plan)
    if snap:
        objs.append(snap)
    objs += [
        scripts_configmap(plan, scripts),
        upgrade_job(plan, original_sts),
        primary_statefulset(plan, original_sts),
    ]
    rp = plan.replicas
    if rp is not None:
        holder = read_sts if plan.read_sts else original_sts
        if holder is None:
            raise ValueError(f"the read StatefulSet {rp.sts} is needed to render its Jobs")
        objs += [replica_job(plan, holder, sb) for sb in rp.standbys]
        if plan.read_sts:
            objs.append(replica_statefulset(plan, holder))
    return objs


def to_yaml(objs: list[dict[str, Any]]) -> str:
    """A multi-document YAML stream, as `kubectl apply -f` takes it."""
    return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False)
