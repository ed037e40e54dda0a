"""Docker commands: `pgleap upgrade docker …`, `pgleap demo` and friends. Thin: parse, call, print."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from toolkit import __version__
from toolkit.cli import options as cli_options
from toolkit.cli.options import Mode, Output, Yes
from toolkit.core import interrupt
from toolkit.core.interrupt import EXIT_INTERRUPTED
from toolkit.core.report import Report, console, plural, print_findings, print_verdict
from toolkit.engine import runner as engine
from toolkit.engine import undo
from toolkit.engine.state import RunState, locked
from toolkit.errors import EXIT_FAILED, EXIT_OK, PgleapError

out = console(stderr=False)

Container = Annotated[
    str | None, typer.Option("--container", "-c", metavar="NAME", help="The database container.")
]
Volume = Annotated[
    str | None,
    typer.Option("--volume", metavar="VOLUME", help="A Docker volume holding PGDATA (no container)."),
]
FromImage = Annotated[
    str | None, typer.Option("--from", metavar="IMAGE", help="Image the volume's cluster was created with.")
]
Pgdata = Annotated[
    str | None,
    typer.Option("--pgdata", metavar="PATH", help="PGDATA inside the old image (default: image's)."),
]
ACCEPTABLE = ("fingerprint", "health")
Junit = Annotated[
    Path | None, typer.Option("--junit", help="Write a JUnit XML report here (one case per check).")
]


def _target(
    container: str | None,
    volume: str | None,
    from_image: str | None,
    pgdata: str | None,
    *,
    recorded: bool = False,
):
    from toolkit.docker.runtime import DockerRuntime
    from toolkit.docker.target import DockerTarget

    if container is None and volume is None:  # usage errors first, before Docker is even asked
        raise typer.BadParameter("give --container NAME or --volume VOL --from IMAGE")
    if volume and not container:  # resume/rollback/finalize need no --from: the run recorded it
        from toolkit.docker.refs import VolumeRef

        state = RunState(f"docker-{VolumeRef('volume', volume).key}")
        if state.data.get("source"):
            return DockerTarget(DockerRuntime(), saved=state.data["source"]), state
        if recorded:
            raise PgleapError(
                f"no upgrade recorded for volume {volume}: nothing to resume, roll back or finalize",
                "`pgleap status docker` shows what is recorded; `pgleap upgrade docker` starts an upgrade",
            )
    if volume and not container and not from_image:  # a usage error: said before anything is inspected
        raise typer.BadParameter(
            "--volume VOL needs --from IMAGE, the image the volume's cluster was created with "
            "(e.g. postgis/postgis:15-3.3)",
            param_hint="--from",
        )
    rt = DockerRuntime()
    probe = DockerTarget(rt, container=container, volume=volume, source_image=from_image, pgdata=pgdata)
    state = RunState(probe.key)
    if state.data.get("source"):  # the container may have changed since: use what was recorded
        return DockerTarget(rt, saved=state.data["source"]), state
    return probe, state


def _lifecycle(step: Callable[..., dict], container: str | None, volume: str | None, output: str) -> None:
    """rollback, finalize: `step` on the recorded upgrade of the target, under its lock; the result shown."""
    target, state = _target(container, volume, None, None, recorded=True)
    report = Report(quiet=output != "text")
    with locked(target.key):
        result = step(target, report=report, state=state)
    _emit(result, output, report)


def _restorable(exc: Exception) -> bool:
    """Errors after which the old database may be brought back: pgleap's own, a server or container dying."""
    from toolkit.db.sql import DatabaseError
    from toolkit.docker.client import DockerException

    return isinstance(exc, PgleapError | DatabaseError | DockerException)


