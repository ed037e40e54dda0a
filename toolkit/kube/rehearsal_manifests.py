"""The objects of a Kubernetes rehearsal (pure): a clone of production, upgraded on the side.

A rehearsal of StatefulSet `NAME` builds a second StatefulSet, `NAME-rehearsal`, that is
production's own object with its identity replaced: pgleap's labels only (so no Service,
PodDisruptionBudget, GitOps tool or Helm release of production ever selects or owns it),
one replica, and the same claim templates. Its ordinal-0 PVC is created by pgleap
beforehand as a clone of production's data PVC, either by a `pg_basebackup` Job from the
running server or restored from a VolumeSnapshot; the StatefulSet controller then adopts
it by name. The ordinary upgrade flow then runs on that StatefulSet unchanged, so the
rehearsal exercises exactly the Job, StatefulSet and hook a real run would use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolkit.errors import Refused
from toolkit.kube.facts import StsFacts, find_postgres_container
from toolkit.kube.plan import LABEL_REHEARSAL_OF, SCRIPTS_DIR, VOLUME_MOUNT, KubePlan, superuser_for
from toolkit.kube.render import (
    ANN_RUN,
    MANAGED_BY,
    clean_object,
    container_security,
    from_template,
    job_name,
    job_pod_parts,
    scripts_cm_name,
    short_name,
)
from toolkit.kube.topology import secret_ref

SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
LABEL_POD = "pgleap.io/rehearsal"
# Room for the controller's `<sts>-<hash>` revision label (63 characters).
_STS_NAME_LIMIT = 52


def rehearsal_name(sts: str) -> str:
    return short_name(sts, "rehearsal", limit=_STS_NAME_LIMIT)


def label_value(source: str) -> str:
    return source[:63].rstrip("-.")


def rehearsal_labels(source: str) -> dict[str, str]:
    """The labels of every object a rehearsal creates: pgleap's, and which StatefulSet it rehearses."""
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/name": "pgleap-rehearsal",
        LABEL_REHEARSAL_OF: label_value(source),
    }


def clone_pvc_name(data_claim: str, source: str) -> str:
    """The rehearsal StatefulSet's ordinal-0 claim name, so its controller adopts the clone."""
    return f"{data_claim}-{rehearsal_name(source)}-0"


def snapshot_name(source: str) -> str:
    return short_name("pgleap", rehearsal_name(source), "source", limit=253)


def clone_job_name(source: str) -> str:
    return job_name(rehearsal_name(source), "clone")


def _template_request(original: Mapping[str, Any], claim: str) -> tuple[str | None, str | None, list[str]]:
    for t in (original.get("spec") or {}).get("volumeClaimTemplates") or []:
        if (t.get("metadata") or {}).get("name") == claim:
            spec = t.get("spec") or {}
            size = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
            return size, spec.get("storageClassName"), list(spec.get("accessModes") or [])
    return None, None, []


def rehearsal_statefulset(original: Mapping[str, Any], facts: StsFacts) -> dict[str, Any]:
    """Production's StatefulSet as a one-replica rehearsal: same pod spec, pgleap's identity only."""
    name = rehearsal_name(facts.name)
    sts = clean_object(original)
    labels = rehearsal_labels(facts.name)
    sts["metadata"] = {
        "name": name,
        "namespace": facts.namespace,
        "labels": labels,
        "annotations": {LABEL_REHEARSAL_OF: facts.name},
    }
    spec = sts["spec"]
    spec["replicas"] = 1
    spec["serviceName"] = name
    spec["selector"] = {"matchLabels": {LABEL_POD: name}}
    # No ordinals.start: the clone must be ordinal 0 to adopt `<claim>-<name>-0`.
    for key in ("ordinals", "persistentVolumeClaimRetentionPolicy"):
        spec.pop(key, None)
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    # Production's pod labels would put the clone behind production's Services and PDBs.
    template_meta["labels"] = {**labels, LABEL_POD: name}
    for claim in spec.get("volumeClaimTemplates") or []:
        claim["metadata"] = {"name": claim["metadata"]["name"], "labels": dict(labels)}
    return sts


def clone_pvc(
    original: Mapping[str, Any], facts: StsFacts, *, snapshot: str | None, run_id: str
) -> dict[str, Any]:
    """The clone's PVC: production's size, class and access modes (the live claim's, which may
    have been expanded past the template); restored from `snapshot` when given."""
    live = facts.data_claim_facts
    size, storage_class, modes = _template_request(original, facts.data_claim)
    if live is not None and live.exists:
        size = live.size or size
        storage_class = live.storage_class or storage_class
        modes = list(live.access_modes) or modes
    if not size:
        raise Refused(
            f"cannot tell the size of {facts.data_pvc}",
            "give the claim template a resources.requests.storage",
        )
    spec: dict[str, Any] = {
        "accessModes": modes or ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    if snapshot:
        spec["dataSource"] = {"apiGroup": SNAPSHOT_GROUP, "kind": "VolumeSnapshot", "name": snapshot}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": clone_pvc_name(facts.data_claim, facts.name),
            "namespace": facts.namespace,
            "labels": rehearsal_labels(facts.name),
            "annotations": {ANN_RUN: run_id},
        },
        "spec": spec,
    }


