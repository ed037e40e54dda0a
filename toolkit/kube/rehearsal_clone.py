"""Making the rehearsal's copy of production's data: a pg_basebackup Job from the running server
(checked for replication access first) or a PVC restored from a VolumeSnapshot, then sealed by
clone.sh. Production's objects are only read."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from toolkit.core.progress import Phase
from toolkit.errors import PgleapError, Refused
from toolkit.kube import rehearsal_manifests as kube_rehearsal
from toolkit.kube.model import Outcome, pod_ready
from toolkit.kube.rehearsal_model import RehearsalHooks, RehearsalRun, source_host
from toolkit.kube.runtime import KubeRuntime


class RehearsalClone:
    """The clone steps of KubeRehearsal."""

    rt: KubeRuntime
    kube: Any
    _phase: Callable[..., AbstractContextManager[Phase]]

    def _basebackup_source(self, run: RehearsalRun, hooks: RehearsalHooks) -> dict[str, Any]:
        """Where and as whom the clone Job logs in; the server's replication settings checked first."""
        facts = run.facts
        pod_name = facts.pod_name
        pod = self.kube.get("Pod", facts.namespace, pod_name)
        if not pod_ready(pod):
            raise Refused(
                f"pod {facts.namespace}/{pod_name} is not running and ready: pg_basebackup copies a running server",
                "start it, or rehearse with --from-snapshot",
            )
        user, secret = kube_rehearsal.replication_login(
            run.sts, facts, run.plan.job_env.get("PGLEAP_SUPERUSER")
        )
        with self._phase("check replication access", "role, wal_level, wal senders, pg_hba.conf") as ph:
            problems = hooks.replication_problems(run.context(pod_name, facts.name))
            ph.detail = "ok" if not problems else f"{len(problems)} missing"
        if problems:
            raise Refused(
                "pg_basebackup cannot copy the running server: " + "; ".join(problems),
                problems[-1].split(": ", 1)[-1] + "; or rehearse with --from-snapshot",
            )
        host = source_host(run, pod)
        if not host:
            raise Refused(f"pod {pod_name} has no IP yet", "wait until it runs, then rehearse again")
        return {"source_host": host, "user": user, "password_secret": secret}

    def _run_clone_job(self, run: RehearsalRun, what: str, **source: Any) -> None:
        """clone.sh in a Job on the clone PVC: the copy (with `source`) and the seal."""
        job = kube_rehearsal.clone_job(run.plan, run.sts, **source)
        name = job["metadata"]["name"]
        with self._phase(what, f"Job {name}"):
            self.rt.ensure_scripts(run.view, run.scripts, Outcome("rehearse", "clone"))
            self.kube.create(job)
            self.rt.finish_job(
                run.view,
                name,
                ("clone",),
                "production is untouched; the rehearsal's objects are removed unless --keep",
            )

    def _clone_from_snapshot(self, run: RehearsalRun, klass: str) -> None:
        snap = kube_rehearsal.source_snapshot(run.facts, klass, run.plan.run_id)
        snap_name = snap["metadata"]["name"]
        with self._phase("snapshot of the running volume", f"VolumeSnapshot {snap_name} ({klass})"):
            self.kube.create(snap)
            self.kube.wait(
                f"VolumeSnapshot {snap_name} to be ready",
                lambda: self._snapshot_ready(run.facts.namespace, snap_name),
                timeout=self.rt.t.snapshot,
                interval=self.rt.t.poll,
            )
        self.kube.create(
            kube_rehearsal.clone_pvc(run.sts, run.facts, snapshot=snap_name, run_id=run.plan.run_id)
        )
        self._run_clone_job(run, "restore the snapshot and seal the clone")

    def _snapshot_ready(self, namespace: str, name: str) -> bool | None:
        status = (self.kube.get("VolumeSnapshot", namespace, name) or {}).get("status") or {}
        if status.get("error"):
            raise PgleapError(
                f"VolumeSnapshot {name} failed: {status['error'].get('message')}",
                "production is untouched; check the snapshot class, or rehearse without --from-snapshot",
            )
        return True if status.get("readyToUse") else None