def _auto_restore(target, state: RunState, report: Report, exc: Exception) -> None:
    """The upgrade failed: restart the old database if it is still possible; then report the cause, exit 1."""
    try:
        restored = undo.auto_restore(target, report=report, state=state)
    except PgleapError as again:
        report.say(f"[red]the automatic restore failed too[/]: {again.message}")
        return
    if restored is None:
        return
    cause = exc.message if isinstance(exc, PgleapError) else str(exc).strip().splitlines()[0]
    kept = (
        f"; the failed new cluster is kept in {restored['kept_new_cluster']}"
        if restored.get("kept_new_cluster")
        else ""
    )
    detail = f"\n{exc.hint}" if isinstance(exc, PgleapError) and exc.hint else ""
    raise PgleapError(
        f"{cause} — the upgrade was undone: the database serves again on its old image ({target.source_image})",
        f"fix the cause, then run the upgrade again{kept}; `{restored['cleanup']}` removes what the failed run "
        f"left; `--no-auto-restore` leaves the database stopped for inspection instead{detail}",
        exit_code=EXIT_FAILED,
    ) from None


def _guarded_upgrade(
    target, state: RunState, report: Report, run: Callable[[], dict], *, auto_restore: bool
) -> dict:
    """`run` (an upgrade or a resume) with Ctrl-C/SIGTERM caught; a failure before the point of no
    return restores the old database when `auto_restore`; an interruption exits 130 saying what is open."""
    if state.data.pop("interrupted", None) is not None:  # a resume: the interruption is over
        state.save()
    try:
        with interrupt.guarded():
            return run()
    except (interrupt.Interrupted, KeyboardInterrupt) as exc:
        stopped = exc if isinstance(exc, interrupt.Interrupted) else None
        during = stopped.during if stopped else f"{interrupt.current_step()} (stopped at once)"
        _after_interrupt(target, RunState(target.key), report, during, auto_restore=auto_restore)
        raise  # not reached: _after_interrupt always raises
    except Exception as exc:
        if not auto_restore or not _restorable(exc):
            raise
        _auto_restore(target, state, report, exc)
        raise


def _after_interrupt(target, state: RunState, report: Report, during: str, *, auto_restore: bool) -> None:
    """Record the interruption, restore the old database if that is safe and wanted, say what is open."""
    if not state.data.get("plan"):
        raise PgleapError(
            f"interrupted during {during}; nothing was changed",
            "run the upgrade again when ready",
            exit_code=EXIT_INTERRUPTED,
        )
    state.save(interrupted={"during": during, "at": time.time()})
    if auto_restore:
        try:
            restored = undo.auto_restore(target, report=report, state=state)
        except PgleapError as again:
            report.say(f"[red]the automatic restore failed[/]: {again.message}")
            restored = None
        if restored is not None:
            raise PgleapError(
                f"interrupted during {during}; the upgrade was undone: the database serves again on its "
                f"old image ({target.source_image})",
                f"run the upgrade again when ready; `{restored['cleanup']}` removes what the run left",
                exit_code=EXIT_INTERRUPTED,
            )
    resume, rollback = f"`{target.command('resume')}`", f"`{target.command('rollback')}`"
    serving = "" if target.stopped_by_run() else "; the database was not stopped and still serves"
    if state.phase == "done":
        raise PgleapError(
            f"interrupted during {during}; the upgrade itself is complete{serving}",
            f"{resume} finishes what is left; `{target.command('finalize')}` once you are satisfied",
            exit_code=EXIT_INTERRUPTED,
        )
    try:
        engine._reap(target, report)  # a step stopped at once may have left its helper running
        verdict = undo.check(target, engine.plan_from_dict(state.data["plan"]))
        can_roll_back = not verdict.refusal
        why = verdict.refusal
    except PgleapError as exc:
        can_roll_back, why = None, exc.message
    if can_roll_back:
        hint = f"{resume} continues the upgrade, or {rollback} brings the old cluster back"
    elif can_roll_back is None:
        hint = f"{resume} continues the upgrade; whether {rollback} is still possible is unknown ({why})"
    else:
        hint = f"{resume} finishes the upgrade; {rollback} is no longer possible ({why})"
    raise PgleapError(f"interrupted during {during}{serving}", hint, exit_code=EXIT_INTERRUPTED)


def _complete(result: dict, target, state: RunState) -> dict:
    """What a script needs besides the phases: where the old cluster is, whether rollback is open."""
    plan = state.data.get("plan")
    if plan and result.get("status") in ("upgraded", "already-done"):
        result["rollback_possible"] = engine.point_of_no_return(engine.plan_from_dict(plan)) is None
        result["old_container"] = target.old_name if getattr(target, "container_name", None) else None
    return result


