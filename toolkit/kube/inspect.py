"""Read the live cluster of a StatefulSet before it is stopped; decide with Docker's plan.

What `upgrade docker` learns before its stop, learned the same way: the data directory from
probe.sh (run by exec in the running pod: pg_controldata, size, free space), the catalogs over
SQL through a port-forward (db.inspect.inspect_sql: cluster facts, indexes already invalid,
extension traps), pg_upgrade's own checks (steps/preflight), then `plan.make_plan`, the one
set of refusals. Nothing here writes: a refusal leaves the StatefulSet running as it was.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Console

from toolkit.core import plan as engine_plan
from toolkit.core.facts import DataFacts, ImageFacts
from toolkit.core.layout import Layout
from toolkit.core.report import Report
from toolkit.db import preflight
from toolkit.db.inspect import inspect_sql
from toolkit.errors import Refused
from toolkit.kube.hooks import pod_server
from toolkit.kube.model import HookContext
from toolkit.kube.plan import KubePlan, with_live_plan
from toolkit.kube.probe import inline_script


def probe_data(ctx: HookContext, pgdata: str, scripts: Mapping[str, str]) -> DataFacts:
    """probe.sh with PGLEAP_PGDATA inside the running pod (read-only: du, df, pg_controldata)."""
    command = ["env", f"PGLEAP_PGDATA={pgdata}", "bash", "-c", inline_script(scripts), "probe.sh"]
    return DataFacts.from_probe(ctx.kube.exec(ctx.namespace, ctx.pod, ctx.container, command))


def live_plan(
    ctx: HookContext,
    images: tuple[ImageFacts, ImageFacts],
    *,
    pgdata: str,
    scripts: Mapping[str, str],
) -> engine_plan.UpgradePlan:
    """Docker's UpgradePlan for the running StatefulSet, or Docker's refusal (same message)."""
    old, new = images
    kplan = ctx.plan
    report = Report(console=Console(stderr=True), quiet=True)
    data = probe_data(ctx, pgdata, scripts)
    # As plan_upgrade does: the refusals that need no server first.
    engine_plan.check_versions(old, new)
    engine_plan.check_data(data, old)
    engine_plan.check_mode(kplan.core.mode, new.major, data)
    layout = Layout(kplan.mount_path, pgdata, kplan.core.layout.new_mount, kplan.core.layout.new_pgdata)
    with pod_server(ctx) as server:
        facts = inspect_sql(server, new, report)
        # In plan_upgrade's order: the plan's refusals (the root cause) before preflight's.
        plan = engine_plan.make_plan(
            old=old, new=new, data=data, cluster=facts, layout=layout, mode=kplan.core.mode
        )
        warnings = preflight.run(server, old=old, new=new, data=data, mount=kplan.mount_path, report=report)
    for line in (*warnings, *plan.warnings):
        ctx.log(f"warning: {line}")
    for name in report.data.get("known_invalid_indexes", []):
        ctx.log(f"already invalid before the upgrade (not counted against it): {name}")
    return plan


def engine_preflight(
    ctx: HookContext,
    images: tuple[ImageFacts, ImageFacts],
    *,
    pgdata: str,
    scripts: Mapping[str, str],
) -> KubePlan:
    """The Kubernetes plan with what the live cluster decided: upgrade.sh's env by Docker's rules
    (initdb options, lock sizing), the images' glibc/ICU for the targeted reindex. Raises Refused
    before anything is written."""
    plan = live_plan(ctx, images, pgdata=pgdata, scripts=scripts)
    initdb_user = ctx.plan.job_env.get("PGLEAP_SUPERUSER")
    if initdb_user and initdb_user != plan.superuser:  # pg_upgrade would fail inside the Job, stopped
        raise Refused(
            f"the cluster's bootstrap role (OID 10) is {plan.superuser}, the Job would initdb the new "
            f"cluster as {initdb_user}",
            f"pass --superuser {plan.superuser} (pg_upgrade needs the same bootstrap role); nothing was changed",
        )
    ctx.log(
        f"read the live cluster: {len(plan.databases)} databases, "
        f"max_locks_per_transaction for pg_upgrade {plan.max_locks or 'default'}, "
        f"glibc {plan.glibc[0]} -> {plan.glibc[1]}, ICU {plan.icu[0] or '-'} -> {plan.icu[1] or '-'}"
    )
    return with_live_plan(ctx.plan, plan)