def source_snapshot(facts: StsFacts, snapshot_class: str | None, run_id: str) -> dict[str, Any]:
    """A snapshot of production's data PVC while it runs: crash-consistent, which PostgreSQL
    recovers from like a power loss when PGDATA and pg_wal share the volume."""
    spec: dict[str, Any] = {"source": {"persistentVolumeClaimName": facts.data_pvc}}
    if snapshot_class:
        spec["volumeSnapshotClassName"] = snapshot_class
    return {
        "apiVersion": f"{SNAPSHOT_GROUP}/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": snapshot_name(facts.name),
            "namespace": facts.namespace,
            "labels": rehearsal_labels(facts.name),
            "annotations": {ANN_RUN: run_id},
        },
        "spec": spec,
    }


def rehearsal_service(facts: StsFacts) -> dict[str, Any]:
    """A ClusterIP Service on the kept rehearsal pod only (port-forward to it for a test app)."""
    name = rehearsal_name(facts.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": facts.namespace, "labels": rehearsal_labels(facts.name)},
        "spec": {
            "selector": {LABEL_POD: name},
            "ports": [{"name": "postgres", "port": 5432, "targetPort": 5432, "protocol": "TCP"}],
        },
    }


def replication_login(
    original: Mapping[str, Any], facts: StsFacts, superuser: str | None = None
) -> tuple[str, dict[str, str]]:
    """(user, Secret reference of its password) pg_basebackup logs in with: the container's
    POSTGRES_USER and the secretKeyRef of POSTGRES_PASSWORD; a plain-text password is refused."""
    container = find_postgres_container(original)
    secret, problem = secret_ref(container, ("POSTGRES_PASSWORD",))
    if problem or secret is None:
        raise Refused(
            problem
            or f"container {facts.container} has no POSTGRES_PASSWORD from a Secret for pg_basebackup to log in",
            "put the password in a Secret referred to by valueFrom.secretKeyRef, or rehearse with "
            "--from-snapshot (no login needed)",
        )
    # POSTGRES_USER from a Secret: the role given with --superuser, else a refusal (never a guess)
    return (superuser_for(facts, superuser) if facts.superuser_ref else facts.superuser), secret


def clone_job(
    plan: KubePlan,
    original: Mapping[str, Any],
    *,
    source_host: str | None = None,
    user: str | None = None,
    password_secret: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Job that makes the clone PVC a sealed copy of production (clone.sh): pg_basebackup of
    the running server when `source_host` is given, else only the seal of a restored snapshot.

    `plan` is production's plan (image, uid, layout); the Job runs on the OLD image, whose
    pg_basebackup matches the server's major."""
    env: list[dict[str, Any]] = [
        {"name": "PGLEAP_VOLUME", "value": VOLUME_MOUNT},
        {"name": "PGLEAP_OLD_REL", "value": plan.core.layout.old_rel},
    ]
    if source_host:
        if not user or not password_secret:
            raise ValueError("a pg_basebackup clone needs the user and the password's Secret")
        env += [
            {"name": "PGLEAP_SOURCE_HOST", "value": source_host},
            {"name": "PGLEAP_SOURCE_PORT", "value": "5432"},
            {"name": "PGLEAP_REPLICATION_USER", "value": user},
            # From the user's Secret at the pod's start: the value never passes through pgleap.
            {
                "name": "PGPASSWORD",
                "valueFrom": {
                    "secretKeyRef": {"name": password_secret["name"], "key": password_secret["key"]}
                },
            },
        ]
    rname = rehearsal_name(plan.sts)
    return from_template(
        "clone-job.yaml.j2",
        plan=plan,
        job_name=clone_job_name(plan.sts),
        claim=clone_pvc_name(plan.data_claim, plan.sts),
        command=["bash", f"{SCRIPTS_DIR}/clone.sh"],
        env=env,
        pod=job_pod_parts(plan, original, ()),
        labels={**rehearsal_labels(plan.sts), "pgleap.io/action": "clone"},
        annotations={ANN_RUN: plan.run_id},
        scripts_cm=scripts_cm_name(rname),
        container_security=container_security(plan),
        volume_mount=VOLUME_MOUNT,
    )


def other_claims_of_postgres(original: Mapping[str, Any], facts: StsFacts) -> list[str]:
    """Claim templates the postgres container mounts besides the data claim (e.g. a WAL volume)."""
    templates = {
        (t.get("metadata") or {}).get("name")
        for t in (original.get("spec") or {}).get("volumeClaimTemplates") or []
    }
    mounts = find_postgres_container(original).get("volumeMounts") or []
    return sorted({m["name"] for m in mounts if m["name"] in templates and m["name"] != facts.data_claim})


def is_rehearsal_object(obj: Mapping[str, Any] | None, source: str) -> bool:
    """An object a rehearsal of `source` created (safe to remove)."""
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_REHEARSAL_OF) == label_value(source) and (
        labels.get("app.kubernetes.io/managed-by") == MANAGED_BY
    )
