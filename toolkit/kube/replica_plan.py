"""The standbys' part of a Kubernetes plan: where they are, how they reach the new primary,
their StatefulSet (pure). Stored inside KubePlan (`replicas`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolkit.core.layout import Layout, compute_layout, default_pgdata
from toolkit.errors import Refused
from toolkit.kube.facts import StsFacts
from toolkit.kube.topology import Standby, Topology


@dataclass(frozen=True)
class ReplicaPlan:
    """The standbys: where they are, how they reach the new primary, and their StatefulSet.

    For ``ordinals`` the StatefulSet is the primary's own (standbys are ordinals 1..N-1); for
    ``primary-read`` it is the separate read StatefulSet, whose own layout and user apply.
    """

    topology: str  # ordinals | primary-read
    sts: str
    count: int  # replicas of `sts` before the upgrade: restored by rollback, scaled back to after re-seed
    standbys: tuple[Standby, ...]
    primary_host: str
    replication_user: str
    password_secret: dict[str, str] | None
    container: str
    old_image: str
    data_claim: str
    mount_path: str
    sub_path: str
    layout: Layout
    uid: int
    gid: int | None
    fs_group: int | None
    termination_grace_seconds: int
    patch_retention: bool = False
    keep_readers: bool = False
    read_services: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplicaPlan:
        data = dict(data)
        data["layout"] = Layout.from_dict(data["layout"], mount_path=data["mount_path"])
        data["standbys"] = tuple(
            Standby(**{**sb, "node_terms": tuple(sb["node_terms"]), "services": tuple(sb["services"])})
            for sb in data["standbys"]
        )
        data["read_services"] = tuple(data["read_services"])
        return cls(**data)


def replica_plan(
    topology: Topology, facts: StsFacts | None, new_major: int, new_kind: str, keep_readers: bool
) -> ReplicaPlan:
    """The standbys' part of the plan; `facts` are those of the StatefulSet holding them."""
    if topology.problem or facts is None or not topology.primary_host or facts.uid is None:
        raise Refused(
            topology.problem or "the standbys are not understood", topology.hint or "run the guard first"
        )
    if keep_readers and topology.kind != "primary-read":
        raise Refused(
            f"--keep-readers: the standbys of {topology.primary_sts} are ordinals of its own StatefulSet and stop "
            "with the primary (a StatefulSet cannot stop ordinal 0 alone)",
            "drop --keep-readers; only a separate read StatefulSet can keep serving while the primary is upgraded",
        )
    return ReplicaPlan(
        topology=topology.kind,
        sts=facts.name,
        count=topology.replica_count,
        standbys=topology.standbys,
        primary_host=topology.primary_host,
        replication_user=topology.replication_user or facts.superuser,
        password_secret=topology.password_secret,
        container=facts.container,
        old_image=facts.image.ref,
        data_claim=facts.data_claim,
        mount_path=facts.mount_path,
        sub_path=facts.sub_path,
        layout=compute_layout(
            facts.mount_path,
            facts.sub_path,
            facts.pgdata,
            new_major,
            new_kind,  # type: ignore[arg-type]
            old_default=default_pgdata(facts.image.kind, facts.image.major) if facts.image.major else None,
        ),
        uid=facts.uid,
        gid=facts.gid,
        fs_group=facts.fs_group,
        termination_grace_seconds=facts.termination_grace_seconds,
        patch_retention=topology.kind == "primary-read"
        and "Delete" in (facts.when_scaled, facts.when_deleted),
        keep_readers=keep_readers,
        read_services=topology.read_services,
    )
