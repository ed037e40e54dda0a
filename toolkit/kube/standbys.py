"""Standbys around an upgrade: stop them before the primary, re-seed each volume from the
verified new primary, start them on the new image and wait until they stream."""

from __future__ import annotations

from collections.abc import Mapping

from toolkit.errors import PgleapError
from toolkit.kube import new_sts, objects, render
from toolkit.kube.model import (
    HookContext,
    Outcome,
    StandbyProbe,
    State,
    is_ready,
    ours,
    pod_ready,
)
from toolkit.kube.ops import Ops
from toolkit.kube.plan import KubePlan


class Standbys(Ops):
    """The standby phases of an upgrade."""

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
                f"--keep-readers: {rp.sts} keeps serving STALE reads (PostgreSQL {plan.core.old_major} data, no new "
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
            if live is not None and not ours(live, plan):
                self._scale_down(view, live, rp.count, out)  # stale readers stop here with --keep-readers
            holder = state.read_original
        else:
            # the new StatefulSet runs ordinal 0 only
            self._wait_pod_gone(plan, pods=[sb.pod for sb in rp.standbys])
            holder = state.original
        assert holder is not None
        names = []
        for sb in rp.standbys:
            name = objects.replica_job_name(sb.pod, "reseed")
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
            self._replace_sts(plan.replica_view(), lambda: new_sts.replica_statefulset(plan, read), out)

        def ready() -> bool | None:
            return True if is_ready(self.kube.get("StatefulSet", plan.namespace, rp.sts), rp.count) else None

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
