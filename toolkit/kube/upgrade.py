"""The upgrade phases on Kubernetes: retention, stop, snapshot, the upgrade Job, the switch
to the new StatefulSet, the post-upgrade hook; each phase resumes where it stopped."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from toolkit.errors import PgleapError, Refused
from toolkit.kube import decide as kube_decide
from toolkit.kube import guard, new_sts, objects, render, secret_mask
from toolkit.kube import probe as kube_probe
from toolkit.kube import restore as kube_restore
from toolkit.kube.fingerprint import Prover
from toolkit.kube.lease import Lease
from toolkit.kube.model import (
    UPGRADE_PHASES,
    HookContext,
    Outcome,
    PostUpgradeHook,
    PreflightHook,
    StandbyProbe,
    State,
    no_post_upgrade,
)
from toolkit.kube.plan import KubePlan
from toolkit.kube.standbys import Standbys


class Upgrader(Standbys, Prover):
    """The upgrade phases of KubeRuntime."""

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
        downtime: str = "verified",
    ) -> Outcome:
        """Upgrade the StatefulSet's database to `target_image`, or say it is already done.

        `auto_restore`: a failure before the new cluster starts puts the old StatefulSet back
        (toolkit/kube/restore.py)."""
        done = self._recorded_upgrade(namespace, name, target_image)
        if done is not None:
            return done
        sts = self.read_sts(namespace, name)
        if kube_probe.running_image(sts) == target_image:
            return Outcome("upgrade", "done", unchanged=[f"{namespace}/{name} already runs {target_image}"])
        plan, original, warnings = self.plan(
            namespace,
            name,
            target_image,
            job_env=job_env,
            mode=mode,
            snapshot=snapshot,
            overrides=overrides,
            patch_retention=patch_retention,
            keep_readers=keep_readers,
            scripts=scripts,
            preflight=preflight,
            downtime=downtime,
        )
        state, out, lease = self._record_upgrade(namespace, name, plan, original, warnings)
        try:
            return self._run_upgrade(state, scripts, post_upgrade, out, standby_probe)
        except PgleapError as exc:
            if auto_restore:
                kube_restore.restore_after_failure(self, namespace, name, scripts, exc)
            raise
        finally:
            lease.release()

    def _recorded_upgrade(self, namespace: str, name: str, target_image: str) -> Outcome | None:
        """A recorded operation decides before anything is read: done to this image is an
        unchanged outcome, anything else is refused with the commands that move it on."""
        state = self.read_state(namespace, name)
        if state is None:
            return None
        if (
            state.operation == "upgrade"
            and state.phase == "done"
            and state.plan.core.new_image == target_image
        ):
            return Outcome(
                "upgrade", "done", unchanged=[f"{namespace}/{name} already upgraded to {target_image}"]
            )
        raise Refused(
            f"a pgleap {state.operation} of {namespace}/{name} is recorded at phase {state.phase!r} "
            f"({state.plan.core.old_image} → {state.plan.core.new_image})",
            "continue it with `pgleap resume sts NAME`, undo it with `pgleap rollback sts NAME`, "
            "or clear it with `pgleap finalize sts NAME`",
        )

    def _record_upgrade(
        self,
        namespace: str,
        name: str,
        plan: KubePlan,
        original: dict[str, Any],
        warnings: list[str],
    ) -> tuple[State, Outcome, Lease]:
        """Create the state ConfigMap already holding the lease (one atomic create), so a
        second pgleap sees the run from its first recorded moment."""
        read = self.read_statefulset(plan)
        out = Outcome("upgrade", "recorded", notes=list(warnings))
        if secret_mask.masked_left(secret_mask.mask_secrets(original)):
            out.notes.append(
                "the StatefulSet holds a literal secret (e.g. POSTGRES_PASSWORD): the state ConfigMap "
                "stores it masked and pgleap takes it from the live StatefulSet; move it into a Secret"
            )
        lease = self._lease(namespace, name, "upgrade")
        cm = render.state_configmap(plan, original, operation="upgrade", phase="recorded", read_sts=read)
        cm["metadata"]["annotations"].update(lease.annotation)  # created held: the create is atomic
        self.kube.create(cm)
        out.changed.append(f"recorded state in ConfigMap {objects.state_cm_name(name)}")
        state = State(
            "upgrade",
            "recorded",
            plan,
            objects.clean_object(original),
            objects.clean_object(read) if read else None,
        )
        return state, out, lease

    def _run_upgrade(
        self,
        state: State,
        scripts: Mapping[str, str],
        hook: PostUpgradeHook | None,
        out: Outcome,
        standby_probe: StandbyProbe | None = None,
        accept: tuple[str, ...] = (),
    ) -> Outcome:
        plan = state.plan
        steps: dict[str, Callable[[], None]] = {
            "retention": lambda: self._step_retention(plan, out),
            "prepared": lambda: self._step_prepare(plan, state.original, scripts, out),
            "replicas-stopped": lambda: self._step_replicas_stop(plan, out),
            "stopped": lambda: self._step_stop(plan, out),
            "snapshotted": lambda: self._step_snapshot(plan, out),
            "fingerprinted": lambda: self._step_fingerprint(plan, state.original, scripts, out),
            "upgraded": lambda: self._step_job(plan, state.original, "upgrade", scripts, out),
            "compared": lambda: self._step_compare(
                plan, state.original, scripts, out, accept="fingerprint" in accept
            ),
            "proved": lambda: self._step_prove(state, scripts, out, "fingerprint" in accept),
            "switched": lambda: self._step_switch(plan, state.original, out),
            "started": lambda: self.step_ready(plan, out),
            "verified": lambda: self._step_hook(plan, hook or no_post_upgrade, out),
            "reseeded": lambda: self._step_reseed(state, scripts, out),
            "replicas-started": lambda: self._step_replicas_start(state, out),
            "streaming": lambda: self._step_streaming(plan, standby_probe, out),
            "done": lambda: None,
        }
        store = self._phase_store(plan, "upgrade", state.phase, out)
        self._run_phases(store, [(p, steps[p]) for p in UPGRADE_PHASES[1:]], out, timed=True)
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

    def _step_prepare(
        self, plan: KubePlan, original: Mapping[str, Any], scripts: Mapping[str, str], out: Outcome
    ) -> None:
        """--downtime minimal: collect the old binaries and initdb the new cluster on the volume while
        the old pod serves (a prepare Job on its node: RWO), so the window holds only stop,
        pg_upgrade, the switch and the first Ready."""
        if plan.core.downtime != "minimal":
            out.unchanged.append(
                "nothing prepared ahead (--downtime verified: initdb runs in the upgrade Job)"
            )
            return
        pin = kube_decide.pin_to_pod(self, plan, f"{plan.sts}-0")
        self._step_job(plan, original, "prepare", scripts, out, node_terms=pin)

    def _step_switch(self, plan: KubePlan, original: Mapping[str, Any], out: Outcome) -> None:
        """Orphan-delete the old StatefulSet (claim templates are immutable) and create the new one."""
        if plan.core.mode == "link" and plan.core.downtime == "minimal":
            self.log(
                "point of no return: the new cluster starts now; with --link the old cluster can no "
                "longer be used after it (rollback is refused once it ran)"
            )
        self._replace_sts(plan, lambda: new_sts.primary_statefulset(plan, original), out)

    def _step_hook(self, plan: KubePlan, hook: PostUpgradeHook, out: Outcome) -> None:
        if self.proves(plan):
            out.unchanged.append("post-upgrade already ran before the switch (proved)")
            return
        container = plan.container
        hook(HookContext(self.kube, plan, plan.namespace, plan.sts, f"{plan.sts}-0", container, self.log))
        out.changed.append("ran the post-upgrade hook")
