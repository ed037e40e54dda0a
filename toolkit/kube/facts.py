"""What a StatefulSet tells us about the PostgreSQL it runs (pure).

Input is the API's JSON form (camelCase dicts, as `toolkit.kube.api` returns them or
as `helm template` prints them), so the same code serves a live cluster and an
offline `pgleap render -f`. Nothing here talks to the cluster.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from toolkit.core.layout import default_pgdata
from toolkit.core.safe_paths import check_path
from toolkit.errors import Refused
from toolkit.kube.image_ref import ImageRef, parse_image
from toolkit.kube.owners import Owner, detect_owners
from toolkit.kube.shape import check_statefulset

Obj = Mapping[str, Any]

_PG_IMAGE = re.compile(r"postgres|postgis|postgresql", re.IGNORECASE)


@dataclass(frozen=True)
class ClaimFacts:
    """One PersistentVolumeClaim of the StatefulSet and the volume behind it."""

    name: str
    exists: bool
    size: str | None = None
    storage_class: str | None = None
    access_modes: tuple[str, ...] = ()
    volume_name: str | None = None
    csi_driver: str | None = None
    node_terms: tuple[dict[str, Any], ...] = ()  # the PV's required nodeSelectorTerms


@dataclass(frozen=True)
class StsFacts:
    """Everything pgleap needs to know about one StatefulSet before planning."""

    namespace: str
    name: str
    image: ImageRef
    container: str
    pgdata: str
    pgdata_from_env: bool
    data_claim: str  # the volumeClaimTemplate name
    mount_path: str
    sub_path: str
    uid: int | None
    gid: int | None
    fs_group: int | None
    replicas: int
    termination_grace_seconds: int
    when_scaled: str
    when_deleted: str
    claim_names: tuple[str, ...]
    claims: tuple[ClaimFacts, ...]
    owners: tuple[Owner, ...]
    superuser: str = "postgres"  # the role with OID 10: initdb --username of the new cluster
    superuser_ref: str | None = None  # POSTGRES_USER comes from this reference, not a literal
    pod_node: str | None = None
    pod_nodes: tuple[tuple[str, str], ...] = ()  # (pod, node) of every ordinal that has a pod
    pod_labels: tuple[tuple[str, str], ...] = ()  # the pod template's labels
    services: tuple[str, ...] = ()
    pdbs: tuple[str, ...] = ()
    snapshot_classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def data_pvc(self) -> str:
        """The ordinal-0 claim: the one holding the database."""
        return f"{self.data_claim}-{self.name}-0"

    @property
    def data_claim_facts(self) -> ClaimFacts | None:
        return next((c for c in self.claims if c.name == self.data_pvc), None)

    @property
    def pod_name(self) -> str:
        return f"{self.name}-0"


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj or obj[key] is None:
            return default
        obj = obj[key]
    return obj


def find_postgres_container(sts: Obj) -> dict[str, Any]:
    """The container that runs PostgreSQL: it mounts a claim template and runs a postgres image."""
    templates = {t["metadata"]["name"] for t in _get(sts, "spec", "volumeClaimTemplates", default=[])}
    containers = _get(sts, "spec", "template", "spec", "containers", default=[])
    mounting = [c for c in containers if any(m["name"] in templates for m in c.get("volumeMounts") or [])]
    named = [c for c in mounting if _PG_IMAGE.search(c.get("image", ""))]
    candidates = named or mounting
    if len(candidates) == 1:
        return candidates[0]
    name = _get(sts, "metadata", "name")
    if not candidates:
        raise Refused(
            f"StatefulSet {name} has no container that mounts a volumeClaimTemplate",
            "pgleap upgrades a database kept on the StatefulSet's own PVC",
        )
    raise Refused(
        f"StatefulSet {name}: cannot tell which container runs PostgreSQL "
        f"({', '.join(c['name'] for c in candidates)})",
        "name the container's image after postgres/postgis, or open an issue with the manifest",
    )


def env_value(container: Obj, name: str) -> tuple[bool, str | None]:
    """(present, literal value); a valueFrom entry is present without a literal value."""
    for env in container.get("env") or []:
        if env.get("name") == name:
            return True, env.get("value")
    return False, None


def _reference(container: Obj, name: str) -> str:
    """Where a `valueFrom` env var comes from, for messages (never its value)."""
    env = next(e for e in container.get("env") or [] if e.get("name") == name)
    source = env.get("valueFrom") or {}
    for kind, label in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
        ref = source.get(kind)
        if isinstance(ref, Mapping):
            return f"{label} {ref.get('name')} key {ref.get('key')}"
    return "a valueFrom reference"


def resolve_pgdata(container: Obj, image: ImageRef) -> tuple[str, bool]:
    """PGDATA from the container env, else the image's default; (path, came_from_env)."""
    present, value = env_value(container, "PGDATA")
    if image.kind == "kartoza" and not present:
        present, value = env_value(container, "DATADIR")
    if present:
        if not value:
            raise Refused(
                f"container {container['name']}: PGDATA comes from a reference pgleap cannot resolve",
                "set PGDATA as a literal value in the StatefulSet",
            )
        return value, True
    if image.major is None:
        raise Refused(
            f"cannot tell the PostgreSQL major from image {image.ref}",
            "use a versioned tag (e.g. postgis/postgis:13-3.1) for the running StatefulSet",
        )
    default = default_pgdata(image.kind, image.major)
    if default is None:
        raise Refused(
            f"image {image.ref} is not one pgleap knows, and the container does not set PGDATA",
            "set the PGDATA env var in the StatefulSet to the data directory the image uses",
        )
    return default, False


