"""The writes every operation is made of: the state phase, the hold, retention, scaling,
Jobs (create once, follow, judge) and replacing a StatefulSet; each checks before it acts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from toolkit.engine.phases import Step, run_phases
from toolkit.errors import PgleapError, Refused
from toolkit.kube import interrupted as kube_interrupted
from toolkit.kube import objects, render
from toolkit.kube.lease import Lease
from toolkit.kube.model import (
    FINALIZE_PHASES,
    ROLLBACK_PHASES,
    UPGRADE_PHASES,
    Outcome,
    State,
    is_ready,
    job_result,
    job_shape,
    ours,
    refuse_masked,
)
from toolkit.kube.phase_store import ConfigMapStore
from toolkit.kube.plan import KubePlan
from toolkit.kube.reading import Reader


class Ops(Reader):
    """The shared write steps of KubeRuntime."""

    def _set_phase(self, plan: KubePlan, operation: str, phase: str, out: Outcome) -> None:
        """Record one phase outside a phase table (an operation's first), then its stop point."""
        self._phase_store(plan, operation, phase, out).record(phase)
        kube_interrupted.checkpoint(operation, phase)  # Ctrl-C/SIGTERM stop here, the phase recorded

    def _phase_store(self, plan: KubePlan, operation: str, reached: str, out: Outcome) -> ConfigMapStore:
        """The state ConfigMap as the engine's PhaseStore for `operation`, at phase `reached`."""

        def recorded(phase: str) -> None:
            out.phase = phase
            self.log(f"{operation}: {phase}")

        phases = {"upgrade": UPGRADE_PHASES, "rollback": ROLLBACK_PHASES, "finalize": FINALIZE_PHASES}
        return ConfigMapStore(
            self.kube, plan.namespace, plan.sts, operation, phases[operation], reached, on_record=recorded
        )

    def _run_phases(
        self, store: ConfigMapStore, table: Iterable[tuple[str, Step]], out: Outcome, *, timed: bool = False
    ) -> None:
        """The engine's phase runner (engine/phases.py) on this runtime's clock; after each phase its
        fault point and, for an upgrade, the Ctrl-C stop (kube/interrupted.py names the next step);
        `timed` puts each phase's seconds into `out.seconds`."""
        run_phases(
            table,
            store,
            seconds=(lambda phase, s: out.seconds.__setitem__(phase, round(s, 2))) if timed else None,
            checkpoint=lambda phase: kube_interrupted.checkpoint(store.operation, phase),
            clock=self.kube.clock,
        )

    def _lease(self, namespace: str, name: str, operation: str) -> Lease:
        return Lease(self.kube, namespace, objects.state_cm_name(name), operation, log=self.log)

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
        name = objects.job_name(plan.sts, "upgrade")
        job = self.kube.get("Job", plan.namespace, name)
        if (
            job is None
            or ((job.get("metadata") or {}).get("annotations") or {}).get(objects.ANN_RUN) != plan.run_id
        ):
            return
        if job_shape(job) != job_shape(render.upgrade_job(plan, state.original, "upgrade")):
            raise Refused(
                f"Job {name} no longer matches the recorded plan (images or env differ)",
                f"the state ConfigMap {objects.state_cm_name(plan.sts)} was edited; restore it from your "
                "records, or look at the Job and decide by hand",
            )

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
        name = objects.job_name(plan.sts, action)
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
            run = ((job.get("metadata") or {}).get("annotations") or {}).get(objects.ANN_RUN)
            if run != plan.run_id:
                raise Refused(
                    f"Job {name} belongs to another pgleap run ({run})",
                    f"look at its logs, then `kubectl -n {plan.namespace} delete job {name}`",
                )
            if job_shape(job) != job_shape(build()):
                # the Job is the cluster's own record of what this run started: a plan read back
                # from the ConfigMap must still describe it (images, commands, env)
                raise Refused(
                    f"Job {name} no longer matches the recorded plan (images or env differ)",
                    f"the state ConfigMap {objects.state_cm_name(plan.sts)} was edited; restore it from your "
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
        if job_result(job) != "Complete":
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
            return {} if job_result(job) else None  # finished without a pod left: nothing to stream

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
            lambda: job_result(self.kube.get("Job", ns, name) or {"status": {"conditions": []}}),
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

    def _replace_sts(self, plan: KubePlan, build: Callable[[], dict[str, Any]], out: Outcome) -> None:
        """Orphan-delete the live StatefulSet `plan.sts` unless this run made it, then create `build()`."""
        live = self.kube.get("StatefulSet", plan.namespace, plan.sts)
        if ours(live, plan):
            out.unchanged.append(f"StatefulSet {plan.sts} already on {plan.core.new_image}")
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
        refuse_masked(new)
        self.kube.create(new)
        out.changed.append(
            f"created StatefulSet {plan.sts} on {plan.core.new_image} (replicas: {new['spec'].get('replicas', 1)})"
        )

    def step_ready(self, plan: KubePlan, out: Outcome) -> None:
        def ready() -> bool | None:
            return True if is_ready(self.kube.get("StatefulSet", plan.namespace, plan.sts), 1) else None

        self.kube.wait(
            f"StatefulSet {plan.sts} to be ready", ready, timeout=self.t.ready, interval=self.t.poll
        )
        out.unchanged.append(f"StatefulSet {plan.sts} ready")

    def _scale_down(self, view: KubePlan, live: Mapping[str, Any], count: int, out: Outcome) -> None:
        """Scale `view.sts` to 0 and wait until its `count` pods are gone."""
        if live["spec"].get("replicas", 1) != 0:
            self.kube.patch("StatefulSet", view.namespace, view.sts, {"spec": {"replicas": 0}})
            out.changed.append(f"scaled {view.sts} to 0")
        else:
            out.unchanged.append(f"{view.sts} already scaled to 0")
        self._wait_pod_gone(view, count)
