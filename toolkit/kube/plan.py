"""Facts + target image → the frozen Kubernetes plan the runtime carries out (pure).

The plan is stored as JSON in the state ConfigMap, so `resume` and `rollback`
render exactly the objects the first run rendered, even after the StatefulSet
is gone. It holds the upgrade's core (`core.upgrade.MajorUpgrade`, the same as Docker's
plan gives) and the Kubernetes-side decisions around it; what upgrade.sh is told is in
`job_env`, derived from the core and completed by the live read (`with_live_plan`).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from toolkit.core.layout import ImageKind, Layout, compute_layout, default_pgdata
from toolkit.core.paths import SCRIPTS, VOLUME
from toolkit.core.plan import UpgradePlan, check_target_mode
from toolkit.core.upgrade import MajorUpgrade
from toolkit.errors import Refused
from toolkit.kube.facts import StsFacts
from toolkit.kube.image_ref import ImageRef, parse_image
from toolkit.kube.replica_plan import ReplicaPlan, replica_plan
from toolkit.kube.topology import Topology

LABEL_REHEARSAL_OF = "pgleap.io/rehearsal-of"
VOLUME_MOUNT = VOLUME  # the Kubernetes names of core/paths.py (render.py, rehearsal_manifests.py)
SCRIPTS_DIR = SCRIPTS
ACTIONS = (
    "upgrade",
    "rollback",
    "rollback-check",
    "finalize",
    "place",
    "cleanup",
    "serve-old",
    "serve-new",
    "prepare",
)


@dataclass(frozen=True)
class KubePlan:
    """Every Kubernetes-side decision of one upgrade run, around the upgrade's core (images,
    majors, mode, layout, owner, collation libraries, downtime: `core.upgrade.MajorUpgrade`)."""

    run_id: str
    namespace: str
    sts: str
    container: str
    core: MajorUpgrade
    data_claim: str
    data_pvc: str
    mount_path: str
    sub_path: str
    fs_group: int | None
    termination_grace_seconds: int
    node_terms: tuple[dict[str, Any], ...] = ()
    snapshot: str | None = None
    snapshot_class: str | None = None
    patch_retention: bool = False
    job_env: dict[str, str] = field(default_factory=dict)
    replicas: ReplicaPlan | None = None
    # Set when the StatefulSet is a rehearsal's clone: every object of its run carries the
    # rehearsal's label, so `rehearse --remove` deletes by label, never by name alone.
    rehearsal_of: str | None = None

    def to_json(self) -> str:
        """Flat, the core's keys beside the Kubernetes ones: the format every version has stored
        (a run recorded by an older pgleap resumes, and an older one reads this one's)."""
        data = asdict(self)
        data.update(data.pop("core"))
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KubePlan:
        data = json.loads(text)
        data["core"] = MajorUpgrade.take(data, mount_path=data["mount_path"])
        data["node_terms"] = tuple(data["node_terms"])
        if data.get("replicas"):
            data["replicas"] = ReplicaPlan.from_dict(data["replicas"])
        return cls(**data)

    @property
    def same_sts_standbys(self) -> bool:
        """Standbys are ordinals 1..N-1 of the primary's own StatefulSet."""
        return self.replicas is not None and self.replicas.topology == "ordinals"

    @property
    def read_sts(self) -> str | None:
        """The separate read StatefulSet, if the standbys live in one."""
        return self.replicas.sts if self.replicas and self.replicas.topology == "primary-read" else None

    def replica_view(self) -> KubePlan:
        """This plan as seen from the standbys' StatefulSet (its name, image, layout, user)."""
        rp = self.replicas
        if rp is None:
            return self
        core = replace(self.core, old_image=rp.old_image, layout=rp.layout, uid=rp.uid, gid=rp.gid)
        return replace(
            self,
            sts=rp.sts,
            container=rp.container,
            core=core,
            data_claim=rp.data_claim,
            data_pvc=f"{rp.data_claim}-{rp.sts}-0",
            mount_path=rp.mount_path,
            sub_path=rp.sub_path,
            fs_group=rp.fs_group,
            termination_grace_seconds=rp.termination_grace_seconds,
            patch_retention=rp.patch_retention,
            job_env={**self.job_env, **layout_env(core)},
        )

    def env_for(self, action: str) -> dict[str, str]:
        """The main container's env for one Job action."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        env = {**self.job_env, "PGLEAP_ACTION": action}
        if action == "upgrade" and self.core.downtime == "minimal":
            env["PGLEAP_CHECK"] = "0"  # no separate --check in the window (pg_upgrade checks first anyway)
        return env


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


def layout_env(core: MajorUpgrade) -> dict[str, str]:
    """The env keys pgleap derives from the layout and mode (core's one upgrade.sh contract)."""
    return core.upgrade_env(volume=VOLUME_MOUNT)


def with_live_plan(kplan: KubePlan, plan: UpgradePlan) -> KubePlan:
    """`kplan` with what the live read decided (core's plan): the same upgrade.sh env as Docker's
    (superuser, initdb options, lock sizing; initdb options the caller set stay) and the images'
    glibc/ICU for the targeted reindex."""
    decided = plan.upgrade_env(volume=VOLUME_MOUNT)
    env = dict(kplan.job_env)
    env["PGLEAP_MAX_LOCKS"] = decided["PGLEAP_MAX_LOCKS"]
    env.setdefault("PGLEAP_INITDB_ARGS", decided["PGLEAP_INITDB_ARGS"])
    env.setdefault("PGLEAP_SUPERUSER", decided["PGLEAP_SUPERUSER"])
    return replace(kplan, job_env=env, core=replace(kplan.core, glibc=plan.glibc, icu=plan.icu))


def merge_job_env(derived: dict[str, str], given: dict[str, str] | None) -> dict[str, str]:
    """Caller's env over pgleap's; refuse secrets and contradictions of the layout."""
    given = dict(given or {})
    for key, value in given.items():
        if SECRETISH.search(key):
            raise ValueError(f"job env {key} looks like a secret; the upgrade Job needs none")
        if not _OWN_KEY.match(key):
            # BASH_ENV, LD_PRELOAD, PATH… would change how the Job's scripts run
            raise ValueError(f"job env {key}: only PGLEAP_* variables may be set for the Job")
        if not isinstance(value, str):
            raise ValueError(f"job env {key} must be a string, got {type(value).__name__}")
        if key in _DERIVED and value != derived[key]:
            raise ValueError(f"job env {key}={value!r} contradicts the layout ({derived[key]!r})")
    if "PGLEAP_ACTION" in given:
        raise ValueError("PGLEAP_ACTION is set per Job by pgleap, not by the caller")
    return {**derived, **given}


def superuser_for(facts: StsFacts, given: str | None) -> str:
    """The role initdb gives the new cluster (OID 10). POSTGRES_USER from a Secret is not read by
    pgleap: without --superuser it refuses, before the stop, rather than guess `postgres`."""
    if given:
        return given
    if facts.superuser_ref:
        raise Refused(
            f"POSTGRES_USER of {facts.name} comes from {facts.superuser_ref}, which pgleap does not read",
            "pass --superuser ROLE with the role the cluster was initialised with (the value of that "
            "key), so the new cluster has the same owner",
        )
    return facts.superuser


def make_plan(
    facts: StsFacts,
    target_image: str,
    *,
    mode: str = "link",
    snapshot: bool | None = None,
    job_env: dict[str, str] | None = None,
    patch_retention: bool = True,
    run_id: str | None = None,
    topology: Topology | None = None,
    read_facts: StsFacts | None = None,
    keep_readers: bool = False,
    target: ImageRef | None = None,
) -> KubePlan:
    """Decide everything Kubernetes-side; `snapshot=None` means "if a snapshot class fits".

    `target` carries the probed major (kube_probe); without it the tag is parsed (offline render)."""
    target = target or parse_image(target_image)
    if target.major is None or facts.image.major is None or facts.uid is None:
        raise Refused(f"cannot plan {facts.name}: image majors or data owner unknown", "run the guard first")
    superuser_for(facts, (job_env or {}).get("PGLEAP_SUPERUSER"))
    check_target_mode(mode, target.major)  # the same refusals as Docker's, before the stop
    layout = _layout_for(facts, target.major, target.kind)
    run_id = run_id or uuid.uuid4().hex[:12]
    take_snapshot = bool(facts.snapshot_classes) if snapshot is None else snapshot
    core = MajorUpgrade(
        old_image=facts.image.ref,
        new_image=target.ref,
        old_major=facts.image.major,
        new_major=target.major,
        mode=mode,
        layout=layout,
        uid=facts.uid,
        gid=facts.gid,
    )
    replicas = _replicas_for(facts, topology, read_facts, target.major, target.kind, keep_readers)
    return KubePlan(
        run_id=run_id,
        namespace=facts.namespace,
        sts=facts.name,
        container=facts.container,
        core=core,
        data_claim=facts.data_claim,
        data_pvc=facts.data_pvc,
        mount_path=facts.mount_path,
        sub_path=facts.sub_path,
        fs_group=facts.fs_group,
        termination_grace_seconds=facts.termination_grace_seconds,
        node_terms=node_pin_terms(facts),
        snapshot=f"pgleap-{facts.name}-{run_id}"[:253] if take_snapshot else None,
        snapshot_class=facts.snapshot_classes[0] if take_snapshot and facts.snapshot_classes else None,
        patch_retention=patch_retention and "Delete" in (facts.when_scaled, facts.when_deleted),
        job_env=merge_job_env(layout_env(core), job_env),
        replicas=replicas,
        rehearsal_of=_rehearsal_of(facts),
    )


def _layout_for(facts: StsFacts, new_major: int, new_kind: ImageKind) -> Layout:
    """The one placement rule applied to the StatefulSet's mount, subPath and PGDATA."""
    return compute_layout(
        facts.mount_path,
        facts.sub_path,
        facts.pgdata,
        new_major,
        new_kind,
        old_default=_old_default(facts),
    )


def _replicas_for(
    facts: StsFacts,
    topology: Topology | None,
    read_facts: StsFacts | None,
    new_major: int,
    new_kind: str,
    keep_readers: bool,
) -> ReplicaPlan | None:
    """The standbys' plan (a read StatefulSet's own facts when there is one); --keep-readers
    without readers is refused rather than ignored."""
    if topology is not None and topology.has_standbys:
        return replica_plan(
            topology,
            read_facts if topology.kind == "primary-read" else facts,
            new_major,
            new_kind,
            keep_readers,
        )
    if keep_readers:
        raise Refused(
            f"--keep-readers: {facts.name} has no read StatefulSet",
            "drop --keep-readers (there are no readers)",
        )
    return None


def _old_default(facts: StsFacts) -> str | None:
    """PGDATA the old image uses when none is set: the one placement rule compares with it."""
    major = facts.image.major
    return default_pgdata(facts.image.kind, major) if major is not None else None


def _rehearsal_of(facts: StsFacts) -> str | None:
    """The rehearsed StatefulSet, when `facts` describe a rehearsal's clone (made by pgleap)."""
    labels = dict(facts.pod_labels)
    if labels.get("app.kubernetes.io/managed-by") != "pgleap":
        return None
    return labels.get(LABEL_REHEARSAL_OF)


# pg_basebackup throughput assumed for the read-downtime estimate (a typical 1 Gbit/s network).
BASEBACKUP_BYTES_PER_SECOND = 100 * 1024**2


# Env keys pgleap derives from the layout; the caller may not contradict them.
_DERIVED = ("PGLEAP_VOLUME", "PGLEAP_OLD_REL", "PGLEAP_NEW_REL", "PGLEAP_OLD_MAJOR", "PGLEAP_NEW_MAJOR")
_OWN_KEY = re.compile(r"^PGLEAP_[A-Z0-9_]+$")
SECRETISH = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|PGPASS", re.IGNORECASE)
_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
_UNITS.update({"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4})


def size_bytes(size: str | None) -> int | None:
    """A Kubernetes quantity such as `8Gi` or `500M` in bytes; None when absent or unusual."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kMGT]i?|)", size or "")
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def read_availability(plan: KubePlan) -> list[dict[str, Any]]:
    """For each standby: when it stops serving reads, whether it serves stale reads, when it is back.

    Phases name the points in time (they are what `pgleap status` shows). The re-seed estimate is
    the PVC size at BASEBACKUP_BYTES_PER_SECOND: an upper bound, since the database is usually
    smaller than its volume; the primary's own stop → verified time comes on top.
    """
    rp = plan.replicas
    if rp is None:
        return []
    out = []
    for sb in rp.standbys:
        size = size_bytes(sb.size)
        stale = rp.keep_readers
        out.append(
            {
                "pod": sb.pod,
                "pvc": sb.pvc,
                "node": sb.node,
                "services": list(sb.services),
                "stale_reads": (
                    f"STALE: serves reads from the old PostgreSQL {plan.core.old_major} data (frozen at the primary's "
                    "stop, no new writes) from phase 'stopped' until its re-seed starts (phase 'reseeded')"
                    if stale
                    else None
                ),
                "unavailable_from": "reseeded"
                if stale
                else ("stopped" if rp.topology == "ordinals" else "replicas-stopped"),
                "unavailable_until": "replicas-started",
                "unavailable": (
                    "from the start of its re-seed"
                    if stale
                    else "from the stop of the primary"
                    if rp.topology == "ordinals"
                    else "from just before the primary's stop"
                )
                + " until the new StatefulSet runs it on the new image (after the primary is upgraded and verified"
                " and every standby's pg_basebackup is done)",
                "reseed_estimate_seconds": (
                    round(size / BASEBACKUP_BYTES_PER_SECOND) if size is not None else None
                ),
                "reseed_copies_up_to": sb.size,
            }
        )
    return out
