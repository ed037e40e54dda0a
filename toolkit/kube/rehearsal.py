"""`pgleap rehearse sts`: the real upgrade, on a clone of a StatefulSet, while production runs.

preflight (the same refusals a real run would meet, on the rehearsal StatefulSet)
-> clone production's data PVC into `<claim>-<NAME>-rehearsal-0`: a pg_basebackup Job
   from the running server (default), or a PVC restored from a VolumeSnapshot
   (`--from-snapshot`, no login needed)
-> start `<NAME>-rehearsal` on the old image (recovery makes the copy consistent)
-> fingerprint, then the ordinary upgrade flow on the rehearsal StatefulSet, whose hook
   compares the fingerprint right after pg_upgrade and runs the post-upgrade and health checks
-> a report with the time of every phase and the predicted downtime of the real run
-> keep the upgraded clone behind its own Service (`--keep`) or remove everything made.
Production's objects are only read: every write goes to an object carrying the
rehearsal's labels, which `remove` looks for before it deletes anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from toolkit.core.progress import Phase, Progress
from toolkit.errors import PgleapError, Refused, VerificationFailed
from toolkit.kube import guard, objects, render
from toolkit.kube import probe as kube_probe
from toolkit.kube import rehearsal_manifests as kube_rehearsal
from toolkit.kube.facts import gather
from toolkit.kube.image_ref import parse_image
from toolkit.kube.lease import Lease
from toolkit.kube.model import HookContext, Outcome, PostUpgradeHook
from toolkit.kube.plan import make_plan
from toolkit.kube.rehearsal_clone import RehearsalClone
from toolkit.kube.rehearsal_model import (
    RehearsalHooks,
    RehearsalRun,
    hook_report,
    predicted_downtime,
    proof_report,
    source_host,
    summary,
)
from toolkit.kube.rehearsal_removal import RehearsalRemoval
from toolkit.kube.runtime import KubeRuntime
from toolkit.kube.topology import detect

__all__ = ["KubeRehearsal", "RehearsalHooks"]


class KubeRehearsal(RehearsalClone, RehearsalRemoval):
    """Clone, upgrade the clone with the ordinary flow, report, clean up."""

    def __init__(self, runtime: KubeRuntime) -> None:
        self.rt = runtime
        self.kube = runtime.kube
        self.log = runtime.log
        self._progress = Progress(clock=runtime.kube.clock)  # the current rehearsal's phases

    # -- the run ----------------------------------------------------------------------------

    def rehearse(
        self,
        namespace: str,
        name: str,
        target_image: str,
        *,
        scripts: Mapping[str, str],
        hooks: RehearsalHooks,
        job_env: dict[str, str] | None = None,
        mode: str = "link",
        from_snapshot: bool = False,
        snapshot_class: str | None = None,
        keep: bool = False,
    ) -> dict[str, Any]:
        """Run the rehearsal; the result's `verdict` is go, or no-go with `reason`/`what_to_do`."""
        result: dict[str, Any] = {
            "source": f"{namespace}/{name}",
            "rehearsal": f"{namespace}/{kube_rehearsal.rehearsal_name(name)}",
            "target_image": target_image,
            "mode": mode,
            "clone": "snapshot" if from_snapshot else "pg_basebackup",
            "phases": [],
            "verdict": "no-go",
        }
        made_anything = False
        progress = self._progress = Progress(clock=self.kube.clock)
        # a run on production (upgrade, rollback…) and a rehearsal of it exclude each other
        lease = Lease(self.kube, namespace, objects.state_cm_name(name), "rehearse", log=self.log)
        try:
            lease.acquire()
            with self._phase("preflight", "the checks of a real run, on the rehearsal StatefulSet"):
                run = self._preflight(namespace, name, target_image, mode, job_env or {}, scripts, result)
                self._refuse_leftovers(namespace, name)
            if from_snapshot:
                klass = self._snapshot_class(run, snapshot_class)
                made_anything = True
                self._clone_from_snapshot(run, klass)
            else:
                source = self._basebackup_source(run, hooks)
                made_anything = True
                self.kube.create(
                    kube_rehearsal.clone_pvc(run.sts, run.facts, snapshot=None, run_id=run.plan.run_id)
                )
                self._run_clone_job(run, "clone (pg_basebackup)", **source)
            self._start_clone(run)
            self._upgrade_clone(run, target_image, job_env or {}, mode, hooks)
            result["predicted_downtime_seconds"], result["predicted_downtime_basis"] = predicted_downtime(
                progress.phase_rows(), from_snapshot
            )
            if keep:
                self._keep(run)
            result["verdict"] = "go"
            return result
        except PgleapError as exc:
            result.update(reason=exc.message, what_to_do=exc.hint, exit_code=exc.exit_code)
            return result
        finally:
            result["phases"] = progress.phase_rows()
            lease.release()
            if made_anything and not keep:
                result["removed"] = self.remove(namespace, name)
            elif made_anything and result["verdict"] != "go":
                result["kept_for_inspection"] = (
                    f"the rehearsal's objects are kept (--keep): `pgleap rehearse sts {name} --remove` "
                    "removes them"
                )

    def objects(
        self,
        namespace: str,
        name: str,
        target_image: str,
        *,
        scripts: Mapping[str, str],
        job_env: dict[str, str] | None = None,
        mode: str = "link",
        from_snapshot: bool = False,
        snapshot_class: str | None = None,
    ) -> list[dict[str, Any]]:
        """What a rehearsal would create first, read-only (`--dry-run`): the clone's objects and the
        rehearsal StatefulSet; its upgrade then creates what `plan sts` shows for a StatefulSet."""
        run = self._preflight(namespace, name, target_image, mode, job_env or {}, scripts, {})
        objs: list[dict[str, Any]] = []
        snap = None
        if from_snapshot:
            snap = kube_rehearsal.source_snapshot(
                run.facts, self._snapshot_class(run, snapshot_class), run.plan.run_id
            )
            objs.append(snap)
        objs.append(
            kube_rehearsal.clone_pvc(
                run.sts,
                run.facts,
                snapshot=snap["metadata"]["name"] if snap else None,
                run_id=run.plan.run_id,
            )
        )
        objs.append(render.scripts_configmap(run.view, scripts))
        if from_snapshot:
            objs.append(kube_rehearsal.clone_job(run.plan, run.sts))
        else:
            user, secret = kube_rehearsal.replication_login(
                run.sts, run.facts, run.plan.job_env.get("PGLEAP_SUPERUSER")
            )
            host = source_host(run, self.kube.get("Pod", namespace, run.facts.pod_name)) or run.facts.pod_name
            objs.append(
                kube_rehearsal.clone_job(
                    run.plan, run.sts, source_host=host, user=user, password_secret=secret
                )
            )
        objs.append(kube_rehearsal.rehearsal_statefulset(run.sts, run.facts))
        return objs

    @contextmanager
    def _phase(self, what: str, detail: str = "") -> Iterator[Phase]:
        """A phase of the rehearsal in the one progress model; a failed one stays in the report."""
        self.log(f"rehearsal: {what} {detail}".rstrip())
        with self._progress.timed(what, detail, keep_failed=True) as entry:
            yield entry

    # -- steps ------------------------------------------------------------------------------

    def _preflight(
        self,
        namespace: str,
        name: str,
        target_image: str,
        mode: str,
        job_env: dict[str, str],
        scripts: Mapping[str, str],
        result: dict[str, Any],
    ) -> RehearsalRun:
        """Production read and planned, after the guard has checked the rehearsal StatefulSet exactly
        as the upgrade of it will (majors, image family, layout, standby refusals)."""
        sts = self.rt.read_sts(namespace, name)
        images = self.rt.probe(sts, target_image, scripts)  # the images' own majors (kube_probe)
        major = images[0].major if images else None
        facts = self.rt.inspect(namespace, name, sts, major=major)
        copy_sts = kube_rehearsal.rehearsal_statefulset(sts, facts)
        copy_facts = gather(copy_sts, major=major)
        target = parse_image(target_image)
        checked: list[str] = []
        if images is not None:
            target = kube_probe.probed_target(target_image, images[1])
            checked = kube_probe.check_images(images[0], images[1], mode)
        result["warnings"] = checked + guard.check(
            copy_facts, target, patch_retention=False, live=False, topology=detect(copy_sts, copy_facts)
        )
        claim = facts.data_claim_facts
        if claim is None or not claim.exists:
            raise Refused(
                f"PVC {facts.data_pvc} of {facts.namespace}/{facts.name} does not exist: nothing to clone",
                "let the StatefulSet start once, or check the name",
            )
        # Production's owners (Argo CD, Helm, …) matter for the real run, not for the rehearsal.
        result["real_run_needs"] = [p.hint for p in guard.problems(facts, target, live=False) if p.owner]
        plan = make_plan(facts, target_image, mode=mode, snapshot=False, job_env=job_env, target=target)
        return RehearsalRun(sts, facts, plan, scripts, result, kube=self.kube, log=self.log)

    @staticmethod
    def _snapshot_class(run: RehearsalRun, given: str | None) -> str:
        """The VolumeSnapshotClass for --from-snapshot; refused when a snapshot cannot clone."""
        others = kube_rehearsal.other_claims_of_postgres(run.sts, run.facts)
        if others:
            raise Refused(
                f"postgres in {run.facts.namespace}/{run.facts.name} also mounts {', '.join(others)}: "
                "snapshots of separate volumes are not taken at the same instant, so the copy may not recover",
                "rehearse without --from-snapshot (pg_basebackup copies a consistent cluster)",
            )
        klass = given or next(iter(run.facts.snapshot_classes), None)
        if klass is None:
            raise Refused(
                f"no VolumeSnapshotClass fits the CSI driver of {run.plan.data_pvc}",
                "rehearse without --from-snapshot (a pg_basebackup Job clones the running server), "
                "or name one with --snapshot-class",
            )
        return klass

    def _refuse_leftovers(self, namespace: str, name: str) -> None:
        """A rehearsal that was kept or interrupted must be removed first (it may be in use)."""
        rname = kube_rehearsal.rehearsal_name(name)
        for kind, obj_name in self._names(namespace, name):
            live = self.kube.get(kind, namespace, obj_name)
            if live is None:
                continue
            if self._ours(live, name, rname):
                raise Refused(
                    f"a rehearsal of {namespace}/{name} exists ({kind} {obj_name}), kept or interrupted",
                    f"remove it with `pgleap rehearse sts {name} --remove`, then rehearse again",
                )
            raise Refused(
                f"{kind} {namespace}/{obj_name} exists and pgleap did not make it",
                "rename or delete it; the rehearsal needs that name",
            )

    def _start_clone(self, run: RehearsalRun) -> None:
        """Create the rehearsal StatefulSet on the OLD image: its pod recovers the copy."""
        with self._phase("start the clone (recovery)", f"{run.rname}-0 on {run.plan.core.old_image}"):
            self.kube.create(kube_rehearsal.rehearsal_statefulset(run.sts, run.facts))
            self.rt.step_ready(run.view, Outcome("rehearse", "start"))

    def _upgrade_clone(
        self, run: RehearsalRun, target_image: str, job_env: dict[str, str], mode: str, hooks: RehearsalHooks
    ) -> None:
        """The ordinary upgrade flow on the rehearsal StatefulSet. With the runtime's data proof
        (`pgleap` always gives one) it proves as a real run does: serve-old fingerprints the stopped
        clone, serve-new compares right after pg_upgrade, then runs the post-upgrade and compares the
        user data again (`proved`), all before the switch. Without one, the hook after the switch
        checks the fingerprint against one taken on the running clone."""
        if self.rt.proves(run.view):
            self._prove_clone(run, target_image, job_env, mode)
            return
        result = run.result
        with self._phase("fingerprint before", f"{run.rname}-0 on the old major") as ph:
            before = hooks.fingerprint(run.context(f"{run.rname}-0", run.rname))
            ph.detail = summary(before)
        done: dict[str, Any] = {}

        def post_upgrade(ctx: HookContext) -> None:
            differences = hooks.compare(before, hooks.fingerprint(ctx))
            result["fingerprint"] = {"identical": not differences, "differences": differences[:20]}
            if differences:
                raise VerificationFailed(
                    f"the upgraded clone differs from the copy: {'; '.join(differences[:5])}",
                    "do not upgrade production; report it with the rehearsal's output",
                )
            try:
                done.update(hooks.post_upgrade(ctx) or {})
            except VerificationFailed as exc:
                done.update(getattr(exc, "done", {}))
                raise
            # Again after the extension updates and trap repairs: what an update did to stored values.
            differences = (hooks.compare_user or hooks.compare)(before, hooks.fingerprint(ctx))
            result["fingerprint_after_extensions"] = {
                "identical": not differences,
                "differences": differences[:20],
            }
            if differences:
                raise VerificationFailed(
                    f"user data of the clone reads differently after the extension updates: "
                    f"{'; '.join(differences[:5])}",
                    "do not upgrade production; report it with the rehearsal's output",
                )

        try:
            outcome = self._upgrade(run, target_image, job_env, mode, post_upgrade=post_upgrade)
        finally:
            result.update(hook_report(done, before))
        self._record_upgrade_phases(outcome)

    def _prove_clone(self, run: RehearsalRun, target_image: str, job_env: dict[str, str], mode: str) -> None:
        """The upgrade's own `fingerprinted`, `compared` and `proved` phases on the clone
        (kube/fingerprint.py's Prover): the report takes what they read and decided."""
        result = run.result
        seen = self.rt.proof_seen()
        seen.clear()
        try:
            outcome = self._upgrade(run, target_image, job_env, mode)
        except VerificationFailed as exc:
            raise VerificationFailed(
                f"the upgraded clone failed the data proof: {exc.message}",
                "do not upgrade production; report it with the rehearsal's output",
            ) from exc
        finally:
            result.update(proof_report(seen))
        if "proved" not in seen:  # a rehearsal must not go on a proof it did not make
            raise VerificationFailed(
                "the rehearsal's upgrade did not prove the clone (no comparison after the post-upgrade)",
                "do not upgrade production; report it with the rehearsal's output",
            )
        self._record_upgrade_phases(outcome)

    def _upgrade(
        self, run: RehearsalRun, target_image: str, job_env: dict[str, str], mode: str,
        post_upgrade: PostUpgradeHook | None = None,
    ) -> Outcome:  # fmt: skip
        """The ordinary upgrade flow on the rehearsal StatefulSet: no snapshot (a clone), its
        retention policy left alone (its PVC is the rehearsal's own)."""
        return self.rt.upgrade(
            run.facts.namespace, run.rname, target_image, scripts=run.scripts, job_env=job_env, mode=mode,
            snapshot=False, patch_retention=False, post_upgrade=post_upgrade,
        )  # fmt: skip

    def _record_upgrade_phases(self, outcome: Outcome) -> None:
        """The ordinary flow's phases in the rehearsal's report, downtime marked by its model."""
        for phase in outcome.phases:
            if phase.name != "done":
                self._progress.record(f"upgrade: {phase.name}", phase.seconds, in_downtime=phase.in_downtime)

    def _keep(self, run: RehearsalRun) -> None:
        service = kube_rehearsal.rehearsal_service(run.facts)
        self.kube.create(service)
        ns, name = run.facts.namespace, service["metadata"]["name"]
        run.result["kept"] = {
            "statefulset": f"{ns}/{name}",
            "service": f"{ns}/{name}",
            "connect": f"kubectl -n {ns} port-forward svc/{name} 15432:5432",
            "remove": f"pgleap rehearse sts {run.facts.name} -n {ns} --remove",
        }
