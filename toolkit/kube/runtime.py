"""Run an upgrade on Kubernetes: stop the StatefulSet, run the Job, switch to the new StatefulSet.

Each phase checks the cluster before it acts and says when nothing was needed,
and the phase reached is written to the state ConfigMap after it completes: a
crash anywhere is continued by `resume` or undone by `rollback`, and a rerun
after success makes no writes. Nothing of the user's is deleted before the new
cluster runs and the post-upgrade hook has passed (the old StatefulSet is
deleted with propagationPolicy=Orphan, which leaves its PVCs and pods alone).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from toolkit.core.facts import ImageFacts
from toolkit.errors import PgleapError, Refused
from toolkit.kube import decide as kube_decide
from toolkit.kube import guard, render
from toolkit.kube import interrupted as kube_interrupted
from toolkit.kube import probe as kube_probe
from toolkit.kube import restore as kube_restore
from toolkit.kube.api import Forbidden, Kube
from toolkit.kube.facts import StsFacts, gather, parse_image
from toolkit.kube.lease import Lease, holder_of
from toolkit.kube.plan import KubePlan, make_plan
from toolkit.kube.stored import check_stored
from toolkit.kube.topology import Topology, detect, read_sts_names

logger = logging.getLogger(__name__)

UPGRADE_PHASES = (
    "recorded",
    "retention",
    "replicas-stopped",  # the read StatefulSet scaled to 0 (kept running with --keep-readers)
    "stopped",
    "snapshotted",
    "upgraded",
    "switched",
    "started",
    "verified",
    "reseeded",  # every standby's volume holds a pg_basebackup of the new primary, in place
    "replicas-started",  # the standbys run on the new image
    "streaming",  # every standby is ready and streams from the new primary
    "done",
)
ROLLBACK_PHASES = (
    "rollback-started",
    "stopped-new",
    "restored-data",
    "restored-replicas",  # upgrade.sh rollback on every re-seeded standby's volume
    "restored-sts",
    "rolled-back",
)
FINALIZE_PHASES = ("finalize-started", "finalized-data", "finalized-replicas", "finalized")


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait; the pod stop adds the StatefulSet's terminationGracePeriodSeconds."""

    stop_margin: float = 120
    retention: float = 120
    delete: float = 120
    snapshot: float = 900
    job: float = 6 * 3600
    ready: float = 900
    poll: float = 2.0


@dataclass(frozen=True)
class HookContext:
    """What the post-upgrade/verify hook gets: the running new cluster and how to reach it.

    The hook runs at least once: after a crash between the hook and the recording
    of "verified", `resume` calls it again, so it must be safe to repeat.
    """

    kube: Kube
    plan: KubePlan
    namespace: str
    statefulset: str
    pod: str
    container: str
    log: Callable[[str], None]


PostUpgradeHook = Callable[[HookContext], None]
# (context of the running old primary, (old, new) probed images, its PGDATA, scripts) → the plan
# with what the live cluster decided; raises Refused before the first write (kube_inspect).
PreflightHook = Callable[..., KubePlan]
# (context of the new primary, replication slots of the standbys) → the slots that stream now.
StandbyProbe = Callable[[HookContext, tuple[str, ...]], Iterable[str]]


def no_post_upgrade(ctx: HookContext) -> None:
    """Default hook: nothing to run (the engine supplies extension updates and verification)."""
    ctx.log(f"no post-upgrade hook given: {ctx.namespace}/{ctx.pod} runs, not verified by pgleap")


@dataclass
class Outcome:
    """What a command did: `changed` lists the writes made, `unchanged` the checks that found it done."""

    operation: str
    phase: str
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # phase → time it took in this run

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "phase": self.phase,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "notes": self.notes,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class State:
    """The state ConfigMap, parsed."""

    operation: str
    phase: str
    plan: KubePlan
    original: dict[str, Any]
    read_original: dict[str, Any] | None = None  # the read StatefulSet as it was
    holder: str | None = None  # the run holding the StatefulSet (toolkit.kube.lease), if any


def _ours(sts: Mapping[str, Any] | None, plan: KubePlan) -> bool:
    """A StatefulSet pgleap created in this run (it carries the run id)."""
    return sts is not None and ((sts.get("metadata") or {}).get("annotations") or {}).get(render.ANN_RUN) == (
        plan.run_id
    )


