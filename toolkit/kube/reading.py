"""Read the cluster and plan from it (read-only): the StatefulSet and its surroundings, the
probed images, the live primary, the recorded state and a status summary."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from toolkit.core.facts import ImageFacts
from toolkit.core.plan import check_downtime_mode
from toolkit.errors import PgleapError, Refused
from toolkit.kube import guard, objects, secret_mask
from toolkit.kube import probe as kube_probe
from toolkit.kube.api import Forbidden, Kube
from toolkit.kube.facts import StsFacts, gather
from toolkit.kube.image_ref import parse_image
from toolkit.kube.lease import holder_of
from toolkit.kube.model import (
    DataProof,
    HookContext,
    PreflightHook,
    State,
    Timeouts,
    is_ready,
    job_result,
    pod_ready,
)
from toolkit.kube.plan import KubePlan, make_plan
from toolkit.kube.stored import check_stored
from toolkit.kube.topology import Topology, detect, read_sts_names

logger = logging.getLogger(__name__)


class Reader:
    """Reading and planning half of KubeRuntime (toolkit/kube/runtime.py)."""

    def __init__(
        self,
        kube: Kube,
        *,
        log: Callable[[str], None] | None = None,
        timeouts: Timeouts = Timeouts(),
        proof: DataProof | None = None,
    ) -> None:
        self.kube = kube
        self.proof = proof  # the before/after fingerprint of --downtime verified (kube/fingerprint.py)
        self.log = log or logger.info
        self.t = timeouts

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
        cm = self.kube.get("ConfigMap", namespace, objects.state_cm_name(name))
        if cm is None:
            return None
        data = cm.get("data") or {}
        cm_name = objects.state_cm_name(name)
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
        if secret_mask.masked_left(original):
            original = secret_mask.unmask_secrets(original, self.kube.get("StatefulSet", namespace, name))
        if read_original and plan.read_sts and secret_mask.masked_left(read_original):
            live = self.kube.get("StatefulSet", namespace, plan.read_sts)
            read_original = secret_mask.unmask_secrets(read_original, live)
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
            "ready": is_ready(sts, (sts or {}).get("spec", {}).get("replicas", 1)) if sts else False,
            "operation": state.operation if state else None,
            "phase": state.phase if state else None,
        }
        if state:
            out["held_by"] = state.holder
            out["run_id"] = state.plan.run_id
            out["from"], out["to"] = state.plan.core.old_image, state.plan.core.new_image
            jobs = {}
            for action in ("upgrade", "rollback", "finalize"):
                job = self.kube.get("Job", namespace, objects.job_name(name, action))
                if job:
                    jobs[action] = job_result(job) or "Running"
            for job_name in objects.replica_job_names(state.plan):
                job = self.kube.get("Job", namespace, job_name)
                if job:
                    jobs[job_name] = job_result(job) or "Running"
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
        downtime: str = "verified",
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
            downtime=downtime,
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
        downtime: str = "verified",
    ) -> tuple[KubePlan, list[str]]:
        _check_downtime(facts, downtime)
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
        core = dataclasses.replace(plan.core, downtime=downtime)
        if images is not None:  # the post-upgrade hook rebuilds only what these changes reorder
            old, new = images
            core = dataclasses.replace(core, glibc=(old.glibc, new.glibc), icu=(old.icu, new.icu))
        return dataclasses.replace(plan, core=core), warnings

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


def _check_downtime(facts: StsFacts, downtime: str) -> None:
    """--downtime minimal mounts the claim in a prepare Job beside the running pod: not with RWOP."""
    check_downtime_mode(downtime)
    claim = facts.data_claim_facts
    if downtime == "minimal" and claim is not None and "ReadWriteOncePod" in (claim.access_modes or ()):
        raise Refused(
            f"--downtime minimal prepares the new cluster in a Job that mounts {claim.name} beside the "
            "running pod, and its access mode ReadWriteOncePod allows one pod only",
            "use the default --downtime verified (initdb then runs inside the window), or change the "
            "claim to ReadWriteOnce",
        )