def _emit(result: dict, output: str, report: Report) -> None:
    if isinstance(result, dict) and output != "text":
        result = {
            **result,
            "pgleap_version": __version__,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    if output == "json":
        print(json.dumps(result, indent=2, default=str))
    elif output == "yaml":
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(result, default=str)), sort_keys=False))
    else:
        _summary(result, report)


def _when(epoch) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(epoch)))


def _status_text(result: dict) -> None:
    """`status docker` for a person: where the run stands, or what happened last and when."""
    out.print(f"target: {result['target']}", markup=False)
    if result.get("phase"):
        out.print(f"phase: {result['phase']} (upgrade to {result.get('target_image')})", markup=False)
        if result.get("interrupted"):
            i = result["interrupted"]
            out.print(f"interrupted during {i['during']} at {_when(i['at'])}", markup=False)
    else:
        out.print("phase: no upgrade recorded", markup=False)
    last = result.get("last_operation")
    if last:
        out.print(f"last operation: {last['operation']} at {_when(last['at'])}", markup=False)


def _emit_plain(data: dict, output: str) -> None:
    """A result with no text summary of its own: key: value lines as text."""
    if output != "text":
        _emit(data, output, Report(quiet=True))
        return
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        out.print(f"{key}: {value}", markup=False)


def _summary(result: dict, report: Report) -> None:
    if result.get("health"):
        table = Table("check", "ok", "detail", title="verification")
        for row in result["health"]:
            table.add_row(row["check"], "[green]yes[/]" if row["ok"] else "[red]NO[/]", row["detail"])
        out.print(table)
    fp = result.get("fingerprint")
    if fp:
        b, a = fp["before"], fp["after"]
        out.print(
            f"fingerprint: {plural(b['tables'], 'table')} / {plural(b['rows'], 'row')} / "
            f"{plural(b['sequences'], 'sequence')} before, "
            f"{a['tables']} / {a['rows']} / {a['sequences']} after pg_upgrade: [bold green]identical[/]"
        )
    proof = result.get("fingerprint_after_extensions")
    if proof:
        forms = ", ".join(f"{n} {form}" for form, n in sorted(proof["forms"].items()))
        verdict = "[bold green]identical[/]" if proof["identical"] else "[bold red]DIFFERENT (accepted)[/]"
        out.print(f"fingerprint after extension updates and repairs: {verdict} (columns read as: {forms})")
    if result.get("downtime_seconds") is not None:
        out.print(
            f"downtime: [bold]{result['downtime_seconds']:.1f} s[/] (database stopped -> upgraded one accepting)"
        )
    if result.get("loses"):
        out.print(f"dropped: {result['loses']}", markup=False)
    if result.get("status") in ("rolled-back", "restored"):
        if result.get("kept_new_cluster"):
            out.print(f"the new cluster was kept in {result['kept_new_cluster']}", markup=False)
        out.print(f"remove it and pgleap's scratch volume with: {result['cleanup']}", markup=False)
    out.print(f"status: [bold]{escape(str(result.get('status')))}[/]")


def _emit_rehearsal(result: dict, output: str) -> None:
    if output != "text":
        _emit(result, output, Report(quiet=True))
        return
    print_findings(out, result)
    if result.get("predicted_downtime_seconds") is not None:
        out.print(f"predicted downtime of the real run: [bold]{result['predicted_downtime_seconds']} s[/]")
    if result.get("kept"):
        k = result["kept"]
        out.print(
            f"upgraded clone kept: container {k['container']}, volume {k['volume']}, {k['connect']}",
            markup=False,
        )
        out.print(
            f"  remove it with: docker rm -f {k['container']} && docker volume rm {k['volume']}", markup=False
        )
    print_verdict(out, result)


def _report_rehearsal(result: dict, output: str, junit: Path | None) -> None:
    if junit is not None:
        from toolkit.core import junit as junit_xml

        junit_xml.write(junit, result)
    _emit_rehearsal(result, output)


