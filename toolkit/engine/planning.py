"""Before anything changes: inspect the images, the data and the cluster, refuse early, make the
plan; show it; read a recorded plan back."""

from __future__ import annotations

from rich.markup import escape

from toolkit.core.facts import ImageFacts
from toolkit.core.layout import Layout
from toolkit.core.plan import ExtensionAction, UpgradePlan, make_plan
from toolkit.core.report import Report
from toolkit.db import preflight
from toolkit.db.inspect import inspect_sql
from toolkit.engine.target import Target
from toolkit.errors import Refused


def plan_upgrade(
    target: Target, target_image: str, mode: str, report: Report
) -> tuple[UpgradePlan, ImageFacts]:
    """Inspect both images, the data and the cluster; refuse early; return the plan."""
    with report.phase("inspect images", f"{target.source_image} -> {target_image}") as ph:
        old = target.probe_image(target.source_image)
        new = target.probe_image(target_image)
        ph.detail = f"PostgreSQL {old.version} -> {new.version}; glibc {old.glibc} -> {new.glibc}"
    with report.phase("inspect data directory") as ph:
        data = target.probe_data()
        ph.detail = f"{data.status}, state '{data.state}', {data.data_kb / 1024:.0f} MiB"
    layout = target.layout(target_image)
    # Refusals that need no server come first (nothing started, nothing changed).
    from toolkit.core.plan import check_data, check_mode, check_versions

    check_versions(old, new)
    check_data(data, old)
    check_mode(mode, new.major, data)
    target.check_writable(data)
    with report.phase("inspect cluster (SQL)") as ph:
        live = target.live_server()
        if live is not None:
            facts = inspect_sql(live, new, report)
            # The plan's own refusals (a target lacking an extension, shipping it older) name the
            # root cause; preflight's library check would only name its symptom (a missing .so).
            plan = make_plan(old=old, new=new, data=data, cluster=facts, layout=layout, mode=mode)
            preflight.run(live, old=old, new=new, data=data, mount=layout.old_mount, report=report)
        else:
            in_use = target.running_users()
            if in_use:
                raise Refused(
                    f"container {in_use[0]} is running on this volume",
                    f"stop it (docker stop {in_use[0]}), or give --container {in_use[0]} instead of --volume",
                )
            if not data.cleanly_shut_down:
                raise Refused(
                    f"the cluster was not shut down cleanly (state: {data.state})",
                    "start it once on its old image and stop it cleanly (docker start/stop), then run pgleap again",
                )
            with target.old_server(old, data, superuser="") as server:
                facts = inspect_sql(server, new, report)
                plan = make_plan(old=old, new=new, data=data, cluster=facts, layout=layout, mode=mode)
                preflight.run(server, old=old, new=new, data=data, mount=layout.old_mount, report=report)
        ph.detail = f"superuser {facts.superuser}, {len(facts.databases)} databases"
    return plan, new


def show_plan(
    plan: UpgradePlan, report: Report, downtime: str = "verified", verify_data: bool = True
) -> None:
    estimate = plan.estimated_downtime_seconds(downtime, verify_data=verify_data)
    report.data["estimated_downtime_seconds"] = round(estimate, 1)
    report.result(
        f"[bold]Plan[/]: PostgreSQL {plan.old_version} -> {plan.new_version}, mode {plan.mode}\n"
        f"  images     {plan.source_image} -> {plan.target_image}\n"
        f"  PGDATA     {plan.layout.old_pgdata} (volume at {plan.layout.old_mount}) -> "
        f"{plan.layout.new_pgdata} (volume at {plan.layout.new_mount})\n"
        f"  initdb     --username={plan.superuser} {' '.join(plan.initdb_args)}\n"
        f"  rollback   {plan.core.rollback_note}\n"
        f"  downtime   about {estimate:.0f} s ({downtime} mode, estimate)"
    )
    changes = [a for a in plan.extension_actions if a.action != "none"]
    for a in changes:
        report.result(
            f"  extension  {escape(a.database)}: {a.extension} {a.installed} -> {a.target} ({a.action})"
        )
    if plan.core.collation_libraries_changed:
        report.result(
            f"  collation  glibc {plan.glibc[0]} -> {plan.glibc[1]}, ICU {plan.icu[0] or '-'} -> "
            f"{plan.icu[1] or '-'}: dependent indexes are rebuilt"
        )
    for t in report.data.get("traps", []):
        report.result(
            f"  trap       {escape(t['database'])}: {escape(t['column'])} (~{t['rows']} rows) crosses {t['trap']}: "
            f"repaired in the extension update's transaction, then checked"
        )
    for w in plan.warnings:
        report.result(f"  [yellow]warning[/]    {escape(w)}")


def point_of_no_return(plan: UpgradePlan) -> str | None:
    """The step after which the old cluster can no longer be brought back, or None (copy/clone)."""
    if plan.mode == "link":
        return "the first start of the new cluster (it writes to data files it shares with the old one)"
    if plan.mode == "swap":
        return "pg_upgrade --swap (it moves the old cluster's files into the new one)"
    return None


def warn_no_return(plan: UpgradePlan, report: Report, when: str) -> None:
    """Said once, before the step that ends rollback (both downtime modes)."""
    report.data["point_of_no_return"] = point_of_no_return(plan)
    report.say(
        f"[bold yellow]point of no return[/]: {when}; from here on `pgleap rollback` cannot bring "
        f"the old cluster back ({plan.mode} mode): an interrupted run is finished with `pgleap resume`, "
        "and only a backup or snapshot brings back the old version"
    )


def plan_from_dict(data: dict) -> UpgradePlan:
    fields = {k: v for k, v in data.items() if k in UpgradePlan.__dataclass_fields__}
    fields["layout"] = Layout.from_dict(data["layout"])
    fields["initdb_args"] = tuple(data["initdb_args"])
    fields["extension_actions"] = tuple(ExtensionAction(**a) for a in data["extension_actions"])
    fields["glibc"] = tuple(data["glibc"])
    fields["icu"] = tuple(data["icu"])
    fields["databases"] = tuple(data["databases"])
    fields["warnings"] = tuple(data["warnings"])
    return UpgradePlan(**fields)
