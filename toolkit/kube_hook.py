"""The engine's post-upgrade and verification, run against the new pod of an upgraded StatefulSet.

The pod is reached through a port-forward; the superuser's password is read from
the pod's own environment (the user's Secret, as the pod sees it) and stays in
memory. Every step is safe to repeat, as `resume` may call this hook again.
"""

from __future__ import annotations

import shlex

from toolkit.errors import PgleapError, VerificationFailed
from toolkit.portforward import local_port
from toolkit.runtimes.kube import HookContext
from toolkit.steps import postupgrade, verify
from toolkit.steps.sql import Server


def pod_password(ctx: HookContext) -> str | None:
    """POSTGRES_PASSWORD as the new pod sees it (from its Secret); None when it has none."""
    out = ctx.kube.exec(
        ctx.namespace, ctx.pod, ctx.container, ["sh", "-c", 'printf %s "${POSTGRES_PASSWORD:-}"']
    )
    return out or None


STREAMING_SLOTS = (
    "SELECT s.slot_name FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid "
    "WHERE r.state = 'streaming' AND s.slot_name = ANY(%s)"
)


def engine_standby_probe(ctx: HookContext, slots: tuple[str, ...]) -> list[str]:
    """The standbys' slots that stream from the new primary (pg_stat_replication through a port-forward)."""
    superuser = ctx.plan.job_env.get("PGLEAP_SUPERUSER") or "postgres"
    password = pod_password(ctx)
    with local_port(lambda: ctx.kube.port_forward(ctx.namespace, ctx.pod, 5432)) as (host, port):
        server = Server(host, port, superuser, password, label=f"pod {ctx.namespace}/{ctx.pod}")
        rows = server.query("postgres", STREAMING_SLOTS, (list(slots),))
    streaming = [r[0] for r in rows]
    ctx.log(f"standbys streaming: {', '.join(streaming) or 'none yet'} of {', '.join(slots)}")
    return streaming


def engine_post_upgrade(ctx: HookContext) -> None:
    """Extensions, collation-dependent indexes, statistics, then health checks (amcheck, PostGIS)."""
    superuser = ctx.plan.job_env.get("PGLEAP_SUPERUSER") or "postgres"
    password = pod_password(ctx)
    with local_port(lambda: ctx.kube.port_forward(ctx.namespace, ctx.pod, 5432)) as (host, port):
        server = Server(host, port, superuser, password, label=f"pod {ctx.namespace}/{ctx.pod}")
        server.wait_ready(timeout=120)
        updated, left = postupgrade.update_extensions(server)
        ctx.log(
            f"extensions updated: {len(updated)}" + (f"; left as they are: {'; '.join(left)}" if left else "")
        )
        # The images' glibc/ICU are not probed on Kubernetes: rebuild every collation-dependent
        # index (CONCURRENTLY: the database is already serving).
        reindexed = postupgrade.reindex_collation_dependent(server, libc_changed=True, icu_changed=True)
        ctx.log(f"collation-dependent indexes rebuilt: {len(reindexed)}")
        analyze = ["vacuumdb", "--all", "--analyze-in-stages", "-U", superuser]
        if ctx.plan.new_major >= 18:
            analyze.append("--missing-stats-only")
        try:
            ctx.kube.exec(ctx.namespace, ctx.pod, ctx.container, ["sh", "-c", shlex.join(analyze)])
            ctx.log("statistics: " + " ".join(analyze[1:]))
        except PgleapError as exc:  # vacuumdb over the pod's socket may need a password: ANALYZE instead
            ctx.log(f"vacuumdb in the pod failed ({exc}); running ANALYZE per database")
            for db in server.databases():
                with server.connect(db) as conn:
                    conn.execute("ANALYZE")
        health = verify.health(server)
        for name, ok, detail in health.checks:
            ctx.log(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
        if not health.ok:
            failed = [f"{n}: {d}" for n, ok, d in health.checks if not ok]
            raise VerificationFailed("health checks failed after the upgrade: " + "; ".join(failed))
