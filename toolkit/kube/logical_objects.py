"""The objects of `--strategy logical` on Kubernetes (pure): the new StatefulSet `<name>-next`
beside the user's, the schema-copy Job, the run's ConfigMap, and the Service selector hand-over.

Names, all derived from the user's StatefulSet NAME:
  NAME-next              the new cluster (same pod spec on the new image, its own PVCs
                         `<claim>-NAME-next-<i>`), pgleap's labels only: no user Service selects it
  pgleap-NAME-logical    ConfigMap: the run's state (state.json) and logical-schema.sh
  pgleap-NAME-schema     Job: roles and schema copied with the new image's pg_dump/psql
The hand-over changes each user Service that selects the old pods: its selector becomes the
new pods' labels (recorded before, so rollback writes the original back).
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Mapping
from typing import Any

from toolkit.core.layout import default_pgdata
from toolkit.kube.objects import ANN_FROM, LABEL_ACTION, LABEL_STS, MANAGED_BY, clean_object, short_name
from toolkit.kube.pod_login import password_file_mount
from toolkit.kube.render import from_template

STATE_KEY = "state.json"
SCRIPT_KEY = "logical-schema.sh"
ACTION = "logical-next"


def next_name(sts: str) -> str:
    """`<name>-next`: a StatefulSet name leaves room for `-<ordinal>` and the controller's hash."""
    return short_name(sts, "next", limit=52)


def config_map_name(sts: str) -> str:
    return short_name("pgleap", sts, "logical", limit=253)


def schema_job_name(sts: str) -> str:
    return short_name("pgleap", sts, "schema")


def next_labels(sts: str) -> dict[str, str]:
    """The new pods' labels (and the new StatefulSet's selector): pgleap's only."""
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/name": "pgleap",
        LABEL_STS: sts[:63],
        LABEL_ACTION: ACTION,
    }


def job_labels(sts: str) -> dict[str, str]:
    return {**next_labels(sts), LABEL_ACTION: "logical-schema"}


def _env_value(container: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    return next((copy.deepcopy(e) for e in container.get("env") or [] if e.get("name") == name), None)


def data_mount(sts: Mapping[str, Any], container: str) -> str:
    """Where the postgres container mounts its claim template."""
    spec = sts["spec"]
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []}
    c = next(c for c in spec["template"]["spec"]["containers"] if c["name"] == container)
    return next(m["mountPath"].rstrip("/") for m in c.get("volumeMounts") or [] if m["name"] in claims)


def data_claim(sts: Mapping[str, Any], container: str) -> str:
    """The claim template the postgres container mounts its data from."""
    spec = sts["spec"]
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []}
    c = next(c for c in spec["template"]["spec"]["containers"] if c["name"] == container)
    return next(m["name"] for m in c.get("volumeMounts") or [] if m["name"] in claims)


