"""Run an upgrade on Kubernetes: stop the StatefulSet, run the Job, switch to the new StatefulSet.

Each phase checks the cluster before it acts and says when nothing was needed,
and the phase reached is written to the state ConfigMap after it completes: a
crash anywhere is continued by `resume` or undone by `rollback`, and a rerun
after success makes no writes. Nothing of the user's is deleted before the new
cluster runs and the post-upgrade hook has passed (the old StatefulSet is
deleted with propagationPolicy=Orphan, which leaves its PVCs and pods alone).
"""

from __future__ import annotations

from collections.abc import Mapping

from toolkit.errors import Refused
from toolkit.kube.model import Outcome, PostUpgradeHook, StandbyProbe
from toolkit.kube.undo import Undoer
from toolkit.kube.upgrade import Upgrader


class KubeRuntime(Upgrader, Undoer):
    """The Kubernetes runtime: inspect and plan (reading.py), upgrade (upgrade.py, standbys.py),
    rollback and finalize (undo.py) on the shared steps of ops.py; `resume` picks the recorded one."""

    def resume(
        self,
        namespace: str,
        name: str,
        *,
        scripts: Mapping[str, str],
        post_upgrade: PostUpgradeHook | None = None,
        standby_probe: StandbyProbe | None = None,
        accept: tuple[str, ...] = (),
    ) -> Outcome:
        """Continue the recorded operation from the phase after the last one completed;
        `accept=("fingerprint",)` goes on past a fingerprint difference the operator has read."""
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
                lambda: self._run_upgrade(state, scripts, post_upgrade, out, standby_probe, accept),
            )
        if state.operation == "rollback":
            return self._held(namespace, name, "resume", lambda: self._run_rollback(state, scripts, out))
        return self._held(namespace, name, "resume", lambda: self._run_finalize(state, scripts, out))
