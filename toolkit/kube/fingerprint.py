"""The before/after data proof on Kubernetes (`--downtime verified`, the default), as on Docker.

After the StatefulSet stopped, a `serve-old` Job runs the old cluster read-only on the pod's
loopback (upgrade.sh), and the engine's fingerprint (toolkit/kube/hooks.py, the same definition
Docker uses) is read through a port-forward and kept in the state ConfigMap. Right after
pg_upgrade, a `serve-new` Job serves the new cluster the same way and the two are compared,
before the new StatefulSet exists: nothing is opened to clients until they are equal. Then
(`proved`, as Docker's) a second serve-new Job runs the engine's post-upgrade (extension updates,
trap repairs, reindex, statistics) on that cluster and the user data is compared again. A
difference stops the run with exit 4; the StatefulSet stays scaled to 0 and the old data stays
on the volume (upgrade.sh's rollback puts it back in copy/clone mode).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable, Mapping
from typing import Any

from toolkit.errors import PgleapError, VerificationFailed
from toolkit.kube import render
from toolkit.kube.model import DataProof, HookContext, Outcome, State, job_result
from toolkit.kube.ops import Ops
from toolkit.kube.plan import KubePlan

BEFORE_KEY = "fingerprint-before.json.gz"  # gzip + base64: a ConfigMap holds at most 1 MiB


def pack(fp: Mapping[str, Any]) -> str:
    return base64.b64encode(gzip.compress(json.dumps(fp, sort_keys=True).encode())).decode()


def unpack(text: str) -> dict[str, Any]:
    return json.loads(gzip.decompress(base64.b64decode(text)))


class Prover(Ops):
    """The `fingerprinted`, `compared` and `proved` phases of KubeRuntime (no-ops without a DataProof)."""

    proof: DataProof | None

    def proof_seen(self) -> dict[str, Any]:
        """What this runtime's proof read and decided in its run (a rehearsal reports it): `before`,
        `compared` (differences after pg_upgrade), `done` (the post-upgrade's result) and `proved`
        (user-data differences after it); a key is missing when its step did not run."""
        return self.__dict__.setdefault("_proof_seen", {})

    def _step_fingerprint(
        self, plan: KubePlan, original: Mapping[str, Any], scripts: Mapping[str, str], out: Outcome
    ) -> None:
        if self.proof is None or plan.core.downtime == "minimal":
            out.unchanged.append("no data proof asked (--downtime minimal or no engine): not fingerprinted")
            return
        fp = self._serve(plan, original, "serve-old", scripts, self.proof.fingerprint, out)
        self.proof_seen().clear()
        self.proof_seen()["before"] = fp
        self.kube.patch(
            "ConfigMap", plan.namespace, render.state_cm_name(plan.sts), {"data": {BEFORE_KEY: pack(fp)}}
        )
        out.changed.append(f"fingerprinted the stopped old cluster: {_summary(fp)}")

    def _step_compare(
        self,
        plan: KubePlan,
        original: Mapping[str, Any],
        scripts: Mapping[str, str],
        out: Outcome,
        *,
        accept: bool = False,
    ) -> None:
        if self.proof is None or plan.core.downtime == "minimal":
            out.unchanged.append("no data proof asked: not compared")
            return
        stored = self._stored_before(plan)
        if stored is None:
            out.notes.append("no fingerprint of the old cluster was taken in this run: not compared")
            return
        before = unpack(stored)
        if plan.core.mode == "link":
            self.log(
                "point of no return: the new cluster starts now (serve-new Job); with --link the old "
                "cluster can no longer be used after it"
            )
        after = self._serve(plan, original, "serve-new", scripts, self.proof.fingerprint, out)
        differences = self.proof.compare(before, after)
        self.proof_seen().update(before=before, compared=differences)
        if differences and accept:
            out.notes.append("accepted (resume with accept=fingerprint): " + "; ".join(differences[:10]))
            return
        if differences:
            back = (
                f"`pgleap rollback sts {plan.sts}` brings the old cluster back"
                if plan.core.mode in ("copy", "clone")
                else "rollback is no longer possible (link/swap): restore a backup or snapshot to go back"
            )
            raise VerificationFailed(
                "the upgraded data differs from the old data: " + "; ".join(differences[:10]),
                f"nothing was opened to clients: {plan.sts} is still scaled to 0 and the old data is on "
                f"the volume; read the differences, then {back}",
            )
        out.unchanged.append(
            f"fingerprint after pg_upgrade identical to the old cluster's: {_summary(after)}"
        )

    def _stored_before(self, plan: KubePlan) -> str | None:
        cm = self.kube.get("ConfigMap", plan.namespace, render.state_cm_name(plan.sts)) or {}
        return (cm.get("data") or {}).get(BEFORE_KEY)

    def proves(self, plan: KubePlan) -> bool:
        """Whether the `proved` phase runs the post-upgrade before the switch (then not after it);
        a rehearsal proves the same way and reports what `proof_seen` kept."""
        return (
            self.proof is not None
            and self.proof.post_upgrade is not None
            and self.proof.compare_user is not None
            and plan.core.downtime != "minimal"
        )

    def _step_prove(self, state: State, scripts: Mapping[str, str], out: Outcome, accept: bool) -> None:
        """Docker's `proved` phase: the post-upgrade (extension updates, trap repairs, reindex,
        statistics, health) on the cluster a serve-new Job runs, then the user data compared
        again with the old cluster's, all before the new StatefulSet exists."""
        plan, original = state.plan, state.original
        stored = self._stored_before(plan)
        if not self.proves(plan) or stored is None:
            out.unchanged.append("no second comparison: the post-upgrade runs after the switch")
            return
        assert self.proof is not None and self.proof.post_upgrade and self.proof.compare_user
        before, post, fingerprint = unpack(stored), self.proof.post_upgrade, self.proof.fingerprint

        seen = self.proof_seen()

        def run(ctx: HookContext) -> tuple[dict[str, Any], dict[str, Any]]:
            try:
                seen["done"] = post(ctx)
            except VerificationFailed as exc:  # health checks: the report still lists every check
                seen["done"] = getattr(exc, "done", {})
                raise
            return seen["done"], fingerprint(ctx)

        done, after = self._serve(plan, original, "serve-new", scripts, run, out)
        out.changed.append(
            f"post-upgrade before the switch: {len(done.get('extensions_updated') or [])} extensions "
            f"updated, {len(done.get('trap_repairs') or [])} trap repairs, "
            f"{len(done.get('collation_indexes') or [])} indexes rebuilt"
        )
        differences, extension_tables = self.proof.compare_user(before, after)
        seen.update(before=before, proved=differences)
        for line in extension_tables:
            out.notes.append(f"extension-owned, changed by its update (not user data): {line}")
        if differences and accept:
            out.notes.append("accepted (resume with accept=fingerprint): " + "; ".join(differences[:10]))
            return
        if differences:
            raise VerificationFailed(
                "user data reads differently after the extension updates: " + "; ".join(differences[:10]),
                f"nothing was opened to clients: {plan.sts} is still scaled to 0; read the differences, "
                f"then `pgleap resume sts {plan.sts}` with the fingerprint accepted starts it as it is, "
                + (
                    f"or `pgleap rollback sts {plan.sts}` brings the old cluster back"
                    if plan.core.mode in ("copy", "clone")
                    else "or restore a backup or snapshot (link/swap: no rollback)"
                ),
            )
        out.unchanged.append(f"fingerprint after the extension updates identical: {_summary(after)}")

    def _serve(
        self,
        plan: KubePlan,
        original: Mapping[str, Any],
        action: str,
        scripts: Mapping[str, str],
        read: Callable[[HookContext], dict[str, Any]],
        out: Outcome,
    ) -> dict[str, Any]:
        """Run the `action` Job, read its served cluster with `read`, stop it, check its end."""
        ns, name = plan.namespace, render.job_name(plan.sts, action)
        job = self.kube.get("Job", ns, name)
        if job is not None and job_result(job) is not None:  # an earlier attempt's, ended: serve again
            self.kube.delete("Job", ns, name, propagation="Background")
            self.kube.wait(
                f"old Job {name} to be gone",
                lambda: True if self.kube.get("Job", ns, name) is None else None,
                timeout=self.t.delete,
                interval=self.t.poll,
            )
            out.changed.append(f"deleted the ended Job {name} of an earlier attempt")
        self._ensure_job(plan, name, lambda: render.upgrade_job(plan, original, action), scripts, out)
        pod = self._serving_pod(plan, name)
        ctx = HookContext(self.kube, plan, ns, plan.sts, pod, "upgrade", self.log)
        try:
            result = read(ctx)
        finally:  # a fast, clean shutdown: the Job's container ends with postgres
            try:
                self.kube.exec(ns, pod, "upgrade", ["sh", "-c", "kill -INT 1"])
            except PgleapError as exc:
                self.log(f"could not stop the served cluster in {pod} ({exc.message}); its Job ends it")
        self.finish_job(plan, name, ("upgrade",), "the served cluster was only read")
        return result

    def _serving_pod(self, plan: KubePlan, name: str) -> str:
        """The Job's pod once its `upgrade` container runs (the server then starts within seconds)."""
        ns = plan.namespace

        def running() -> str | None:
            job = self.kube.get("Job", ns, name)
            if job is None or job_result(job) is not None:
                raise PgleapError(
                    f"Job {name} ended before pgleap read the cluster it serves",
                    f"read `kubectl -n {ns} logs job/{name} --all-containers`, then `pgleap resume sts "
                    f"{plan.sts}` tries again or `pgleap rollback sts {plan.sts}` goes back",
                )
            for pod in self.kube.list("Pod", ns, label_selector=f"job-name={name}"):
                statuses = (pod.get("status") or {}).get("containerStatuses") or []
                if any(s.get("name") == "upgrade" and "running" in (s.get("state") or {}) for s in statuses):
                    return str(pod["metadata"]["name"])
            return None

        return self.kube.wait(f"Job {name} to serve", running, timeout=self.t.ready, interval=self.t.poll)


def _summary(fp: Mapping[str, Any]) -> str:
    tables = sum(len(t) for t in (fp.get("tables") or {}).values())
    rows = sum(r for t in (fp.get("tables") or {}).values() for r, _ in t.values())
    return f"{tables} tables, {rows} rows in {len(fp.get('tables') or {})} databases"