def standby_claim(nxt: Mapping[str, Any], container: str, name: str) -> dict[str, Any]:
    """The data claim of a standby ordinal of NAME-next, made before its pod so the reseed Job can
    fill it: the StatefulSet controller then adopts it by name (as from its own template)."""
    template = next(
        t for t in nxt["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == data_claim(nxt, container)
    )
    claim = copy.deepcopy(dict(template))
    claim.pop("status", None)
    claim["apiVersion"], claim["kind"] = "v1", "PersistentVolumeClaim"
    claim["metadata"] = {"name": name, "namespace": nxt["metadata"]["namespace"],
                         "labels": dict(template["metadata"].get("labels") or {})}  # fmt: skip
    return claim


def next_statefulset(
    original: Mapping[str, Any], *, container: str, old_image: str, new_image: str, new_major: int
) -> dict[str, Any]:
    """The user's StatefulSet as `<name>-next`: one replica on the new image, pgleap's labels only
    (metadata, selector, pod template), no owner, its own claims. PGDATA stays on the claim: when the
    new image's default lies outside the data mount (official images from 18), it is set below it."""
    sts = clean_object(original)
    name = sts["metadata"]["name"]
    labels = next_labels(name)
    sts["metadata"] = {
        "name": next_name(name),
        "namespace": sts["metadata"].get("namespace"),
        "labels": dict(labels),
        "annotations": {ANN_FROM: old_image},
    }
    spec = sts["spec"]
    spec["replicas"] = 1
    spec["selector"] = {"matchLabels": dict(labels)}
    spec.pop("ordinals", None)
    template_meta = spec["template"].setdefault("metadata", {})
    template_meta["labels"] = dict(labels)
    pod = spec["template"]["spec"]
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        if c.get("image") == old_image:
            c["image"] = new_image
    main = next(c for c in pod["containers"] if c["name"] == container)
    mount = data_mount(original, container)
    pgdata = _env_value(main, "PGDATA")
    if pgdata is None:
        default = default_pgdata("official", new_major) or posixpath.join(mount, "pgdata")
        if not (default + "/").startswith(mount + "/"):
            main.setdefault("env", []).append({"name": "PGDATA", "value": posixpath.join(mount, "pgdata")})
    for claim in spec.get("volumeClaimTemplates") or []:
        claim_meta = claim.setdefault("metadata", {})
        claim_meta["labels"] = dict(labels)
    return sts


def pod_security(sts: Mapping[str, Any]) -> dict[str, Any]:
    """The pod securityContext of the Job: the StatefulSet's user, restricted."""
    given = (sts["spec"]["template"]["spec"]).get("securityContext") or {}
    sc: dict[str, Any] = {"runAsNonRoot": True, "runAsUser": given.get("runAsUser") or 999,
                          "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
    if given.get("runAsGroup") is not None:
        sc["runAsGroup"] = given["runAsGroup"]
    return sc


def schema_job(
    original: Mapping[str, Any],
    *,
    container: str,
    image: str,
    superuser: str,
    old_host: str,
    new_host: str,
    databases: list[str],
) -> dict[str, Any]:
    """The schema-copy Job. The password is the user's own env entry (a Secret reference stays one),
    or, with POSTGRES_PASSWORD_FILE, the user's Secret volume mounted read-only at the same path."""
    name = original["metadata"]["name"]
    pod = original["spec"]["template"]["spec"]
    main = next(c for c in pod["containers"] if c["name"] == container)
    env: list[dict[str, Any]] = [
        {"name": "PGLEAP_OLD_HOST", "value": old_host},
        {"name": "PGLEAP_NEW_HOST", "value": new_host},
        {"name": "PGLEAP_DATABASES", "value": "\n".join(databases)},
        {"name": "PGUSER", "value": superuser},
    ]
    password = _env_value(main, "POSTGRES_PASSWORD")
    from_file = password_file_mount(pod, main) if password is None else None
    if password is not None:
        password["name"] = "PGPASSWORD"
        env.append(password)
    elif from_file is not None:  # the same Secret volume, read-only; the script reads the file
        env.append({"name": "PGLEAP_PASSWORD_FILE", "value": from_file[2]})
    sec = pod_security(original)
    security = {
        "runAsNonRoot": True,
        "runAsUser": sec["runAsUser"],
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return from_template(
        "logical-schema-job.yaml.j2",
        name=schema_job_name(name),
        namespace=original["metadata"]["namespace"],
        labels=job_labels(name),
        image=image,
        env=env,
        security=security,
        pod_security=sec,
        pod={k: pod[k] for k in ("nodeSelector", "tolerations", "imagePullSecrets") if pod.get(k)},
        config_map=config_map_name(name),
        password_volume=from_file[0] if from_file else None,
        password_mount=from_file[1] if from_file else None,
    )


def config_map(sts: str, namespace: str, state_json: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(sts), "namespace": namespace, "labels": job_labels(sts) | {
            LABEL_ACTION: "logical-state"}},
        "data": {STATE_KEY: state_json, SCRIPT_KEY: script},
    }  # fmt: skip


def selecting_services(services: list[Mapping[str, Any]], pod_labels: Mapping[str, str]) -> dict[str, dict]:
    """name -> selector of every Service that selects the old pods (what the hand-over moves)."""
    out = {}
    for svc in services:
        selector = (svc.get("spec") or {}).get("selector") or {}
        if selector and all(pod_labels.get(k) == v for k, v in selector.items()):
            out[svc["metadata"]["name"]] = dict(selector)
    return out


def selector_patch(current: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, Any]:
    """A JSON merge patch that makes a Service's selector exactly `wanted` (old keys removed)."""
    selector: dict[str, Any] = {k: None for k in current if k not in wanted}
    selector.update(wanted)
    return {"spec": {"selector": selector}}


def plan_lines(sts: str, services: Mapping[str, Mapping[str, str]]) -> list[str]:
    """What the Kubernetes side creates and changes, for `plan sts --strategy logical`."""
    nxt = next_name(sts)
    lines = [
        f"StatefulSet {nxt}: the new cluster (1 replica, its own PVCs, pgleap's labels only)",
        f"Job {schema_job_name(sts)}: roles and schema copied with the new image's pg_dump",
        f"ConfigMap {config_map_name(sts)}: the run's state",
    ]
    wanted = ", ".join(f"{k}={v}" for k, v in next_labels(sts).items())
    for svc, selector in services.items():
        old = ", ".join(f"{k}={v}" for k, v in selector.items())
        lines.append(
            f"Service {svc}: selector {{{old}}} -> {{{wanted}}} at the switch (restored by rollback)"
        )
    if not services:
        lines.append("no Service selects the pods: clients that reach the pods directly are not moved")
    lines.append(f"finalize deletes StatefulSet {sts} and its PVCs; {nxt} then serves")
    return lines
