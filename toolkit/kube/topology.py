"""Which pods of a StatefulSet (or of its read StatefulSet) are streaming standbys (pure).

pg_upgrade upgrades one cluster; a standby of the old major cannot follow the new
primary (new system identifier), so every standby is re-seeded from the upgraded
primary with pg_basebackup. pgleap does that only where it understands the
topology:

- ``ordinals``: one StatefulSet with several ordinals, ordinal 0 the primary and
  1..N-1 standbys (replication configured in the pod spec: POSTGRES_REPLICATION_*
  or a primary-host env, or an init container running pg_basebackup);
- ``primary-read``: the chart layout of a ``<name>-primary`` StatefulSet and a
  ``<name>-read`` StatefulSet whose pods run ``POSTGRES_REPLICATION_MODE=slave``
  (Bitnami ``architecture: replication``).

Anything else with more than one replica is left as `problem`, and the guard refuses.
Input is the API's JSON form, as in `toolkit.kube.facts`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from toolkit.kube.facts import StsFacts, env_value, find_postgres_container, selects

Obj = Mapping[str, Any]

REPLICATION_ENV = (
    "POSTGRES_REPLICATION_MODE",
    "POSTGRES_REPLICATION_USER",
    "POSTGRES_PRIMARY_HOST",
    "POSTGRES_MASTER_HOST",
    "PRIMARY_HOST",
    "REPLICATION_USER",
)
_USER_ENV = ("POSTGRES_REPLICATION_USER", "REPLICATION_USER")
_PASSWORD_ENV = ("POSTGRES_REPLICATION_PASSWORD", "REPLICATION_PASSWORD")
HOST_ENV = _HOST_ENV = ("POSTGRES_PRIMARY_HOST", "POSTGRES_MASTER_HOST", "PRIMARY_HOST")
_STANDBY_MODES = ("slave", "replica", "standby")
_SETUP_WORDS = re.compile(r"pg_basebackup|standby\.signal|primary_conninfo")


@dataclass(frozen=True)
class Standby:
    """One standby pod and the volume it keeps its copy on."""

    pod: str
    ordinal: int
    pvc: str
    size: str | None = None  # the PVC's size: an upper bound of what pg_basebackup copies
    node: str | None = None  # where its pod last ran
    node_terms: tuple[dict[str, Any], ...] = ()  # where its RWO volume can attach
    services: tuple[str, ...] = ()  # Services that route to this pod
    pvc_exists: bool = False

    @property
    def slot(self) -> str:
        """The physical replication slot pg_basebackup creates on the new primary."""
        return "pgleap_" + re.sub(r"[^a-z0-9_]", "_", self.pod.lower())[:55]


@dataclass(frozen=True)
class Topology:
    """The primary, its standbys, and how a standby reaches the primary."""

    kind: str  # single | ordinals | primary-read
    primary_sts: str
    replica_sts: str | None = None  # the StatefulSet holding the standbys
    replica_count: int = 0  # its replicas as found (the count rollback restores)
    standbys: tuple[Standby, ...] = ()
    primary_host: str | None = None
    replication_user: str | None = None
    password_secret: dict[str, str] | None = None  # {"name", "key"} of the user's Secret
    read_services: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    problem: str | None = None  # set when the standbys are not understood: the guard refuses
    hint: str = ""

    @property
    def has_standbys(self) -> bool:
        return self.kind != "single"


def _containers(sts: Obj) -> list[Obj]:
    spec = ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def replication_evidence(sts: Obj) -> tuple[str, ...]:
    """What in the pod spec says its pods replicate (env names, pg_basebackup in a command)."""
    found = []
    for c in _containers(sts):
        for env in c.get("env") or []:
            if env.get("name") in REPLICATION_ENV:
                found.append(f"container {c['name']}: env {env['name']}")
        text = " ".join(str(x) for x in (c.get("command") or []) + (c.get("args") or []))
        if _SETUP_WORDS.search(text):
            found.append(f"container {c['name']}: runs {_SETUP_WORDS.search(text).group(0)}")  # type: ignore[union-attr]
    return tuple(dict.fromkeys(found))


def _literal(container: Obj, names: Iterable[str]) -> str | None:
    for name in names:
        present, value = env_value(container, name)
        if present and value:
            return value
    return None


def secret_ref(container: Obj, names: Iterable[str]) -> tuple[dict[str, str] | None, str | None]:
    """(secretKeyRef, problem) of the first env named; a literal password is a problem."""
    for name in names:
        for env in container.get("env") or []:
            if env.get("name") != name:
                continue
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref.get("name") and ref.get("key"):
                return {"name": ref["name"], "key": ref["key"]}, None
            return None, (
                f"env {name} of container {container.get('name')} is not a secretKeyRef: pgleap passes the "
                "replication password to its Job only through secretKeyRef, never as a plain value"
            )
    return None, None


def _pod_dns(sts: Obj, ordinal: int = 0) -> str | None:
    meta, spec = sts.get("metadata") or {}, sts.get("spec") or {}
    svc = spec.get("serviceName")
    if not svc:
        return None
    return f"{meta['name']}-{ordinal}.{svc}.{meta.get('namespace') or 'default'}.svc"


def _standbys(
    facts: StsFacts, first: int, pod_labels: Mapping[str, str], services: Iterable[Obj]
) -> tuple[Standby, ...]:
    nodes = dict(facts.pod_nodes)
    claims = {c.name: c for c in facts.claims}
    out = []
    for i in range(first, facts.replicas):
        pod = f"{facts.name}-{i}"
        pvc = f"{facts.data_claim}-{facts.name}-{i}"
        labels = {
            **pod_labels,
            "statefulset.kubernetes.io/pod-name": pod,
            "apps.kubernetes.io/pod-index": str(i),
        }
        claim = claims.get(pvc)
        routed = tuple(
            sorted(
                s["metadata"]["name"]
                for s in services
                if selects((s.get("spec") or {}).get("selector"), labels)
            )
        )
        out.append(
            Standby(
                pod=pod,
                ordinal=i,
                pvc=pvc,
                size=claim.size if claim else None,
                node=nodes.get(pod),
                node_terms=_pin(claim, nodes.get(pod)),
                services=routed,
                pvc_exists=bool(claim and claim.exists),
            )
        )
    return tuple(out)


def _pin(claim: Any, node: str | None) -> tuple[dict[str, Any], ...]:
    """The node pin of a standby's Job: the PV's node affinity, else the node its pod last ran on."""
    if (
        claim is not None
        and claim.access_modes
        and not ({"ReadWriteOnce", "ReadWriteOncePod"} & set(claim.access_modes))
    ):
        return ()
    if claim is not None and claim.node_terms:
        return claim.node_terms
    if node:
        return ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]},)
    return ()


def read_sts_names(primary: str) -> tuple[str, ...]:
    """Names a chart gives the read StatefulSet of `primary` (Bitnami: <name>-primary / <name>-read)."""
    names = []
    if primary.endswith("-primary"):
        names.append(primary[: -len("-primary")] + "-read")
    names.append(f"{primary}-read")
    return tuple(names)


def detect(
    primary_sts: Obj,
    facts: StsFacts,
    *,
    read_sts: Obj | None = None,
    read_facts: StsFacts | None = None,
    services: Iterable[Obj] = (),
) -> Topology:
    """The topology around `primary_sts`; `read_sts`/`read_facts`: a read StatefulSet found next to it."""
    services = list(services)
    name = facts.name
    container = find_postgres_container(primary_sts)
    own_mode = (_literal(container, ("POSTGRES_REPLICATION_MODE",)) or "").lower()
    if own_mode in _STANDBY_MODES:
        # pg_upgrade on a standby would split it from its primary: the primary is what gets upgraded.
        base = name[: -len("-read")] if name.endswith("-read") else name
        return Topology(
            "ordinals" if facts.replicas > 1 else "single",
            name,
            problem=f"StatefulSet {facts.namespace}/{name} runs standbys (POSTGRES_REPLICATION_MODE={own_mode})",
            hint=f"upgrade its primary StatefulSet (e.g. `pgleap upgrade sts {base}-primary`): pgleap re-seeds "
            "the standbys from it",
        )
    if read_sts is not None and read_facts is not None:
        return _primary_read(primary_sts, facts, read_sts, read_facts, services)
    if facts.replicas <= 1:
        return Topology("single", name)
    evidence = replication_evidence(primary_sts)
    labels = dict(facts.pod_labels)
    standbys = _standbys(facts, 1, labels, services)
    base = Topology(
        "ordinals",
        name,
        replica_sts=name,
        replica_count=facts.replicas,
        standbys=standbys,
        evidence=evidence,
        read_services=tuple(sorted({s for sb in standbys for s in sb.services})),
    )
    if not evidence:
        return _refuse(
            base,
            f"StatefulSet {facts.namespace}/{name} has {facts.replicas} replicas and pgleap cannot tell how "
            f"pods {name}-1..{facts.replicas - 1} replicate from {name}-0 (no POSTGRES_REPLICATION_* or "
            "primary-host env, no init container running pg_basebackup)",
            "if they are standbys of ordinal 0, set POSTGRES_REPLICATION_USER (and POSTGRES_REPLICATION_PASSWORD "
            "from a Secret) in the pod spec; if they are independent databases, upgrade them one by one",
        )
    return _connection(base, container, facts, _pod_dns(primary_sts))


def _connection(base: Topology, container: Obj, facts: StsFacts, host: str | None) -> Topology:
    """Fill in how a standby reaches the primary: host, replication user, password Secret."""
    user = _literal(container, _USER_ENV) or facts.superuser
    secret, problem = secret_ref(container, _PASSWORD_ENV)
    if problem is None and secret is None and user == facts.superuser:
        secret, problem = secret_ref(container, ("POSTGRES_PASSWORD",))
    topo = replace(base, primary_host=host, replication_user=user, password_secret=secret)
    if problem:
        return _refuse(
            topo, problem, "put the password in a Secret and refer to it with valueFrom.secretKeyRef"
        )
    if not host:
        return _refuse(
            topo,
            f"cannot tell how a standby reaches the primary {base.primary_sts}-0: its StatefulSet has no "
            "serviceName and no POSTGRES_PRIMARY_HOST/POSTGRES_MASTER_HOST is set",
            "give the StatefulSet a headless Service (spec.serviceName)",
        )
    return topo


def _primary_read(
    primary_sts: Obj, facts: StsFacts, read_sts: Obj, read_facts: StsFacts, services: list[Obj]
) -> Topology:
    read_container = find_postgres_container(read_sts)
    mode = (_literal(read_container, ("POSTGRES_REPLICATION_MODE",)) or "").lower()
    labels = dict(read_facts.pod_labels)
    standbys = _standbys(read_facts, 0, labels, services)
    base = Topology(
        "primary-read",
        facts.name,
        replica_sts=read_facts.name,
        replica_count=read_facts.replicas,
        standbys=standbys,
        evidence=replication_evidence(read_sts),
        read_services=tuple(sorted({s for sb in standbys for s in sb.services})),
    )
    if facts.replicas != 1:
        return _refuse(
            base,
            f"primary StatefulSet {facts.name} has {facts.replicas} replicas next to the read StatefulSet "
            f"{read_facts.name}; pgleap expects exactly one primary",
            "scale the primary StatefulSet to 1",
        )
    if mode not in _STANDBY_MODES:
        return _refuse(
            base,
            f"StatefulSet {read_facts.name} sits next to {facts.name} but its pods do not run as standbys "
            f"(POSTGRES_REPLICATION_MODE={mode or 'unset'})",
            "pgleap re-seeds only standbys that stream from the primary",
        )
    if read_facts.image.major != facts.image.major or read_facts.image.kind != facts.image.kind:
        return _refuse(
            base,
            f"read StatefulSet {read_facts.name} runs {read_facts.image.ref}, the primary runs {facts.image.ref}",
            "run the same image on both before upgrading",
        )
    host = _pod_dns(primary_sts) or _literal(read_container, _HOST_ENV)
    return _connection(base, read_container, read_facts, host)


def _refuse(topo: Topology, problem: str, hint: str) -> Topology:
    return replace(topo, problem=problem, hint=hint)
