"""The engine's post-upgrade and verification, run against the new pod of an upgraded StatefulSet.

The pod is reached through a port-forward; the superuser's password is read from
the pod's own environment (the user's Secret, as the pod sees it) and stays in
memory. Every step is safe to repeat, as `resume` may call this hook again.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict
from typing import Any

from toolkit.db import postupgrade, verify
from toolkit.db.replication import replication_problems
from toolkit.db.sql import Server
from toolkit.engine.proof import fingerprint_from_dict
from toolkit.errors import PgleapError, VerificationFailed
from toolkit.kube.model import DataProof, HookContext
from toolkit.kube.plan import KubePlan
from toolkit.kube.pod_login import pod_login
from toolkit.kube.portforward import local_port
from toolkit.kube.rehearsal import RehearsalHooks


def pod_password(ctx: HookContext) -> str | None:
    """The password as the new pod sees it (POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE, from its
    Secret); None when it has none."""
    return pod_login(ctx.kube, ctx.namespace, ctx.pod, ctx.container)[1]


STREAMING_SLOTS = (
    "SELECT s.slot_name FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid "
    "WHERE r.state = 'streaming' AND s.slot_name = ANY(%s)"
)


def engine_standby_probe(ctx: HookContext, slots: tuple[str, ...]) -> list[str]:
    """The standbys' slots that stream from the new primary (pg_stat_replication through a port-forward)."""
    with pod_server(ctx) as server:
        rows = server.query("postgres", STREAMING_SLOTS, (list(slots),))
    streaming = [r[0] for r in rows]
    ctx.log(f"standbys streaming: {', '.join(streaming) or 'none yet'} of {', '.join(slots)}")
    return streaming


@contextmanager
def pod_server(ctx: HookContext) -> Iterator[Server]:
    """The pod's PostgreSQL through a port-forward, as the plan's superuser with the pod's password."""
    superuser = ctx.plan.job_env.get("PGLEAP_SUPERUSER") or "postgres"
    password = pod_password(ctx)
    with local_port(lambda: ctx.kube.port_forward(ctx.namespace, ctx.pod, 5432)) as (host, port):
        server = Server(host, port, superuser, password, label=f"pod {ctx.namespace}/{ctx.pod}")
        server.wait_ready(timeout=120)
        yield server


def engine_fingerprint(ctx: HookContext) -> verify.Fingerprint:
    """Row counts and hashes of every table, sequences, roles, extensions (read-only)."""
    with pod_server(ctx) as server:
        fp = verify.fingerprint(server)
    summary = fp.to_dict()
    ctx.log(f"fingerprint of {ctx.pod}: {summary['tables']} tables, {summary['rows']} rows")
    return fp


@contextmanager
def served_server(ctx: HookContext) -> Iterator[Server]:
    """The cluster a serve-old/serve-new Job runs on its pod's loopback (upgrade.sh serve), as the
    bootstrap superuser the Job initdb-s with (PGLEAP_SUPERUSER); trust from loopback, so no password is needed."""
    port = int(ctx.plan.job_env.get("PGLEAP_SERVE_PORT") or 5432)
    superuser = ctx.plan.job_env.get("PGLEAP_SUPERUSER") or "postgres"
    with local_port(lambda: ctx.kube.port_forward(ctx.namespace, ctx.pod, port)) as (host, local):
        server = Server(host, local, superuser, None, label=f"served cluster in {ctx.namespace}/{ctx.pod}")
        server.wait_ready(timeout=180)
        yield server


def served_fingerprint(ctx: HookContext) -> dict[str, Any]:
    """The engine's fingerprint (verify.fingerprint, canonical forms) of a served cluster."""
    with served_server(ctx) as server:
        fp = verify.fingerprint(server)
    ctx.log(f"fingerprint of the cluster served by {ctx.pod}: {fp.to_dict()['tables']} tables")
    return asdict(fp)


