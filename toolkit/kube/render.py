"""Kubernetes objects pgleap creates or changes, as plain dicts (no I/O beyond templates).

The objects pgleap authors (Job, ConfigMaps, VolumeSnapshot) come from Jinja2
templates in `manifests/`, where each safety decision sits next to its reason.
The new StatefulSet is the user's own object with a few fields changed, so it
is a copy-and-edit in Python rather than a template: a template would have to
re-emit every field a user might have set.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import jinja2
import yaml

from toolkit.core.layout import default_pgdata
from toolkit.kube.plan import LABEL_REHEARSAL_OF, OLD_ROOT, SCRIPTS_DIR, SECRETISH, VOLUME_MOUNT, KubePlan
from toolkit.kube.topology import Standby
from toolkit.resources import data_dir

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


def _pod_spec(sts: Mapping[str, Any]) -> dict[str, Any]:
    return ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}


def _container(sts: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in _pod_spec(sts).get("containers") or [] if c["name"] == name)


def job_pod_parts(plan: KubePlan, sts: Mapping[str, Any], node_terms: tuple[dict[str, Any], ...]) -> dict:
    """Scheduling and resources copied from the StatefulSet (its `plan.container`), plus the node pin."""
    spec = _pod_spec(sts)
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
        "runAsUser": plan.uid,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if plan.gid is not None:
        sc["runAsGroup"] = plan.gid
    return sc


def upgrade_job(
    plan: KubePlan,
    sts: Mapping[str, Any],
    action: str = "upgrade",
    *,
    node_terms: tuple[dict[str, Any], ...] | None = None,
) -> dict[str, Any]:
    """The Job for `action`; `node_terms` overrides the plan's pin (finalize: the running pod's node)."""
    env = [{"name": k, "value": v} for k, v in sorted(plan.env_for(action).items())]
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
        old_root=OLD_ROOT,
        volume_mount=VOLUME_MOUNT,
    )


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


# A literal secret in the StatefulSet (e.g. POSTGRES_PASSWORD: value) is not copied into the
# state ConfigMap (readable with `get configmaps`): it stays only in the live StatefulSet, and
# is taken from there when pgleap recreates the StatefulSet from its stored copy.
MASKED = "(masked by pgleap: the value stays only in the live StatefulSet)"


def _env_lists(sts: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    pod = _pod_spec(sts)
    return [
        (c.get("name", ""), c.get("env") or [])
        for c in (pod.get("containers") or []) + (pod.get("initContainers") or [])
    ]


def mask_secrets(sts: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with every literal secret-looking env value replaced by MASKED."""
    out = copy.deepcopy(dict(sts))
    for _, env in _env_lists(out):
        for e in env:
            if SECRETISH.search(str(e.get("name", ""))) and e.get("value"):
                e["value"] = MASKED
    return out


def unmask_secrets(stored: Mapping[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored StatefulSet with masked values filled from `live` (same container, same name)."""
    out = copy.deepcopy(dict(stored))
    values = {
        (c, e.get("name")): e.get("value")
        for c, env in (_env_lists(live) if live else [])
        for e in env
        if e.get("value") and e.get("value") != MASKED
    }
    for c, env in _env_lists(out):
        for e in env:
            if e.get("value") == MASKED and values.get((c, e.get("name"))):
                e["value"] = values[(c, e.get("name"))]
    return out


def masked_left(sts: Mapping[str, Any]) -> list[str]:
    """`container/NAME` of values still masked (none may reach a created StatefulSet)."""
    return [f"{c}/{e.get('name')}" for c, env in _env_lists(sts) for e in env if e.get("value") == MASKED]


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


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    for env in container.setdefault("env", []):
        if env.get("name") == name:
            env.pop("valueFrom", None)
            env["value"] = value
            return
    container["env"].append({"name": name, "value": value})


def new_statefulset(
    plan: KubePlan, original_sts: Mapping[str, Any], *, replicas: int | None = None
) -> dict[str, Any]:
    """The user's StatefulSet on the new image: same name, selector, serviceName and claims.

    `replicas` overrides the count: a StatefulSet whose ordinals 1..N-1 are standbys starts
    with its primary alone (a standby of the old major cannot start on the new image) and is
    scaled to N once they are re-seeded.

    Containers and init containers that ran the old image get the new one (an
    init container on the old major would fail on the new data); when the layout
    changes, the postgres container and every container mounting the data where it
    did get the new mount (and PGDATA, where they set the old one). Everything
    else — env (Secret references untouched), probes, sidecars, labels — stays.
    """
    sts = clean_object(original_sts)
    meta = sts["metadata"]
    meta.setdefault("annotations", {})
    meta["annotations"][ANN_FROM] = plan.old_image
    meta["annotations"][ANN_RUN] = plan.run_id
    if replicas is not None:
        sts["spec"]["replicas"] = replicas
    pod = sts["spec"]["template"]["spec"]
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        if c.get("image") == plan.old_image:
            c["image"] = plan.new_image
    container = next(c for c in pod["containers"] if c["name"] == plan.container)
    lay = plan.layout
    if lay.changes_mount:
        old_pgdata = next(
            (e.get("value") for e in container.get("env") or [] if e.get("name") == "PGDATA"), None
        )
        old_sub = next(
            (
                m.get("subPath", "")
                for m in container.get("volumeMounts") or []
                if m["name"] == plan.data_claim and m["mountPath"].rstrip("/") == plan.mount_path
            ),
            "",
        )
        # Every container that sees the data where postgres saw it (an init container fixing
        # permissions, a standby's pg_basebackup, a backup sidecar) follows it to the new place.
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            moved = False
            for mount in c.get("volumeMounts") or []:
                if (
                    mount["name"] == plan.data_claim
                    and mount["mountPath"].rstrip("/") == plan.mount_path
                    and mount.get("subPath", "") == old_sub
                ):
                    mount["mountPath"] = lay.new_mount_path
                    if lay.new_sub_path:
                        mount["subPath"] = lay.new_sub_path
                    else:
                        mount.pop("subPath", None)
                    moved = True
            if c is container:
                has_env = any(e.get("name") == "PGDATA" for e in c.get("env") or [])
                if has_env or lay.new_pgdata != default_pgdata("official", plan.new_major):
                    _set_env(c, "PGDATA", lay.new_pgdata)
            elif (
                moved
                and old_pgdata
                and any(
                    e.get("name") == "PGDATA" and e.get("value") == old_pgdata for e in c.get("env") or []
                )
            ):
                _set_env(c, "PGDATA", lay.new_pgdata)
    return sts


def primary_statefulset(plan: KubePlan, original_sts: Mapping[str, Any]) -> dict[str, Any]:
    """The new primary StatefulSet: alone at first when its own ordinals are standbys."""
    return new_statefulset(plan, original_sts, replicas=1 if plan.same_sts_standbys else None)


def replica_statefulset(plan: KubePlan, read_sts: Mapping[str, Any]) -> dict[str, Any]:
    """The read StatefulSet on the new image, with the replicas it had."""
    assert plan.replicas is not None
    return new_statefulset(plan.replica_view(), read_sts, replicas=plan.replicas.count)


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
