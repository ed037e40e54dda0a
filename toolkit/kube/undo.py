"""Undo and finish: rollback (decided first by upgrade.sh rollback-check) and finalize,
which removes the old data directory and pgleap's Jobs and ConfigMaps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from toolkit.errors import PgleapError, Refused
from toolkit.kube import decide as kube_decide
from toolkit.kube import objects, render
from toolkit.kube.model import (
    ROLLBACK_PHASES,
    Outcome,
    State,
    is_ready,
    job_result,
    ours,
    refuse_masked,
)
from toolkit.kube.ops import Ops
from toolkit.kube.plan import KubePlan


class Undoer(Ops):
    """Rollback and finalize of KubeRuntime."""

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
        store = self._phase_store(plan, "rollback", state.phase, out)
        self._run_phases(store, [(p, steps[p]) for p in ROLLBACK_PHASES[1:]], out)
        out.notes.append(f"`pgleap finalize sts {plan.sts}` removes pgleap's ConfigMaps and Jobs")
        return out

    def _rb_stop(self, plan: KubePlan, out: Outcome) -> None:
        """Let a running upgrade Job end, then stop whichever StatefulSet runs."""
        for action in ("serve-old", "serve-new"):  # a run stopped while it read a served cluster
            name = objects.job_name(plan.sts, action)
            job = self.kube.get("Job", plan.namespace, name)
            if job is not None and job_result(job) is None:
                self.log(f"stopping the cluster Job {name} serves before rolling back")
                for pod in self.kube.list("Pod", plan.namespace, label_selector=f"job-name={name}"):
                    try:
                        self.kube.exec(
                            plan.namespace, pod["metadata"]["name"], "upgrade", ["sh", "-c", "kill -INT 1"]
                        )
                    except PgleapError as exc:
                        self.log(f"could not stop it ({exc.message}); waiting for the Job to end")
                self._follow_job(plan, name)
        for action in ("prepare", "upgrade"):
            job = self.kube.get("Job", plan.namespace, objects.job_name(plan.sts, action))
            if job is not None and job_result(job) is None:
                self.log(f"waiting for the running {action} Job to end before rolling back")
                self._follow_job(plan, objects.job_name(plan.sts, action))
        for sb in plan.replicas.standbys if plan.replicas else ():
            name = objects.replica_job_name(sb.pod, "reseed")
            job = self.kube.get("Job", plan.namespace, name)
            if job is not None and job_result(job) is None:
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
        if ours(live, plan):
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
        """Run the rollback Job when the upgrade Job ran; when only a prepare Job (--downtime minimal)
        did, the cleanup Job removes what it staged (old binaries, the initdb-ed new cluster)."""
        if self.kube.get("Job", plan.namespace, objects.job_name(plan.sts, "upgrade")) is None:
            if self.kube.get("Job", plan.namespace, objects.job_name(plan.sts, "prepare")) is None:
                out.unchanged.append("the upgrade Job never ran: the data directory is untouched")
                return
            self._step_job(plan, original, "cleanup", scripts, out)
            out.changed.append("removed what the prepare Job staged on the volume (the old data untouched)")
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
        plan, holder = state.plan, self._holder(state)
        for sb in self._standbys(state, out, "no standbys"):
            if self.kube.get("Job", plan.namespace, objects.replica_job_name(sb.pod, "reseed")) is None:
                out.unchanged.append(f"standby {sb.pod} was never re-seeded: its volume is untouched")
                continue
            name = objects.replica_job_name(sb.pod, "rollback")
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
        want = objects.clean_object(original)
        if live is None:
            refuse_masked(want)
            self.kube.create(want)
            out.changed.append(f"recreated the original StatefulSet {plan.sts} ({plan.core.old_image})")
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
                True if is_ready(self.kube.get("StatefulSet", plan.namespace, plan.sts), replicas) else None
            ),
            timeout=self.t.ready,
            interval=self.t.poll,
        )
        out.unchanged.append(f"StatefulSet {plan.sts} ready on {plan.core.old_image}")

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

        def data() -> None:
            pin = kube_decide.pin_to_pod(self, plan, f"{plan.sts}-0")
            self._step_job(plan, state.original, "finalize", scripts, out, node_terms=pin)

        steps = [
            ("finalized-data", data),
            ("finalized-replicas", lambda: self._finalize_replicas(state, scripts, out)),
        ]  # then the cleanup deletes the state ConfigMap: "finalized" is never recorded
        self._run_phases(self._phase_store(plan, "finalize", state.phase, out), steps, out)
        self._cleanup(plan, out)
        out.phase = "finalized"
        if plan.snapshot:
            out.notes.append(f"VolumeSnapshot {plan.snapshot} kept: delete it when you no longer need it")
        return out

    def _finalize_replicas(self, state: State, scripts: Mapping[str, str], out: Outcome) -> None:
        """upgrade.sh finalize on each standby's volume (its old data and pgleap's folder)."""
        plan, holder = state.plan, self._holder(state)
        for sb in self._standbys(state, out, "no standbys to finalize"):
            pod = self.kube.get("Pod", plan.namespace, sb.pod)
            node = ((pod or {}).get("spec") or {}).get("nodeName")
            # RWO: the Job must share the node of the running standby to mount its volume.
            pin = (
                ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]},)
                if node
                else None
            )
            name = objects.replica_job_name(sb.pod, "finalize")
            self._ensure_job(
                plan,
                name,
                lambda sb=sb, pin=pin: render.replica_job(plan, holder, sb, "finalize", node_terms=pin),
                scripts,
                out,
            )
            self.finish_job(plan, name, ("standby",), "finalize is safe to run again")

    @staticmethod
    def _standbys(state: State, out: Outcome, none: str) -> list[Any]:
        """The run's standbys; `none` said when it has none."""
        if state.plan.replicas is None:
            out.unchanged.append(none)
            return []
        return list(state.plan.replicas.standbys)

    @staticmethod
    def _holder(state: State) -> Mapping[str, Any]:
        """The StatefulSet the standbys' Jobs are rendered from (the read one when there is one)."""
        return (state.read_original if state.plan.read_sts else state.original) or state.original

    def _cleanup(self, plan: KubePlan, out: Outcome) -> None:
        """Delete pgleap's Jobs and ConfigMaps; the state ConfigMap goes last."""
        actions = (
            "prepare",
            "upgrade",
            "serve-old",
            "serve-new",
            "rollback",
            "cleanup",  # after a --downtime minimal run restored before its upgrade Job
            "finalize",
            kube_decide.CHECK_ACTION,
        )
        names = [objects.job_name(plan.sts, a) for a in actions]
        for name in names + objects.replica_job_names(plan):
            if self.kube.delete("Job", plan.namespace, name, propagation="Background"):
                out.changed.append(f"deleted Job {name}")
        for cm in (objects.scripts_cm_name(plan.sts), objects.state_cm_name(plan.sts)):
            if self.kube.delete("ConfigMap", plan.namespace, cm):
                out.changed.append(f"deleted ConfigMap {cm}")