def register(groups: dict[str, typer.Typer], app: typer.Typer) -> None:
    @groups["upgrade"].command("docker")
    def upgrade_docker(
        to: Annotated[
            str, typer.Option("--to", metavar="IMAGE", help="The new image (e.g. postgis/postgis:17-3.5).")
        ],
        container: Container = None,
        volume: Volume = None,
        from_image: FromImage = None,
        pgdata: Pgdata = None,
        mode: Mode = "link",
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan only; change nothing.")] = False,
        no_verify: Annotated[
            bool, typer.Option("--no-verify", help="Skip the before/after fingerprint.")
        ] = False,
        replica: Annotated[
            list[str] | None,
            typer.Option(
                "--replica",
                metavar="NAME",
                help="A standby container to re-seed (default: those streaming from it).",
            ),
        ] = None,
        no_replicas: Annotated[bool, typer.Option("--no-replicas", help="Leave standbys alone.")] = False,
        downtime: Annotated[
            str,
            typer.Option(
                metavar="WINDOW",
                callback=cli_options.choice("--downtime", cli_options.DOWNTIMES),
                help="verified (default): everything, fingerprints included, while the database is down; "
                "minimal: only stop, pg_upgrade and restart are down, extension updates, reindex, analyze "
                "and health checks run on the serving database (no fingerprints; needs --container)",
            ),
        ] = "verified",
        no_auto_restore: Annotated[
            bool,
            typer.Option(
                "--no-auto-restore",
                help="On a failure before the point of no return, leave the database stopped for "
                "inspection (default: pgleap restarts the old container by itself).",
            ),
        ] = False,
        yes: Yes = False,
        output: Output = "text",
    ) -> None:
        """Upgrade a container (stopped, upgraded, recreated on --to) or a bare volume."""
        target, state = _target(container, volume, from_image, pgdata)
        if not dry_run:
            cli_options.require_yes_without_terminal(
                f"upgrade {target.key} (stops the database)",
                yes=yes,
                command=f"{target.command('upgrade')} --to {to}",
            )

        def ask(plan) -> None:
            summary = cli_options.upgrade_summary(target.key, plan)
            cli_options.confirm(summary, yes=yes, command=f"{target.command('upgrade')} --to {to}")

        report = Report(quiet=output != "text")
        replicas = [] if no_replicas else (replica or None)
        with locked(target.key):
            result = _guarded_upgrade(
                target, state, report, auto_restore=not no_auto_restore,
                run=lambda: engine.upgrade(
                    target, to, mode=mode, verify_data=not no_verify, downtime=downtime, dry_run=dry_run,
                    report=report, state=state, replicas=replicas, confirm=ask,
                ),
            )  # fmt: skip
        _emit(_complete(result, target, state), output, report)

    @groups["rehearse"].command("docker")
    def rehearse_docker(
        container: Annotated[
            str, typer.Option("--container", "-c", metavar="NAME", help="The running database container.")
        ],
        to: Annotated[str, typer.Option("--to", metavar="IMAGE", help="The new image.")],
        mode: Mode = "link",
        keep: Annotated[
            bool, typer.Option("--keep", help="Leave the upgraded clone running for a test app.")
        ] = False,
        port: Annotated[int | None, typer.Option(help="Host port for the kept clone (default: any).")] = None,
        junit: Junit = None,
        output: Output = "text",
    ) -> None:
        """Clone the running database (pg_basebackup), upgrade the clone, report go / no-go."""
        from toolkit.docker.rehearse import no_go, rehearse_docker
        from toolkit.docker.runtime import DockerRuntime

        report = Report(quiet=output != "text")
        rt = DockerRuntime()
        try:
            result = rehearse_docker(rt, container, to, mode=mode, keep=keep, port=port, report=report)
        except PgleapError as exc:
            result = no_go(exc, container, to, report)
            _report_rehearsal(result, output, junit)
            raise typer.Exit(exc.exit_code) from None
        _report_rehearsal(result, output, junit)

    @groups["rehearse"].command("dump")
    def rehearse_dump(
        files: Annotated[
            list[Path], typer.Argument(help="pg_dump archives (-Fc, -Fd) or .sql / .sql.gz files.")
        ],
        from_image: Annotated[
            str, typer.Option("--from", metavar="IMAGE", help="The old image (e.g. postgis/postgis:13-3.4).")
        ],
        to: Annotated[
            str, typer.Option("--to", metavar="IMAGE", help="The new image (e.g. postgis/postgis:17-3.5).")
        ],
        roles: Annotated[
            Path | None, typer.Option("--roles", help="The output of pg_dumpall --roles-only, loaded first.")
        ] = None,
        database: Annotated[
            str, typer.Option("--database", help="Database for plain SQL files (archives create their own).")
        ] = "postgres",
        mode: Mode = "link",
        keep: Annotated[
            bool, typer.Option("--keep", help="Leave the upgraded container on a port of 127.0.0.1.")
        ] = False,
        junit: Junit = None,
        output: Output = "text",
    ) -> None:
        """CI gate: load a dump into the old image, upgrade it to the new one, report go / no-go."""
        from toolkit.docker.rehearse import no_go
        from toolkit.docker.rehearse_dump import rehearse_dump as run
        from toolkit.docker.runtime import DockerRuntime

        report = Report(quiet=output != "text")
        try:
            result = run(DockerRuntime(), files, from_image=from_image, to_image=to, roles=roles,
                         database=database, mode=mode, keep=keep, report=report)  # fmt: skip
        except PgleapError as exc:
            result = {**no_go(exc, ", ".join(map(str, files)), to, report), "from_image": from_image}
            _report_rehearsal(result, output, junit)
            raise typer.Exit(exc.exit_code) from None
        _report_rehearsal(result, output, junit)

    @groups["plan"].command("docker")
    def plan_docker(
        to: Annotated[str, typer.Option("--to", metavar="IMAGE", help="The new image.")],
        container: Container = None,
        volume: Volume = None,
        from_image: FromImage = None,
        pgdata: Pgdata = None,
        mode: Mode = "link",
        output: Output = "text",
    ) -> None:
        """Print the plan (same as `upgrade docker --dry-run`)."""
        target, _ = _target(container, volume, from_image, pgdata)
        report = Report(quiet=output != "text")
        result = engine.upgrade(
            target, to, mode=mode, dry_run=True, report=report, state=RunState("dry-run-unused")
        )
        if output != "text":
            _emit(result.get("plan", {}), output, report)

    @groups["resume"].command("docker")
    def resume_docker(
        container: Container = None,
        volume: Volume = None,
        accept: Annotated[
            list[str] | None,
            typer.Option(
                "--accept",
                metavar="CHECK",
                help="After an exit 4 you have read: go on despite the failed check (fingerprint or health) "
                "and start the upgraded database. Repeatable.",
            ),
        ] = None,
        output: Output = "text",
    ) -> None:
        """Continue an interrupted upgrade where it stopped."""
        accepted = tuple(accept or ())
        unknown = [a for a in accepted if a not in ACCEPTABLE]
        if unknown:
            raise typer.BadParameter(f"--accept takes {' or '.join(ACCEPTABLE)}, not {', '.join(unknown)}")
        target, state = _target(container, volume, None, None, recorded=True)
        if not state.data.get("plan"):
            raise PgleapError(f"no interrupted upgrade recorded for {target.key}")
        report = Report(quiet=output != "text")
        with locked(target.key):
            result = _guarded_upgrade(
                target, state, report, auto_restore=False,
                run=lambda: engine.upgrade(
                    target, state.data["target_image"], report=report, state=state, accept=accepted
                ),
            )  # fmt: skip
        _emit(_complete(result, target, state), output, report)

    @groups["rollback"].command("docker")
    def rollback_docker(
        container: Container = None,
        volume: Volume = None,
        yes: Annotated[
            bool,
            typer.Option(
                "--yes",
                "-y",
                help="Do not ask (required without a terminal); also accepts losing the writes made on the "
                "new cluster (copy/clone).",
            ),
        ] = False,
        output: Output = "text",
    ) -> None:
        """Put the old cluster back on its old image (the new one is kept aside; see `cleanup docker`)."""

        def ask(loss: str) -> bool:
            return typer.confirm(f"{loss}. Roll back anyway?", default=False, err=True)

        confirm = (lambda _loss: True) if yes else (ask if cli_options.interactive() else None)

        def step(target, *, report, state):
            def ask_plain() -> None:  # rollback is possible and loses nothing: still ask first
                plan = engine.plan_from_dict(state.data["plan"])
                cli_options.confirm(
                    f"roll back {target.key}: the old cluster (PostgreSQL {plan.old_major}) comes back on "
                    f"{plan.source_image}, the upgraded one is stopped and kept aside",
                    yes=yes,
                    command=target.command("rollback"),
                )

            return undo.rollback(target, report=report, state=state, confirm=confirm, ask=ask_plain)

        _lifecycle(step, container, volume, output)

    @groups["cleanup"].command("docker")
    def cleanup_docker(
        container: Container = None, volume: Volume = None, yes: Yes = False, output: Output = "text"
    ) -> None:
        """After a rollback or an automatic restore: delete the kept new cluster and the scratch volume."""
        target, state = _target(container, volume, None, None)
        report = Report(quiet=output != "text")
        if not state.data.get("plan"):  # a recorded upgrade is refused by cleanup itself, unasked
            cli_options.confirm(
                f"clean up {target.key}: delete the kept new cluster (if any) and pgleap's scratch volume",
                yes=yes,
                command=target.command("cleanup"),
            )
        with locked(target.key):
            result = undo.cleanup(target, report=report, state=state)
        _emit(result, output, report)

    @groups["finalize"].command("docker")
    def finalize_docker(
        container: Container = None, volume: Volume = None, yes: Yes = False, output: Output = "text"
    ) -> None:
        """Delete the old cluster, the old container and pgleap's scratch volume."""

        def step(target, *, report, state):
            if state.phase == "done":  # anything else is refused by finalize itself, unasked
                cli_options.confirm(
                    f"finalize {target.key}: delete the old cluster (PostgreSQL "
                    f"{state.data.get('plan', {}).get('old_major', '?')}), the old container and pgleap's "
                    "scratch volume; no rollback after this",
                    yes=yes,
                    command=target.command("finalize"),
                )
            return engine.finalize(target, report=report, state=state)

        _lifecycle(step, container, volume, output)

    @groups["status"].command("docker")
    def status_docker(
        container: Container = None,
        volume: Volume = None,
        from_image: FromImage = None,
        output: Output = "text",
    ) -> None:
        """The recorded phase of an upgrade, or the last operation (finalize, rollback) and when."""
        target, state = _target(container, volume, from_image, None)
        data = {k: v for k, v in state.data.items() if k != "fingerprint_before"}
        result = {"target": target.key, "phase": None, **data, "pgleap_version": __version__}
        if output != "text":
            _emit(result, output, Report(quiet=True))
            return
        _status_text(result)

    @groups["inspect"].command("docker")
    def inspect_docker(
        container: Container = None,
        volume: Volume = None,
        from_image: FromImage = None,
        pgdata: Pgdata = None,
        output: Output = "text",
    ) -> None:
        """What pgleap finds: image, PGDATA, volume, data directory state (read-only)."""
        target, _ = _target(container, volume, from_image, pgdata)
        data = target.probe_data()
        image = target.probe_image(target.source_image)
        _emit_plain(
            {
                    **target.describe(),
                    "postgres_version": image.version,
                    "glibc": image.glibc,
                    "icu": image.icu,
                    "data": {"status": data.status, "pg_version": data.pg_version, "state": data.state,
                             "checksums": data.checksums, "data_mb": round(data.data_kb / 1024, 1),
                             "owner_uid": data.owner_uid},
            },
            output,
        )  # fmt: skip

    @app.command("demo")
    def demo(
        keep: Annotated[bool, typer.Option(help="Keep the demo container and volume.")] = False,
        mode: Mode = "link",
        old: Annotated[
            str | None, typer.Option(help="Old image tag (default: oldest in the matrix).")
        ] = None,
        new: Annotated[str | None, typer.Option(help="New image tag (default: newest).")] = None,
        rows: Annotated[int, typer.Option(help="Points to seed.")] = 20000,
        output: Output = "text",
    ) -> None:
        """Seed an old PostGIS database on Docker, upgrade it across the widest jump, print the proof."""
        from toolkit.docker.demo import run_demo

        report = Report(quiet=output != "text")
        result = run_demo(old_tag=old, new_tag=new, mode=mode, keep=keep, rows=rows, report=report)
        _emit(result, output, report)
        raise typer.Exit(EXIT_OK)