def pod_ready(pod: Mapping[str, Any] | None) -> bool:
    for cond in ((pod or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _is_ready(sts: Mapping[str, Any] | None, replicas: int) -> bool:
    status = (sts or {}).get("status") or {}
    return replicas == 0 or (status.get("readyReplicas") or 0) >= replicas


def _job_result(job: Mapping[str, Any]) -> str | None:
    """ "Complete", "Failed" or None while it runs."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return cond["type"]
    return None


class KubeRuntime:
    """The Kubernetes runtime: inspect, plan, upgrade, resume, rollback, finalize, status."""

    def __init__(
        self,
        kube: Kube,
        *,
        log: Callable[[str], None] | None = None,
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.kube = kube
        self.log = log or logger.info
        self.t = timeouts

    # -- reading ------------------------------------------------------------------------------

    def read_sts(self, namespace: str, name: str) -> dict[str, Any]:
        sts = self.kube.get("StatefulSet", namespace, name)
        if sts is None:
            raise Refused(
                f"StatefulSet {name} not found in namespace {namespace}",
                "check the name and -n/--namespace (`kubectl get statefulsets -A`)",
            )
        return sts

    def _optional(self, what: str, fn: Callable[[], Any], default: Any) -> Any:
        """A read that improves the answer but is not required (cluster-scoped, CRDs)."""
        try:
            return fn()
        except Forbidden as exc:
            self.log(f"skipped {what}: {exc.message}")
        except PgleapError as exc:
            self.log(f"skipped {what}: {exc.message}")
        return default

    def inspect(
        self,
        namespace: str,
        name: str,
        sts: dict[str, Any] | None = None,
        services: list[dict[str, Any]] | None = None,
        *,
        major: int | None = None,
    ) -> StsFacts:
        """Facts about the StatefulSet and what surrounds it (read-only); `major` as probed."""
        sts = sts or self.read_sts(namespace, name)
        templates = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []]
        replicas = max(sts["spec"].get("replicas", 1), 1)
        pvcs = [
            p
            for t in templates
            for i in range(replicas)
            if (p := self.kube.get("PersistentVolumeClaim", namespace, f"{t}-{name}-{i}")) is not None
        ]
        pvs = []
        for pvc in pvcs:
            volume = (pvc.get("spec") or {}).get("volumeName")
            if volume:
                pv = self._optional(
                    f"PersistentVolume {volume}",
                    lambda v=volume: self.kube.get("PersistentVolume", None, v),
                    None,
                )
                if pv:
                    pvs.append(pv)
        pods = [p for i in range(replicas) if (p := self.kube.get("Pod", namespace, f"{name}-{i}"))]
        return gather(
            sts,
            pvcs=pvcs,
            pvs=pvs,
            pods=pods,
            services=services if services is not None else self.kube.list("Service", namespace),
            pdbs=self.kube.list("PodDisruptionBudget", namespace),
            snapshot_classes=self._optional(
                "VolumeSnapshotClasses", lambda: self.kube.list("VolumeSnapshotClass", None), []
            ),
            major=major,
        )

    def topology(
        self, namespace: str, name: str, sts: dict[str, Any], facts: StsFacts
    ) -> tuple[Topology, dict[str, Any] | None, StsFacts | None]:
        """The standbys around the StatefulSet (read-only): topology, read StatefulSet, its facts."""
        services = self.kube.list("Service", namespace)
        for candidate in read_sts_names(name):
            read = self.kube.get("StatefulSet", namespace, candidate)
            if read is not None:
                read_facts = self.inspect(
                    namespace, candidate, read, services=services, major=facts.image.major
                )
                topo = detect(sts, facts, read_sts=read, read_facts=read_facts, services=services)
                return topo, read, read_facts
        return detect(sts, facts, services=services), None, None

    def read_state(self, namespace: str, name: str) -> State | None:
        cm = self.kube.get("ConfigMap", namespace, render.state_cm_name(name))
        if cm is None:
            return None
        data = cm.get("data") or {}
        cm_name = render.state_cm_name(name)
        try:
            plan = KubePlan.from_json(data["plan.json"])
            original = json.loads(data["statefulset.json"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Refused(
                f"the recorded run in ConfigMap {cm_name} is unreadable ({exc.__class__.__name__}: {exc})",
                f"restore {cm_name} from your records; pgleap will not act on a plan it cannot read",
            ) from exc
        check_stored(cm_name, data, plan, original)
        read_original = (
            json.loads(data["read-statefulset.json"]) if data.get("read-statefulset.json") else None
        )
        # Literal secrets were masked in the ConfigMap: take them from the live StatefulSet(s).
        if render.masked_left(original):
            original = render.unmask_secrets(original, self.kube.get("StatefulSet", namespace, name))
        if read_original and plan.read_sts and render.masked_left(read_original):
            live = self.kube.get("StatefulSet", namespace, plan.read_sts)
            read_original = render.unmask_secrets(read_original, live)
        held = holder_of(cm)
        return State(
            operation=data["operation"],
            phase=data["phase"],
            plan=plan,
            original=original,
            read_original=read_original,
            holder=held.describe() if held else None,
        )

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        """Where a run stands, from the state ConfigMap and the live objects (read-only)."""
        state = self.read_state(namespace, name)
        sts = self.kube.get("StatefulSet", namespace, name)
        out: dict[str, Any] = {
            "namespace": namespace,
            "statefulset": name,
            "image": self._pg_image(sts, state.plan.container if state else None) if sts else None,
            "ready": _is_ready(sts, (sts or {}).get("spec", {}).get("replicas", 1)) if sts else False,
            "operation": state.operation if state else None,
            "phase": state.phase if state else None,
        }
        if state:
            out["held_by"] = state.holder
            out["run_id"] = state.plan.run_id
            out["from"], out["to"] = state.plan.old_image, state.plan.new_image
            jobs = {}
            for action in ("upgrade", "rollback", "finalize"):
                job = self.kube.get("Job", namespace, render.job_name(name, action))
                if job:
                    jobs[action] = _job_result(job) or "Running"
            for job_name in render.replica_job_names(state.plan):
                job = self.kube.get("Job", namespace, job_name)
                if job:
                    jobs[job_name] = _job_result(job) or "Running"
            out["jobs"] = jobs
            if state.plan.replicas:
                out["standbys"] = [sb.pod for sb in state.plan.replicas.standbys]
        return out

    @staticmethod
    def _pg_image(sts: Mapping[str, Any], container: str | None) -> str | None:
        containers = sts["spec"]["template"]["spec"]["containers"]
        for c in containers:
            if container is None or c["name"] == container:
                return c.get("image")
        return None

    # -- planning -----------------------------------------------------------------------------

    def probe(
        self, sts: Mapping[str, Any], target_image: str, scripts: Mapping[str, str] | None
    ) -> tuple[ImageFacts, ImageFacts] | None:
        """Both images' facts from probe Pods (kube_probe), before any write; None without probe.sh."""
        if scripts is None or not kube_probe.can_probe(scripts):
            return None
        return kube_probe.probe_both(self.kube, sts, target_image, scripts, log=self.log)

    def plan(
        self,
        namespace: str,
        name: str,
        target_image: str,
        *,
        job_env: dict[str, str] | None = None,
        mode: str = "link",
        snapshot: bool | None = None,
        overrides: guard.GuardOverrides = guard.GuardOverrides(),
        patch_retention: bool = True,
        run_id: str | None = None,
        keep_readers: bool = False,
        scripts: Mapping[str, str] | None = None,
        preflight: PreflightHook | None = None,
    ) -> tuple[KubePlan, dict[str, Any], list[str]]:
        """Guard and plan against the live cluster (read-only): plan, original StatefulSet, warnings.

        The read StatefulSet, when there is one, is `plan.read_sts`; `read_statefulset()` fetches it."""
        sts = self.read_sts(namespace, name)
        images = self.probe(sts, target_image, scripts)
        facts = self.inspect(namespace, name, sts, major=images[0].major if images else None)
        topo, _, read_facts = self.topology(namespace, name, sts, facts)
        plan, warnings = self._plan_from(
            facts,
            target_image,
            topology=topo,
            read_facts=read_facts,
            keep_readers=keep_readers,
            job_env=job_env,
            mode=mode,
            snapshot=snapshot,
            overrides=overrides,
            patch_retention=patch_retention,
            run_id=run_id,
            images=images,
        )
        if preflight is not None and images is not None and scripts is not None:
            plan = self.read_live(plan, facts, images, scripts, preflight)
        return plan, sts, warnings

    def _plan_from(
        self,
        facts: StsFacts,
        target_image: str,
        *,
        job_env: dict[str, str] | None,
        mode: str,
        snapshot: bool | None,
        overrides: guard.GuardOverrides,
        patch_retention: bool,
        run_id: str | None = None,
        topology: Topology | None = None,
        read_facts: StsFacts | None = None,
        keep_readers: bool = False,
        images: tuple[ImageFacts, ImageFacts] | None = None,
    ) -> tuple[KubePlan, list[str]]:
        target, checked = parse_image(target_image), []
        if images is not None:  # probed: Docker's refusals that need only the two images
            target = kube_probe.probed_target(target_image, images[1])
            checked = kube_probe.check_images(images[0], images[1], mode)
        warnings = checked + guard.check(
            facts, target, overrides, patch_retention=patch_retention, topology=topology
        )
        if snapshot and not facts.snapshot_classes:
            warnings.append(
                "no VolumeSnapshotClass matches the volume's CSI driver: the cluster default is used"
            )
        plan = make_plan(
            facts,
            target_image,
            mode=mode,
            snapshot=snapshot,
            job_env=job_env,
            patch_retention=patch_retention,
            run_id=run_id,
            topology=topology,
            read_facts=read_facts,
            keep_readers=keep_readers,
            target=target,
        )
        if images is not None:  # the post-upgrade hook rebuilds only what these changes reorder
            old, new = images
            plan = dataclasses.replace(plan, glibc=(old.glibc, new.glibc), icu=(old.icu, new.icu))
        return plan, warnings

    def read_live(
        self,
        plan: KubePlan,
        facts: StsFacts,
        images: tuple[ImageFacts, ImageFacts],
        scripts: Mapping[str, str],
        preflight: PreflightHook,
    ) -> KubePlan:
        """The running primary's cluster, read before the stop (read-only; refusals come here)."""
        pod = f"{plan.sts}-0"
        if facts.replicas == 0 or not pod_ready(self.kube.get("Pod", plan.namespace, pod)):
            raise Refused(
                f"{plan.namespace}/{plan.sts} does not run (replicas: {facts.replicas}, pod {pod} not ready): "
                "pgleap reads the live cluster before it stops it",
                f"start it (kubectl -n {plan.namespace} scale statefulset {plan.sts} --replicas=1) and wait "
                "until it is ready, then run pgleap again",
            )
        ctx = HookContext(self.kube, plan, plan.namespace, plan.sts, pod, plan.container, self.log)
        return preflight(ctx, images, pgdata=facts.pgdata, scripts=scripts)

    def read_statefulset(self, plan: KubePlan) -> dict[str, Any] | None:
        """The live read StatefulSet of a plan (None without one)."""
        return self.kube.get("StatefulSet", plan.namespace, plan.read_sts) if plan.read_sts else None

    # -- state --------------------------------------------------------------------------------

    def _set_phase(self, plan: KubePlan, operation: str, phase: str, out: Outcome) -> None:
        self.kube.patch(
            "ConfigMap",
            plan.namespace,
            render.state_cm_name(plan.sts),
            {
                "data": {
                    "operation": operation,
                    "phase": phase,
                    "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
            },
        )
        out.phase = phase
        self.log(f"{operation}: {phase}")
        kube_interrupted.checkpoint(operation, phase)  # Ctrl-C/SIGTERM stop here, the phase recorded

    # -- upgrade ------------------------------------------------------------------------------

    def upgrade(
        self,
        namespace: str,
        name: str,
        target_image: str,
        *,
        scripts: Mapping[str, str],
        job_env: dict[str, str] | None = None,
        mode: str = "link",
        snapshot: bool | None = None,
        overrides: guard.GuardOverrides = guard.GuardOverrides(),
        patch_retention: bool = True,
        post_upgrade: PostUpgradeHook | None = None,
        keep_readers: bool = False,
        standby_probe: StandbyProbe | None = None,
        preflight: PreflightHook | None = None,
        auto_restore: bool = True,
    ) -> Outcome:
        """Upgrade the StatefulSet's database to `target_image`, or say it is already done.

        `auto_restore`: a failure before the new cluster starts puts the old StatefulSet back
        (toolkit/kube/restore.py)."""
        state = self.read_state(namespace, name)
        if state is not None:
            if (
                state.operation == "upgrade"
                and state.phase == "done"
                and state.plan.new_image == target_image
            ):
                return Outcome(
                    "upgrade", "done", unchanged=[f"{namespace}/{name} already upgraded to {target_image}"]
                )
            raise Refused(
                f"a pgleap {state.operation} of {namespace}/{name} is recorded at phase {state.phase!r} "
                f"({state.plan.old_image} → {state.plan.new_image})",
                "continue it with `pgleap resume sts NAME`, undo it with `pgleap rollback sts NAME`, "
                "or clear it with `pgleap finalize sts NAME`",
            )
        sts = self.read_sts(namespace, name)
        if kube_probe.running_image(sts) == target_image:
            return Outcome("upgrade", "done", unchanged=[f"{namespace}/{name} already runs {target_image}"])
        images = self.probe(sts, target_image, scripts)
        facts = self.inspect(namespace, name, sts, major=images[0].major if images else None)
        topo, read, read_facts = self.topology(namespace, name, sts, facts)
        plan, warnings = self._plan_from(
            facts,
            target_image,
            topology=topo,
            read_facts=read_facts,
            keep_readers=keep_readers,
            job_env=job_env,
            mode=mode,
            snapshot=snapshot,
            overrides=overrides,
            patch_retention=patch_retention,
            images=images,
        )
        if preflight is not None and images is not None:
            plan = self.read_live(plan, facts, images, scripts, preflight)
        original = sts
        read = read if plan.read_sts else None
        out = Outcome("upgrade", "recorded", notes=list(warnings))
        if render.masked_left(render.mask_secrets(original)):
            out.notes.append(
                "the StatefulSet holds a literal secret (e.g. POSTGRES_PASSWORD): the state ConfigMap "
                "stores it masked and pgleap takes it from the live StatefulSet; move it into a Secret"
            )
        lease = self._lease(namespace, name, "upgrade")
        cm = render.state_configmap(plan, original, operation="upgrade", phase="recorded", read_sts=read)
        cm["metadata"]["annotations"].update(lease.annotation)  # created held: the create is atomic
        self.kube.create(cm)
        out.changed.append(f"recorded state in ConfigMap {render.state_cm_name(name)}")
        state = State(
            "upgrade",
            "recorded",
            plan,
            render.clean_object(original),
            render.clean_object(read) if read else None,
        )
        try:
            return self._run_upgrade(state, scripts, post_upgrade, out, standby_probe)
        except PgleapError as exc:
            if auto_restore:
                kube_restore.restore_after_failure(self, namespace, name, scripts, exc)
            raise
        finally:
            lease.release()

    def _lease(self, namespace: str, name: str, operation: str) -> Lease:
        return Lease(self.kube, namespace, render.state_cm_name(name), operation, log=self.log)

    def _held(self, namespace: str, name: str, operation: str, run: Callable[[], Outcome]) -> Outcome:
        """`run` while this process holds the StatefulSet (refused while another run does)."""
        lease = self._lease(namespace, name, operation)
        lease.acquire()
        try:
            return run()
        finally:
            lease.release()

    def _check_against_job(self, state: State) -> None:
        """The upgrade Job this run started (immutable) must match the plan read back: the
        ConfigMap's digest can be recomputed by whoever edits it, the Job cannot be edited."""
        plan = state.plan
        name = render.job_name(plan.sts, "upgrade")
        job = self.kube.get("Job", plan.namespace, name)
        if (
            job is None
            or ((job.get("metadata") or {}).get("annotations") or {}).get(render.ANN_RUN) != plan.run_id
        ):
            return
        if _job_shape(job) != _job_shape(render.upgrade_job(plan, state.original, "upgrade")):
            raise Refused(
                f"Job {name} no longer matches the recorded plan (images or env differ)",
                f"the state ConfigMap {render.state_cm_name(plan.sts)} was edited; restore it from your "
                "records, or look at the Job and decide by hand",
            )

    def _run_upgrade(
        self,
        state: State,
        scripts: Mapping[str, str],
        hook: PostUpgradeHook | None,
        out: Outcome,
        standby_probe: StandbyProbe | None = None,
    ) -> Outcome:
        plan = state.plan
        steps: dict[str, Callable[[], None]] = {
            "retention": lambda: self._step_retention(plan, out),
            "replicas-stopped": lambda: self._step_replicas_stop(plan, out),
            "stopped": lambda: self._step_stop(plan, out),
            "snapshotted": lambda: self._step_snapshot(plan, out),
            "upgraded": lambda: self._step_job(plan, state.original, "upgrade", scripts, out),
            "switched": lambda: self._step_switch(plan, state.original, out),
            "started": lambda: self.step_ready(plan, out),
            "verified": lambda: self._step_hook(plan, hook or no_post_upgrade, out),
            "reseeded": lambda: self._step_reseed(state, scripts, out),
            "replicas-started": lambda: self._step_replicas_start(state, out),
            "streaming": lambda: self._step_streaming(plan, standby_probe, out),
            "done": lambda: None,
        }
        start = UPGRADE_PHASES.index(state.phase) + 1
        for phase in UPGRADE_PHASES[start:]:
            began = self.kube.clock()
            steps[phase]()
            out.seconds[phase] = round(self.kube.clock() - began, 2)
            self._set_phase(plan, "upgrade", phase, out)
        out.notes.append(
            f"old data kept on the volume: `pgleap finalize sts {plan.sts}` removes it, "
            f"`pgleap rollback sts {plan.sts}` goes back"
        )
        return out

    def _step_retention(self, plan: KubePlan, out: Outcome) -> None:
        """Set the claim retention policy to Retain so scaling to 0 keeps the PVC (the new
        StatefulSet gets the user's policy back)."""
        if not plan.patch_retention:
            out.unchanged.append("retention policy already keeps PVCs")
            return
        self._ensure_retain(plan, self.read_sts(plan.namespace, plan.sts), out)

    @staticmethod
    def _claims(plan: KubePlan) -> list[str]:
        """The PVCs of `plan.sts` that hold a database: ordinal 0's, and the standbys' when they are
        ordinals of the same StatefulSet (a replica view of the plan lists the read StatefulSet's)."""
        rp = plan.replicas
        claims = [plan.data_pvc]
        if rp is not None and rp.sts == plan.sts:
            claims += [sb.pvc for sb in rp.standbys if sb.pvc not in claims]
        if rp is not None and plan.read_sts == plan.sts:  # a replica view: only the standbys' claims
            claims = [sb.pvc for sb in rp.standbys]
        return claims

    def _pods(self, plan: KubePlan, count: int | None = None) -> list[str]:
        rp = plan.replicas
        n = count if count is not None else (rp.count if rp is not None and rp.sts == plan.sts else 1)
        return [f"{plan.sts}-{i}" for i in range(max(n, 1))]

    def _ensure_retain(self, plan: KubePlan, sts: Mapping[str, Any], out: Outcome) -> None:
        """Patch a Delete retention policy to Retain and wait until the PVCs have no owner to die with."""
        policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenScaled", "Retain") == "Retain" and policy.get("whenDeleted", "Retain") == "Retain":
            out.unchanged.append(f"retention policy of {plan.sts} keeps PVCs")
        else:
            self.kube.patch(
                "StatefulSet",
                plan.namespace,
                plan.sts,
                {
                    "spec": {
                        "persistentVolumeClaimRetentionPolicy": {
                            "whenScaled": "Retain",
                            "whenDeleted": "Retain",
                        }
                    }
                },
            )
            out.changed.append(f"set persistentVolumeClaimRetentionPolicy of {plan.sts} to Retain for now")

        claims = self._claims(plan)

        def released() -> bool | None:
            for claim in claims:
                pvc = self.kube.get("PersistentVolumeClaim", plan.namespace, claim)
                if pvc is None:
                    raise PgleapError(f"PVC {claim} disappeared", "restore it from a backup or snapshot")
                refs = (pvc.get("metadata") or {}).get("ownerReferences") or []
                if [r for r in refs if r.get("kind") in ("Pod", "StatefulSet")]:
                    return None
            return True

        self.kube.wait(
            f"PVC {', '.join(claims)} to lose its owner references",
            released,
            timeout=self.t.retention,
            interval=self.t.poll,
        )

    def _step_stop(self, plan: KubePlan, out: Outcome) -> None:
        """Scale to 0 and wait until the pod is gone (its grace period plus a margin)."""
        sts = self.kube.get("StatefulSet", plan.namespace, plan.sts)
        if sts is None:
            raise PgleapError(
                f"StatefulSet {plan.sts} vanished before it was stopped", "run `pgleap rollback`"
            )
        if sts["spec"].get("replicas", 1) != 0:
            self.kube.patch("StatefulSet", plan.namespace, plan.sts, {"spec": {"replicas": 0}})
            out.changed.append(f"scaled {plan.sts} to 0")
        else:
            out.unchanged.append(f"{plan.sts} already scaled to 0")
        self._wait_pod_gone(plan)

    def _wait_pod_gone(self, plan: KubePlan, count: int | None = None, pods: list[str] | None = None) -> None:
        pods = pods if pods is not None else self._pods(plan, count)

        def gone() -> bool | None:
            return True if all(self.kube.get("Pod", plan.namespace, p) is None for p in pods) else None

        self.kube.wait(
            f"pod {', '.join(pods)} to stop",
            gone,
            timeout=plan.termination_grace_seconds + self.t.stop_margin,
            interval=self.t.poll,
        )

    def _step_snapshot(self, plan: KubePlan, out: Outcome) -> None:
        """Snapshot the stopped volume and wait until the snapshot can be restored from."""
        if not plan.snapshot:
            out.unchanged.append("no snapshot planned")
            return
        if self.kube.get("VolumeSnapshot", plan.namespace, plan.snapshot) is None:
            snap = render.volume_snapshot(plan)
            assert snap is not None
            self.kube.create(snap)
            out.changed.append(f"created VolumeSnapshot {plan.snapshot}")
        else:
            out.unchanged.append(f"VolumeSnapshot {plan.snapshot} exists")

        def ready() -> bool | None:
            snap = self.kube.get("VolumeSnapshot", plan.namespace, plan.snapshot or "") or {}
            status = snap.get("status") or {}
            if status.get("error"):
                raise PgleapError(
                    f"VolumeSnapshot {plan.snapshot} failed: {status['error'].get('message')}",
                    "the database is stopped and untouched: fix the snapshot class, or rollback and "
                    "rerun with --no-snapshot",
                )
            return True if status.get("readyToUse") else None

        self.kube.wait(
            f"VolumeSnapshot {plan.snapshot} to be ready",
            ready,
            timeout=self.t.snapshot,
            interval=self.t.poll,
        )

    def ensure_scripts(self, plan: KubePlan, scripts: Mapping[str, str], out: Outcome) -> None:
        wanted = render.scripts_configmap(plan, scripts)
        live = self.kube.get("ConfigMap", plan.namespace, wanted["metadata"]["name"])
        if live is None:
            self.kube.create(wanted)
            out.changed.append(f"created ConfigMap {wanted['metadata']['name']}")
        elif (live.get("data") or {}) != wanted["data"]:
            self.kube.replace(wanted)
            out.changed.append(f"updated ConfigMap {wanted['metadata']['name']}")
        else:
            out.unchanged.append(f"ConfigMap {wanted['metadata']['name']} up to date")

    def _step_job(
        self,
        plan: KubePlan,
        original: Mapping[str, Any],
        action: str,
        scripts: Mapping[str, str],
        out: Outcome,
        node_terms: tuple[dict[str, Any], ...] | None = None,
    ) -> None:
        """Run the Job for `action` to its end; a failed Job is reported, never retried."""
        name = render.job_name(plan.sts, action)
        self._ensure_job(
            plan,
            name,
            lambda: render.upgrade_job(plan, original, action, node_terms=node_terms),
            scripts,
            out,
        )
        self.finish_job(plan, name, ("collect", "upgrade"), "a failed pg_upgrade is not retried")

    def _ensure_job(
        self,
        plan: KubePlan,
        name: str,
        build: Callable[[], dict[str, Any]],
        scripts: Mapping[str, str],
        out: Outcome,
    ) -> None:
        """Create the Job unless this run already did (a Job of another run is refused)."""
        job = self.kube.get("Job", plan.namespace, name)
        if job is not None:
            run = ((job.get("metadata") or {}).get("annotations") or {}).get(render.ANN_RUN)
            if run != plan.run_id:
                raise Refused(
                    f"Job {name} belongs to another pgleap run ({run})",
                    f"look at its logs, then `kubectl -n {plan.namespace} delete job {name}`",
                )
            if _job_shape(job) != _job_shape(build()):
                # the Job is the cluster's own record of what this run started: a plan read back
                # from the ConfigMap must still describe it (images, commands, env)
                raise Refused(
                    f"Job {name} no longer matches the recorded plan (images or env differ)",
                    f"the state ConfigMap {render.state_cm_name(plan.sts)} was edited; restore it from your "
                    "records, or look at the Job and decide by hand",
                )
            out.unchanged.append(f"Job {name} exists")
            return
        self.ensure_scripts(plan, scripts, out)
        self.kube.create(build())
        out.changed.append(f"created Job {name}")

    def finish_job(self, plan: KubePlan, name: str, containers: tuple[str, ...], why: str) -> None:
        """Follow the Job's logs to its end; PgleapError when it failed."""
        self._follow_job(plan, name, containers)
        job = self.kube.get("Job", plan.namespace, name) or {}
        if _job_result(job) != "Complete":
            raise PgleapError(
                f"Job {name} failed; the data is kept as it was left",
                f"read `kubectl -n {plan.namespace} logs job/{name} --all-containers`; then "
                f"`pgleap rollback sts {plan.sts}` ({why})",
            )

    def _follow_job(
        self,
        plan: KubePlan,
        name: str,
        containers: tuple[str, ...] = ("collect", "upgrade"),
        sink: list[str] | None = None,
    ) -> None:
        """Stream each container's log as it runs (into `sink` too), then wait for the Job's end."""
        ns = plan.namespace

        def job_pod() -> dict[str, Any] | None:
            job = self.kube.get("Job", ns, name)
            if job is None:
                raise PgleapError(f"Job {name} was deleted while it ran", "rerun the command")
            pods = self.kube.list("Pod", ns, label_selector=f"job-name={name}")
            if pods:
                return pods[-1]
            return {} if _job_result(job) else None  # finished without a pod left: nothing to stream

        pod = self.kube.wait(f"a pod of Job {name}", job_pod, timeout=self.t.ready, interval=self.t.poll)
        if pod:
            pod_name = pod["metadata"]["name"]
            for container in containers:
                if self._wait_container_started(ns, pod_name, container):
                    for line in self.kube.logs(ns, pod_name, container, follow=True):
                        self.log(f"[{container}] {line}")
                        if sink is not None:
                            sink.append(line)
        self.kube.wait(
            f"Job {name} to finish",
            lambda: _job_result(self.kube.get("Job", ns, name) or {"status": {"conditions": []}}),
            timeout=self.t.job,
            interval=self.t.poll,
        )

    def _wait_container_started(self, ns: str, pod: str, container: str) -> bool:
        def started() -> bool | None:
            p = self.kube.get("Pod", ns, pod)
            if p is None:
                return False
            status = p.get("status") or {}
            for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                if cs.get("name") == container:
                    state = cs.get("state") or {}
                    if "running" in state or "terminated" in state:
                        return True
            return False if status.get("phase") in ("Failed", "Succeeded") else None

        return self.kube.wait(
            f"container {container} of {pod}", started, timeout=self.t.job, interval=self.t.poll
        )

    def _step_switch(self, plan: KubePlan, original: Mapping[str, Any], out: Outcome) -> None:
        """Orphan-delete the old StatefulSet (claim templates are immutable) and create the new one."""
        self._replace_sts(plan, lambda: render.primary_statefulset(plan, original), out)

    def _replace_sts(self, plan: KubePlan, build: Callable[[], dict[str, Any]], out: Outcome) -> None:
        """Orphan-delete the live StatefulSet `plan.sts` unless this run made it, then create `build()`."""
        live = self.kube.get("StatefulSet", plan.namespace, plan.sts)
        if _ours(live, plan):
            out.unchanged.append(f"StatefulSet {plan.sts} already on {plan.new_image}")
            return
        if live is not None:
            self.kube.delete("StatefulSet", plan.namespace, plan.sts, propagation="Orphan")
            out.changed.append(f"deleted the old StatefulSet {plan.sts} (Orphan: PVCs kept)")
            self.kube.wait(
                f"old StatefulSet {plan.sts} to be gone",
                lambda: True if self.kube.get("StatefulSet", plan.namespace, plan.sts) is None else None,
                timeout=self.t.delete,
                interval=self.t.poll,
            )
        new = build()
        _refuse_masked(new)
        self.kube.create(new)
        out.changed.append(
            f"created StatefulSet {plan.sts} on {plan.new_image} (replicas: {new['spec'].get('replicas', 1)})"
        )

    def step_ready(self, plan: KubePlan, out: Outcome) -> None:
        def ready() -> bool | None:
            return True if _is_ready(self.kube.get("StatefulSet", plan.namespace, plan.sts), 1) else None

        self.kube.wait(
            f"StatefulSet {plan.sts} to be ready", ready, timeout=self.t.ready, interval=self.t.poll
        )
        out.unchanged.append(f"StatefulSet {plan.sts} ready")

    def _step_hook(self, plan: KubePlan, hook: PostUpgradeHook, out: Outcome) -> None:
        container = plan.container
        hook(HookContext(self.kube, plan, plan.namespace, plan.sts, f"{plan.sts}-0", container, self.log))
        out.changed.append("ran the post-upgrade hook")

    # -- standbys -----------------------------------------------------------------------------

    def _scale_down(self, view: KubePlan, live: Mapping[str, Any], count: int, out: Outcome) -> None:
        """Scale `view.sts` to 0 and wait until its `count` pods are gone."""
        if live["spec"].get("replicas", 1) != 0:
            self.kube.patch("StatefulSet", view.namespace, view.sts, {"spec": {"replicas": 0}})
            out.changed.append(f"scaled {view.sts} to 0")
        else:
            out.unchanged.append(f"{view.sts} already scaled to 0")
        self._wait_pod_gone(view, count)

    def _step_replicas_stop(self, plan: KubePlan, out: Outcome) -> None:
        """Stop the read StatefulSet before the primary (keep it with --keep-readers)."""
        rp = plan.replicas
        if rp is None:
            out.unchanged.append("no standbys")
            return
        if plan.same_sts_standbys:
            out.unchanged.append(
                f"standbys {', '.join(sb.pod for sb in rp.standbys)} stop with the primary (ordinals of {plan.sts})"
            )
            return
        view = plan.replica_view()
        live = self.kube.get("StatefulSet", plan.namespace, rp.sts)
        if live is None:
            raise PgleapError(
                f"read StatefulSet {rp.sts} vanished before it was stopped", "run `pgleap rollback`"
            )
        if view.patch_retention:
            self._ensure_retain(view, live, out)
        if rp.keep_readers:
            out.notes.append(
                f"--keep-readers: {rp.sts} keeps serving STALE reads (PostgreSQL {plan.old_major} data, no new "
                "writes) until its re-seed starts"
            )
            return
        self._scale_down(view, live, rp.count, out)

    def _step_reseed(self, state: State, scripts: Mapping[str, str], out: Outcome) -> None:
        """pg_basebackup each standby's volume from the verified new primary, then put it in place."""
        plan, rp = state.plan, state.plan.replicas
        if rp is None:
            out.unchanged.append("no standbys to re-seed")
            return
        view = plan.replica_view()
        if plan.read_sts:
            live = self.kube.get("StatefulSet", plan.namespace, rp.sts)
            if live is not None and not _ours(live, plan):
                self._scale_down(view, live, rp.count, out)  # stale readers stop here with --keep-readers
            holder = state.read_original
        else:
            # the new StatefulSet runs ordinal 0 only
            self._wait_pod_gone(plan, pods=[sb.pod for sb in rp.standbys])
            holder = state.original
        assert holder is not None
        names = []
        for sb in rp.standbys:
            name = render.replica_job_name(sb.pod, "reseed")
            self._ensure_job(plan, name, lambda sb=sb: render.replica_job(plan, holder, sb), scripts, out)
            names.append(name)
        for name in names:  # the Jobs run side by side; follow them one after the other
            self.finish_job(plan, name, ("standby",), "the old standby is kept on its volume")

    def _step_replicas_start(self, state: State, out: Outcome) -> None:
        """Run the standbys on the new image: scale the primary's StatefulSet to N, or replace the read one."""
        plan, rp = state.plan, state.plan.replicas
        if rp is None:
            out.unchanged.append("no standbys to start")
            return
        if plan.same_sts_standbys:
            live = self.read_sts(plan.namespace, plan.sts)
            if live["spec"].get("replicas", 1) != rp.count:
                self.kube.patch("StatefulSet", plan.namespace, plan.sts, {"spec": {"replicas": rp.count}})
                out.changed.append(f"scaled {plan.sts} to {rp.count}")
            else:
                out.unchanged.append(f"{plan.sts} runs {rp.count} replicas")
        else:
            assert state.read_original is not None
            read = state.read_original
            self._replace_sts(plan.replica_view(), lambda: render.replica_statefulset(plan, read), out)

        def ready() -> bool | None:
            return True if _is_ready(self.kube.get("StatefulSet", plan.namespace, rp.sts), rp.count) else None

        self.kube.wait(
            f"StatefulSet {rp.sts} to have {rp.count} ready replicas",
            ready,
            timeout=self.t.ready,
            interval=self.t.poll,
        )

    def _step_streaming(self, plan: KubePlan, probe: StandbyProbe | None, out: Outcome) -> None:
        """Each standby pod is Ready; with a probe, each slot streams from the new primary."""
        rp = plan.replicas
        if rp is None:
            out.unchanged.append("no standbys to check")
            return
        for sb in rp.standbys:
            self.kube.wait(
                f"standby {sb.pod} to be ready",
                lambda sb=sb: True if pod_ready(self.kube.get("Pod", plan.namespace, sb.pod)) else None,
                timeout=self.t.ready,
                interval=self.t.poll,
            )
        slots = tuple(sb.slot for sb in rp.standbys)
        if probe is None:
            out.notes.append(
                f"standbys {', '.join(sb.pod for sb in rp.standbys)} are Ready; replication not checked (no probe)"
            )
            return
        ctx = HookContext(
            self.kube, plan, plan.namespace, plan.sts, f"{plan.sts}-0", plan.container, self.log
        )

        def streaming() -> bool | None:
            return True if set(slots) <= set(probe(ctx, slots)) else None

        self.kube.wait(
            f"standbys to stream on slots {', '.join(slots)}",
            streaming,
            timeout=self.t.ready,
            interval=self.t.poll,
        )
        out.unchanged.append(f"standbys stream from the new primary: {', '.join(slots)}")

    # -- resume -------------------------------------------------------------------------------

    def resume(
        self,
        namespace: str,
        name: str,
        *,
        scripts: Mapping[str, str],
        post_upgrade: PostUpgradeHook | None = None,
        standby_probe: StandbyProbe | None = None,
    ) -> Outcome:
        """Continue the recorded operation from the phase after the last one completed."""
        state = self.read_state(namespace, name)
        if state is None:
            raise Refused(
                f"no pgleap run recorded for {namespace}/{name}", "start one with `pgleap upgrade sts`"
            )
        out = Outcome(state.operation, state.phase)
        self._check_against_job(state)
        if state.operation == "upgrade":
            if state.phase == "done":
                out.unchanged.append("upgrade already done")
                return out
            return self._held(
                namespace,
                name,
                "resume",
                lambda: self._run_upgrade(state, scripts, post_upgrade, out, standby_probe),
            )
        if state.operation == "rollback":
            return self._held(namespace, name, "resume", lambda: self._run_rollback(state, scripts, out))
        return self._held(namespace, name, "resume", lambda: self._run_finalize(state, scripts, out))

    # -- rollback -----------------------------------------------------------------------------

    def rollback(
        self,
        namespace: str,
        name: str,
        *,
        scripts: Mapping[str, str],
        confirm: Callable[[str], bool] | None = None,
    ) -> Outcome:
        """Put the original StatefulSet and the old data directory back.

        A new rollback first asks upgrade.sh's read-only rollback-check on the volume
        (toolkit.kube.decide): refused, nothing changed, when it says no;
        `confirm(loss)` accepts what a copy/clone rollback drops (None: refused).
        """
        state = self.read_state(namespace, name)
        if state is None:
            raise Refused(f"no pgleap run recorded for {namespace}/{name}: nothing to roll back", "")
        if state.operation == "finalize":
            raise Refused(
                "finalize has started: the old data directory is being removed", "run `pgleap resume`"
            )
        out = Outcome("rollback", state.phase)
        self._check_against_job(state)
        if state.operation == "rollback" and state.phase == "rolled-back":
            out.unchanged.append("already rolled back")
            return out

        def run() -> Outcome:
            if state.operation == "rollback":
                return self._run_rollback(state, scripts, out)  # decided when it started
            kube_decide.decide(self, state, scripts, out, confirm)
            self._set_phase(state.plan, "rollback", "rollback-started", out)
            return self._run_rollback(
                State("rollback", "rollback-started", state.plan, state.original, state.read_original),
                scripts,
                out,
            )

        return self._held(namespace, name, "rollback", run)

    def _run_rollback(self, state: State, scripts: Mapping[str, str], out: Outcome) -> Outcome:
        plan, original = state.plan, state.original
        steps: dict[str, Callable[[], None]] = {
            "stopped-new": lambda: self._rb_stop(plan, out),
            "restored-data": lambda: self._rb_data(plan, original, scripts, out),
            "restored-replicas": lambda: self._rb_replicas(state, scripts, out),
            "restored-sts": lambda: self._rb_sts(plan, original, out, state.read_original),
            "rolled-back": lambda: self._rb_ready(plan, original, out, state.read_original),
        }
        for phase in ROLLBACK_PHASES[ROLLBACK_PHASES.index(state.phase) + 1 :]:
            steps[phase]()
            self._set_phase(plan, "rollback", phase, out)
        out.notes.append(f"`pgleap finalize sts {plan.sts}` removes pgleap's ConfigMaps and Jobs")
        return out

    def _rb_stop(self, plan: KubePlan, out: Outcome) -> None:
        """Let a running upgrade Job end, then stop whichever StatefulSet runs."""
        job = self.kube.get("Job", plan.namespace, render.job_name(plan.sts, "upgrade"))
        if job is not None and _job_result(job) is None:
            self.log("waiting for the running upgrade Job to end before rolling back")
            self._follow_job(plan, render.job_name(plan.sts, "upgrade"))
        for sb in plan.replicas.standbys if plan.replicas else ():
            name = render.replica_job_name(sb.pod, "reseed")
            job = self.kube.get("Job", plan.namespace, name)
            if job is not None and _job_result(job) is None:
                self.log(f"waiting for the running re-seed Job {name} to end before rolling back")
                self._follow_job(plan, name, ("standby",))
        if plan.read_sts:
            self._rb_stop_sts(plan.replica_view(), out)
        self._rb_stop_sts(plan, out)

    def _rb_stop_sts(self, plan: KubePlan, out: Outcome) -> None:
        """Stop `plan.sts` (whichever runs) and delete it if this run made it; PVCs kept."""
        live = self.kube.get("StatefulSet", plan.namespace, plan.sts)
        if live is None:
            out.unchanged.append(f"no StatefulSet {plan.sts} running")
            self._wait_pod_gone(plan)
            return
        # The new StatefulSet carries the user's retention policy: a Delete policy would take the
        # PVC with it when scaled down or deleted.
        self._ensure_retain(plan, live, out)
        if live["spec"].get("replicas", 1) != 0:
            self.kube.patch("StatefulSet", plan.namespace, plan.sts, {"spec": {"replicas": 0}})
            out.changed.append(f"scaled {plan.sts} to 0")
        self._wait_pod_gone(plan)
        if _ours(live, plan):
            self.kube.delete("StatefulSet", plan.namespace, plan.sts, propagation="Orphan")
            out.changed.append(f"deleted the new StatefulSet {plan.sts} (Orphan: PVCs kept)")
            self.kube.wait(
                f"new StatefulSet {plan.sts} to be gone",
                lambda: True if self.kube.get("StatefulSet", plan.namespace, plan.sts) is None else None,
                timeout=self.t.delete,
                interval=self.t.poll,
            )

    def _rb_data(
        self, plan: KubePlan, original: Mapping[str, Any], scripts: Mapping[str, str], out: Outcome
    ) -> None:
        """Run the rollback Job when the upgrade Job ran (otherwise the volume was never touched)."""
        if self.kube.get("Job", plan.namespace, render.job_name(plan.sts, "upgrade")) is None:
            out.unchanged.append("the upgrade Job never ran: the data directory is untouched")
            return
        try:
            self._step_job(plan, original, "rollback", scripts, out)
        except PgleapError as exc:
            if plan.snapshot:
                exc.hint += (
                    f"; the VolumeSnapshot {plan.snapshot} holds the volume as it was before the upgrade: "
                    f"restore PVC {plan.data_pvc} from it (dataSource kind VolumeSnapshot)"
                )
            raise

    def _rb_replicas(self, state: State, scripts: Mapping[str, str], out: Outcome) -> None:
        """upgrade.sh rollback on each standby's volume that a re-seed Job touched."""
        plan, rp = state.plan, state.plan.replicas
        if rp is None:
            out.unchanged.append("no standbys")
            return
        holder = state.read_original if plan.read_sts else state.original
        assert holder is not None
        for sb in rp.standbys:
            if self.kube.get("Job", plan.namespace, render.replica_job_name(sb.pod, "reseed")) is None:
                out.unchanged.append(f"standby {sb.pod} was never re-seeded: its volume is untouched")
                continue
            name = render.replica_job_name(sb.pod, "rollback")
            self._ensure_job(
                plan, name, lambda sb=sb: render.replica_job(plan, holder, sb, "rollback"), scripts, out
            )
            self.finish_job(
                plan, name, ("standby",), f"the old standby data of {sb.pod} is in its .pgleap folder"
            )

    def _rb_sts(
        self,
        plan: KubePlan,
        original: Mapping[str, Any],
        out: Outcome,
        read_original: Mapping[str, Any] | None = None,
    ) -> None:
        """Recreate the original StatefulSet(s), or scale them back up if they were never replaced."""
        self._rb_restore_sts(plan, original, out)  # the primary first: the standbys connect to it
        if plan.read_sts and read_original is not None:
            self._rb_restore_sts(plan.replica_view(), read_original, out)

    def _rb_restore_sts(self, plan: KubePlan, original: Mapping[str, Any], out: Outcome) -> None:
        live = self.kube.get("StatefulSet", plan.namespace, plan.sts)
        want = render.clean_object(original)
        if live is None:
            _refuse_masked(want)
            self.kube.create(want)
            out.changed.append(f"recreated the original StatefulSet {plan.sts} ({plan.old_image})")
            return
        patch: dict[str, Any] = {}
        if live["spec"].get("replicas") != want["spec"].get("replicas", 1):
            patch["replicas"] = want["spec"].get("replicas", 1)
        policy = want["spec"].get("persistentVolumeClaimRetentionPolicy")
        if policy and live["spec"].get("persistentVolumeClaimRetentionPolicy") != policy:
            patch["persistentVolumeClaimRetentionPolicy"] = policy
        if patch:
            self.kube.patch("StatefulSet", plan.namespace, plan.sts, {"spec": patch})
            out.changed.append(f"restored {', '.join(sorted(patch))} of StatefulSet {plan.sts}")
        else:
            out.unchanged.append(f"StatefulSet {plan.sts} already as it was")

    def _rb_ready(
        self,
        plan: KubePlan,
        original: Mapping[str, Any],
        out: Outcome,
        read_original: Mapping[str, Any] | None = None,
    ) -> None:
        if plan.read_sts and read_original is not None:
            self._rb_ready(plan, original, out)
            self._rb_ready(plan.replica_view(), read_original, out)
            return
        replicas = original["spec"].get("replicas", 1)
        self.kube.wait(
            f"StatefulSet {plan.sts} to be ready",
            lambda: (
                True if _is_ready(self.kube.get("StatefulSet", plan.namespace, plan.sts), replicas) else None
            ),
            timeout=self.t.ready,
            interval=self.t.poll,
        )
        out.unchanged.append(f"StatefulSet {plan.sts} ready on {plan.old_image}")

    # -- finalize -----------------------------------------------------------------------------

    def finalize(self, namespace: str, name: str, *, scripts: Mapping[str, str]) -> Outcome:
        """Remove the old data directory (after an upgrade) and pgleap's Jobs and ConfigMaps."""
        state = self.read_state(namespace, name)
        if state is None:
            return Outcome("finalize", "finalized", unchanged=[f"nothing recorded for {namespace}/{name}"])
        out = Outcome("finalize", state.phase)
        if state.operation == "upgrade" and state.phase != "done":
            raise Refused(
                f"the upgrade of {namespace}/{name} stopped at phase {state.phase!r}",
                "finish it with `pgleap resume sts NAME` or undo it with `pgleap rollback sts NAME` first",
            )
        if state.operation == "rollback" and state.phase != "rolled-back":
            raise Refused(
                f"the rollback of {namespace}/{name} stopped at {state.phase!r}", "run `pgleap resume`"
            )

        def run() -> Outcome:
            if state.operation == "rollback":
                self._cleanup(state.plan, out)  # the old cluster is the live one: keep its data
                out.phase = "finalized"
                return out
            current = state
            if state.operation == "upgrade":
                self._set_phase(state.plan, "finalize", "finalize-started", out)
                current = State(
                    "finalize", "finalize-started", state.plan, state.original, state.read_original
                )
            return self._run_finalize(current, scripts, out)

        return self._held(namespace, name, "finalize", run)

    def _run_finalize(self, state: State, scripts: Mapping[str, str], out: Outcome) -> Outcome:
        plan = state.plan
        if state.phase == "finalize-started":
            pin = kube_decide.pin_to_pod(self, plan, f"{plan.sts}-0")
            self._step_job(plan, state.original, "finalize", scripts, out, node_terms=pin)
            self._set_phase(plan, "finalize", "finalized-data", out)
        if state.phase in ("finalize-started", "finalized-data"):
            self._finalize_replicas(state, scripts, out)
            self._set_phase(plan, "finalize", "finalized-replicas", out)
        self._cleanup(plan, out)
        out.phase = "finalized"
        if plan.snapshot:
            out.notes.append(f"VolumeSnapshot {plan.snapshot} kept: delete it when you no longer need it")
        return out

    def _finalize_replicas(self, state: State, scripts: Mapping[str, str], out: Outcome) -> None:
        """upgrade.sh finalize on each standby's volume (its old data and pgleap's folder)."""
        plan, rp = state.plan, state.plan.replicas
        if rp is None:
            out.unchanged.append("no standbys to finalize")
            return
        holder = state.read_original if plan.read_sts else state.original
        assert holder is not None
        for sb in rp.standbys:
            pod = self.kube.get("Pod", plan.namespace, sb.pod)
            node = ((pod or {}).get("spec") or {}).get("nodeName")
            # RWO: the Job must share the node of the running standby to mount its volume.
            pin = (
                ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]},)
                if node
                else None
            )
            name = render.replica_job_name(sb.pod, "finalize")
            self._ensure_job(
                plan,
                name,
                lambda sb=sb, pin=pin: render.replica_job(plan, holder, sb, "finalize", node_terms=pin),
                scripts,
                out,
            )
            self.finish_job(plan, name, ("standby",), "finalize is safe to run again")

    def _cleanup(self, plan: KubePlan, out: Outcome) -> None:
        """Delete pgleap's Jobs and ConfigMaps; the state ConfigMap goes last."""
        actions = ("upgrade", "rollback", "finalize", kube_decide.CHECK_ACTION)
        names = [render.job_name(plan.sts, a) for a in actions]
        for name in names + render.replica_job_names(plan):
            if self.kube.delete("Job", plan.namespace, name, propagation="Background"):
                out.changed.append(f"deleted Job {name}")
        for cm in (render.scripts_cm_name(plan.sts), render.state_cm_name(plan.sts)):
            if self.kube.delete("ConfigMap", plan.namespace, cm):
                out.changed.append(f"deleted ConfigMap {cm}")


def _refuse_masked(sts: Mapping[str, Any]) -> None:
    """Never create a StatefulSet with a masked secret in place of the user's value."""
    masked = render.masked_left(sts)
    if masked:
        raise PgleapError(
            f"cannot recreate StatefulSet {sts['metadata']['name']}: the literal value of "
            f"{', '.join(masked)} is not stored by pgleap and no live StatefulSet holds it any more",
            "re-apply your own StatefulSet manifest (it has the value), then `pgleap resume` or "
            "`pgleap rollback`; better, move the value into a Secret",
        )


def _job_shape(job: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """What a Job runs: per container its name, image, command and env."""
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [
        (
            c.get("name"),
            c.get("image"),
            c.get("command"),
            sorted(json.dumps(e, sort_keys=True) for e in c.get("env") or []),
        )
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])
    ]