def _data_mount(container: Obj, templates: set[str], pgdata: str) -> dict[str, Any]:
    """The claim mount that holds PGDATA (the deepest mountPath above it)."""
    best: dict[str, Any] | None = None
    for m in container.get("volumeMounts") or []:
        if m["name"] not in templates:
            continue
        mount = posixpath.normpath(m["mountPath"])
        data = posixpath.normpath(pgdata)
        if (data == mount or data.startswith(mount.rstrip("/") + "/")) and (
            best is None or len(mount) > len(posixpath.normpath(best["mountPath"]))
        ):
            best = m
    if best is None:
        raise Refused(
            f"PGDATA {pgdata} is not on any volumeClaimTemplate of container {container['name']}",
            "pgleap upgrades a database kept on the StatefulSet's own PVC",
        )
    return best


def _security(sts: Obj, container: Obj, image: ImageRef) -> tuple[int | None, int | None, int | None]:
    """uid, gid, fsGroup: container context over pod context over the image's default."""
    pod_sc = _get(sts, "spec", "template", "spec", "securityContext", default={})
    c_sc = container.get("securityContext") or {}
    uid = c_sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = c_sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if image.kind == "official":
        # The entrypoint starts as root and drops to postgres: 999 (Debian) or 70 (Alpine).
        default = 70 if image.alpine else 999
        uid = default if uid is None else uid
        gid = default if gid is None else gid
    elif image.kind == "bitnami":
        uid = 1001 if uid is None else uid
    return uid, gid, pod_sc.get("fsGroup")


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def claim_facts(name: str, pvc: Obj | None, pv: Obj | None) -> ClaimFacts:
    """Size, class, access modes and node constraints of one claim."""
    if pvc is None:
        return ClaimFacts(name=name, exists=False)
    spec = pvc.get("spec") or {}
    terms = _get(pv, "spec", "nodeAffinity", "required", "nodeSelectorTerms", default=[]) if pv else []
    return ClaimFacts(
        name=name,
        exists=True,
        size=_get(pvc, "status", "capacity", "storage") or _get(spec, "resources", "requests", "storage"),
        storage_class=spec.get("storageClassName"),
        access_modes=tuple(spec.get("accessModes") or ()),
        volume_name=spec.get("volumeName"),
        csi_driver=_get(pv, "spec", "csi", "driver") if pv else None,
        node_terms=tuple(terms),
    )