def compare_fingerprints(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """verify.compare right after pg_upgrade, as Docker's engine makes it (extension tables included)."""
    return verify.compare(fingerprint_from_dict(before), fingerprint_from_dict(after)).differences


def compare_user_data(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[str], list[str]]:
    """After the extension updates: (user-data differences, extension-owned tables changed), as
    Docker's proof.prove compares them (an extension's own tables may change with its update)."""
    comparison = verify.compare(
        fingerprint_from_dict(before), fingerprint_from_dict(after), include_extension_tables=False
    )
    return comparison.differences, comparison.extension_differences


def engine_data_proof() -> DataProof:
    """The before/after comparisons of `upgrade sts` in --downtime verified mode (kube/fingerprint.py):
    right after pg_upgrade, and again after the post-upgrade run on the served new cluster."""
    return DataProof(
        fingerprint=served_fingerprint,
        compare=compare_fingerprints,
        post_upgrade=served_post_upgrade,
        compare_user=compare_user_data,
    )


def engine_replication_problems(ctx: HookContext) -> list[str]:
    """What keeps a pg_basebackup Job from copying this pod's server (role, WAL, pg_hba.conf)."""
    pod = ctx.kube.get("Pod", ctx.namespace, ctx.pod) or {}
    ip = (pod.get("status") or {}).get("podIP") or "10.0.0.1"
    with pod_server(ctx) as server:
        return replication_problems(server, ip, network="the pod network", address="<pod CIDR>")


def collation_changes(plan: KubePlan) -> tuple[bool, bool]:
    """(glibc changed, ICU changed) between the probed images, as Docker's plan decides them (its core);
    both True when the plan holds no probed versions (stored by an older pgleap)."""
    if not plan.core.collation_libraries_known:
        return True, True
    return plan.core.libc_changed, plan.core.icu_changed


def engine_post_upgrade(ctx: HookContext) -> dict[str, Any]:
    """Extensions, collation-dependent indexes, statistics, then health checks (amcheck, PostGIS),
    on the serving pod (rehearsals, --downtime minimal, a run without the data proof).

    Returns what it did, for a rehearsal's report; raises VerificationFailed when a check fails."""
    superuser = ctx.plan.job_env.get("PGLEAP_SUPERUSER") or "postgres"
    return _post_upgrade(ctx, pod_server, ["-U", superuser])


def served_post_upgrade(ctx: HookContext) -> dict[str, Any]:
    """The same post-upgrade on the cluster a serve-new Job runs (loopback, read-write, reached only
    by the port-forward): extension updates and trap repairs happen before clients, as on Docker."""
    superuser = ctx.plan.job_env.get("PGLEAP_SUPERUSER") or "postgres"
    port = ctx.plan.job_env.get("PGLEAP_SERVE_PORT") or "5432"
    return _post_upgrade(ctx, served_server, ["-h", "127.0.0.1", "-p", port, "-U", superuser])


def _post_upgrade(
    ctx: HookContext, connect: Callable[[HookContext], AbstractContextManager[Server]], vacuumdb: list[str]
) -> dict[str, Any]:
    """engine_post_upgrade's steps against the server `connect` reaches; `vacuumdb` its arguments."""
    with connect(ctx) as server:
        updated, left, repaired = postupgrade.update_extensions(server)
        ctx.log(
            f"extensions updated: {len(updated)}" + (f"; left as they are: {'; '.join(left)}" if left else "")
        )
        for item in repaired:
            ctx.log(f"repaired {item}")
        # Rebuild (CONCURRENTLY: the database already serves) what the probed glibc/ICU change
        # can reorder, as on Docker; a plan without probed versions rebuilds every such index.
        libc_changed, icu_changed = collation_changes(ctx.plan)
        reindexed = postupgrade.reindex_collation_dependent(
            server, libc_changed=libc_changed, icu_changed=icu_changed
        )
        ctx.log(f"collation-dependent indexes rebuilt: {len(reindexed)}")
        runs = postupgrade.analyze_runs(ctx.plan.core.new_major)
        try:
            for extra in runs:
                analyze = ["vacuumdb", "--all", *vacuumdb, *extra]
                ctx.kube.exec(ctx.namespace, ctx.pod, ctx.container, ["sh", "-c", shlex.join(analyze)])
            ctx.log("statistics: vacuumdb " + " then ".join(" ".join(r) for r in runs))
        except PgleapError as exc:  # vacuumdb over the pod's socket may need a password: ANALYZE instead
            ctx.log(f"vacuumdb in the pod failed ({exc}); running ANALYZE per database")
            for db in server.databases():
                with server.connect(db) as conn:
                    conn.execute("ANALYZE")
        health = verify.health(server)
        extensions = {
            db: dict(server.query(db, "SELECT extname, extversion FROM pg_extension"))
            for db in server.databases()
        }
    for name, ok, detail in health.checks:
        ctx.log(f"{'ok  ' if ok else 'FAIL'} {name} {detail}")
    done = {
        "extensions_updated": updated,
        "extensions_left": left,
        "trap_repairs": repaired,
        "extensions": extensions,
        "collation_indexes": reindexed,
        "health": health.rows(),
    }
    if not health.ok:
        exc = VerificationFailed("health checks failed after the upgrade: " + "; ".join(health.failures()))
        exc.done = done  # type: ignore[attr-defined]  # the report still lists every check
        raise exc
    return done


def engine_rehearsal_hooks() -> RehearsalHooks:
    """The engine's database steps for `pgleap rehearse sts` (fingerprint, compare, post-upgrade)."""
    return RehearsalHooks(
        fingerprint=engine_fingerprint,
        compare=lambda before, after: verify.compare(before, after).differences,
        post_upgrade=engine_post_upgrade,
        replication_problems=engine_replication_problems,
        compare_user=lambda before, after: (
            verify.compare(before, after, include_extension_tables=False).differences
        ),
    )
