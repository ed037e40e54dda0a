"""`--downtime minimal`: only what needs the database stopped happens while it is stopped.

Before the stop (the old server still serves):
    collect old binaries, prepare (wrap them, initdb the staging cluster in
    $VOLUME/.pgleap/new-<major>, read the new major's setting names), create
    (not start) the container on the new image under a temporary name.
Inside the downtime window:
    stop -> pg_upgrade (its own consistency checks run first and, in link
    mode, abort before the old cluster is touched) -> carry config, place ->
    rename the containers, start the new one -> accepting connections.
After the window, against the serving database:
    extension updates, REINDEX CONCURRENTLY of collation-dependent indexes,
    vacuumdb --analyze-in-stages, health checks (amcheck, PostGIS, indexes).

What is given up, compared with the default (`verified`):
  - no before/after data fingerprint (it needs the stopped old cluster read in
    full inside the window); rehearse with the default on a copy for that proof.
    The columns a known extension trap touches are still hashed before the
    update and after the repair, in one transaction (toolkit/db/postupgrade.py);
  - no separate `pg_upgrade --check` run;
  - until the post-upgrade work ends, PostGIS functions are the old version's
    (`postgis_full_version()` says "need upgrade"), planner statistics are
    being rebuilt, and when glibc/ICU changed, text indexes under a changed
    collation may return wrong results until their REINDEX CONCURRENTLY ends;
  - a health check that fails afterwards is reported with the database
    already serving (rollback in link mode is then impossible).
Needs a container to start (a bare volume has nothing to serve from).
"""

from __future__ import annotations

import time

from toolkit.core.facts import parse_results
from toolkit.core.plan import UpgradePlan, check_downtime_mode
from toolkit.core.report import Report
from toolkit.db import postupgrade, verify
from toolkit.engine.phases import PhaseStore, run_phases
from toolkit.engine.planning import warn_no_return
from toolkit.engine.state import RunState
from toolkit.engine.target import Target
from toolkit.errors import Refused


def check_supported(target: Target, downtime: str) -> None:
    check_downtime_mode(downtime)
    if downtime == "minimal" and not target.supports_minimal_downtime():
        raise Refused(
            "--downtime minimal needs a container that pgleap restarts on the new image",
            "give --container NAME, or use the default --downtime verified for a bare volume",
        )


def run(
    target: Target,
    plan: UpgradePlan,
    *,
    report: Report,
    state: RunState,
    store: PhaseStore,
    accept: tuple[str, ...] = (),
) -> dict:
    """The phases after `collected`, through the engine's runner (engine/phases.py); returns the extra
    report data."""
    run_phases([("prepared", lambda: _prepare(target, plan, report))], store)
    if not store.done("started"):
        state.save(
            down_since=report.down(state.data.get("down_since"))
        )  # a resume counts from the first stop
    run_phases(
        [
            ("stopped", lambda: _stop(target, report)),
            ("upgraded", lambda: _pg_upgrade(target, plan, report)),
            ("started", lambda: _start(target, plan, report)),
        ],
        store,
    )

    server = target.serving_server(plan)

    def post_upgrade() -> dict:
        return postupgrade.run(
            server,
            report=report,
            libc_changed=plan.core.libc_changed,
            icu_changed=plan.core.icu_changed,
            analyze=lambda: target.analyze_serving(plan),
            serving=True,
        )

    run_phases([("post_upgraded", post_upgrade)], store)
    verify.run_health_checks(
        server,
        report,
        failure="health checks failed after the upgrade (the database is already serving)",
        hint="fix what they name on the running database, or restore a backup",
        known_invalid=state.data.get("known_invalid_indexes"),
        accept="health" in accept,
    )
    return {}


def _prepare(target: Target, plan: UpgradePlan, report: Report) -> dict:
    with report.phase("prepare new cluster", "wrap old binaries, initdb (server still up)") as ph:
        results = dict(parse_results(target.run_action(plan, "prepare")))
        target.precreate_new(plan)  # the new-image container exists, stopped, before the stop
        ph.detail = f"initdb {results.get('initdb_seconds', 'already done')} s"
    return {"prepare_results": results}


def _stop(target: Target, report: Report) -> None:
    with report.phase("stop the database", "clean shutdown"):
        target.stop_source()  # upgrade.sh refuses a cluster that did not shut down cleanly


def _pg_upgrade(target: Target, plan: UpgradePlan, report: Report) -> dict:
    if plan.mode == "swap":
        warn_no_return(plan, report, "pg_upgrade --swap starts now")
    with report.phase(f"pg_upgrade --{plan.mode}", "no separate --check; config; place") as ph:
        out = target.run_action(plan, "upgrade", check=False)
        results = dict(parse_results(out))
        ph.detail = f"pg_upgrade {results.get('pg_upgrade_seconds', '?')} s, config {results.get('config_seconds', '?')} s"
    commented = [v for k, v in parse_results(out) if k == "commented"]
    return {"upgrade_results": results, "commented_settings": commented}


def _start(target: Target, plan: UpgradePlan, report: Report) -> dict:
    """The end of the window: the new container serves (report.up before the phase is recorded)."""
    if plan.mode == "link":
        warn_no_return(plan, report, "the new cluster starts now")
    with report.phase("start the upgraded database", plan.target_image):
        target.start_new(plan)
    report.up()
    return {"switched_at": time.time()}