def gather(
    sts: Obj,
    *,
    pvcs: Iterable[Obj] = (),
    pvs: Iterable[Obj] = (),
    pods: Iterable[Obj] = (),
    services: Iterable[Obj] = (),
    pdbs: Iterable[Obj] = (),
    snapshot_classes: Iterable[Obj] = (),
    major: int | None = None,
) -> StsFacts:
    """Facts from a StatefulSet and whatever related objects the caller could read.

    `major` is the PostgreSQL major the running image reported (kube_probe); without it the
    tag is parsed (offline render)."""
    check_statefulset(sts)  # types and names first: nothing below reads an unchecked value
    meta = sts.get("metadata") or {}
    name, namespace = meta["name"], meta.get("namespace") or "default"
    spec = sts.get("spec") or {}
    container = find_postgres_container(sts)
    image = parse_image(container["image"])
    if major is not None:
        image = replace(image, major=major)
    pgdata, from_env = resolve_pgdata(container, image)
    templates = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []]
    check_path(pgdata, "PGDATA")
    mount = _data_mount(container, set(templates), pgdata)
    check_path(mount["mountPath"], "the data volume's mountPath")
    uid, gid, fs_group = _security(sts, container, image)
    replicas = spec.get("replicas", 1)
    claim_names = tuple(f"{t}-{name}-{i}" for t in templates for i in range(max(replicas, 1)))
    claims = _claims(claim_names, pvcs, pvs)
    pod_labels = _get(spec, "template", "metadata", "labels", default={})
    pod_nodes = _pod_nodes(pods, name, replicas)
    data_pvc_facts = next((c for c in claims if c.name == f"{mount['name']}-{name}-0"), None)
    driver = data_pvc_facts.csi_driver if data_pvc_facts else None
    policy = spec.get("persistentVolumeClaimRetentionPolicy") or {}
    user_present, user = env_value(container, "POSTGRES_USER")
    user_ref = None
    if user_present and user is None and image.kind != "bitnami":
        user_ref = _reference(container, "POSTGRES_USER")
    return StsFacts(
        namespace=namespace,
        name=name,
        image=image,
        container=container["name"],
        pgdata=posixpath.normpath(pgdata),
        pgdata_from_env=from_env,
        data_claim=mount["name"],
        mount_path=posixpath.normpath(mount["mountPath"]),
        sub_path=mount.get("subPath") or "",
        uid=uid,
        gid=gid,
        fs_group=fs_group,
        replicas=replicas,
        termination_grace_seconds=_get(spec, "template", "spec", "terminationGracePeriodSeconds", default=30),
        when_scaled=policy.get("whenScaled", "Retain"),
        when_deleted=policy.get("whenDeleted", "Retain"),
        claim_names=claim_names,
        claims=tuple(claims),
        owners=detect_owners(sts),
        superuser=user if user and image.kind != "bitnami" else "postgres",
        superuser_ref=user_ref,
        pod_node=dict(pod_nodes).get(f"{name}-0"),
        pod_nodes=pod_nodes,
        pod_labels=tuple(sorted(pod_labels.items())),
        services=_selecting(services, pod_labels, ("spec", "selector")),
        pdbs=_selecting(pdbs, pod_labels, ("spec", "selector", "matchLabels")),
        snapshot_classes=_snapshot_classes(snapshot_classes, driver),
    )


def _claims(claim_names: Iterable[str], pvcs: Iterable[Obj], pvs: Iterable[Obj]) -> list[ClaimFacts]:
    """Each claim the StatefulSet's pods mount, with its PVC and bound PV as far as they were read."""
    pvc_by_name = {_get(p, "metadata", "name"): p for p in pvcs}
    pv_by_name = {_get(p, "metadata", "name"): p for p in pvs}
    claims = []
    for claim in claim_names:
        pvc = pvc_by_name.get(claim)
        pv = pv_by_name.get(_get(pvc, "spec", "volumeName")) if pvc else None
        claims.append(claim_facts(claim, pvc, pv))
    return claims


def _pod_nodes(pods: Iterable[Obj], name: str, replicas: int) -> tuple[tuple[str, str], ...]:
    """(pod, node) of the StatefulSet's scheduled pods, sorted."""
    own = {f"{name}-{i}" for i in range(max(replicas, 1))}
    return tuple(
        sorted(
            (_get(p, "metadata", "name"), _get(p, "spec", "nodeName"))
            for p in pods
            if _get(p, "spec", "nodeName") and _get(p, "metadata", "name") in own
        )
    )


def _selecting(objs: Iterable[Obj], pod_labels: Mapping[str, str], path: tuple[str, ...]) -> tuple[str, ...]:
    """Names of the objects (Services, PDBs) whose selector at `path` selects the pods."""
    return tuple(sorted(_get(o, "metadata", "name") for o in objs if selects(_get(o, *path), pod_labels)))


def _snapshot_classes(classes: Iterable[Obj], driver: str | None) -> tuple[str, ...]:
    """The VolumeSnapshotClasses of the data volume's CSI driver, the default one first."""
    default = "snapshot.storage.kubernetes.io/is-default-class"
    matching = [c for c in classes if driver and c.get("driver") == driver]
    matching.sort(key=lambda c: _get(c, "metadata", "annotations", default) != "true")
    return tuple(_get(c, "metadata", "name") for c in matching)


def facts_as_dict(facts: StsFacts) -> dict[str, Any]:
    """A JSON-ready view for `inspect -o json`."""
    out = asdict(facts)
    out["data_pvc"] = facts.data_pvc
    return out
