"""Docker commands: `pgleap upgrade docker …`, `pgleap demo` and friends. Thin: parse, call, print.

Each command is a module-level function; `register` attaches them to the verb groups of cli/app.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit import __version__
from toolkit.cli import options as cli_options
from toolkit.cli.docker_flow import (
    check_given,
    finish_under_way,
    guarded_upgrade,
    resolve_target,
    run_lifecycle,
    with_rollback_facts,
)
from toolkit.cli.docker_output import (
    emit,
    emit_plain,
    report_rehearsal,
    status_text,
)
from toolkit.cli.options import Container, FromImage, Junit, Mode, Output, Pgdata, Volume, Yes
from toolkit.core.report import Report
from toolkit.engine import runner as engine
from toolkit.engine import undo
from toolkit.engine.state import RunState, locked
from toolkit.errors import EXIT_OK, PgleapError


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
    no_verify: cli_options.NoVerify = False,
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
    no_auto_restore: cli_options.NoAutoRestore = False,
    superuser: cli_options.Superuser = None,
    initdb_args: cli_options.InitdbArgs = "",
    yes: Yes = False,
    output: Output = "text",
    strategy: cli_options.Strategy = "inplace",
    restart_for_wal_level: cli_options.RestartForWal = False,
    replica_identity_full: cli_options.IdentityFull = False,
    verify_after: cli_options.VerifyAfter = False,
    sync_timeout: cli_options.SyncTimeout = None,
) -> None:
    """Upgrade a container (stopped, upgraded, recreated on --to) or a bare volume."""
    from toolkit.cli import logical

    if strategy == "logical":
        return logical.upgrade(
            container, to, restart_for_wal_level=restart_for_wal_level,
            replica_identity_full=replica_identity_full, verify_after=verify_after, dry_run=dry_run, yes=yes,
            output=output, sync_timeout=sync_timeout,
        )  # fmt: skip
    cli_options.refuse_flags_without_logical(
        strategy, restart_for_wal_level=restart_for_wal_level, replica_identity_full=replica_identity_full,
        verify_after=verify_after, sync_timeout=sync_timeout is not None,
    )  # fmt: skip
    target, state = resolve_target(container, volume, from_image, pgdata)
    logical.refuse_inplace_over(state)
    if not dry_run:
        cli_options.require_yes_without_terminal(
            f"upgrade {target.key} (stops the database)",
            yes=yes,
            command=f"{target.command('upgrade')} --to {to}",
        )

    def ask(plan) -> None:
        check_given(plan, superuser, initdb_args)
        summary = cli_options.upgrade_summary(target.key, plan, downtime, verify_data=not no_verify)
        cli_options.confirm(summary, yes=yes, command=f"{target.command('upgrade')} --to {to}")

    report = Report(quiet=output != "text")
    replicas = [] if no_replicas else (replica or None)
    with locked(target.key):
        result = guarded_upgrade(
            target, state, report, auto_restore=not no_auto_restore,
            run=lambda: engine.upgrade(
                target, to, mode=mode, verify_data=not no_verify, downtime=downtime, dry_run=dry_run,
                report=report, state=state, replicas=replicas, confirm=ask,
            ),
        )  # fmt: skip
    if dry_run and result.get("plan"):
        check_given(result["plan"], superuser, initdb_args)
    emit(with_rollback_facts(result, target, state), output, report)


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
        report_rehearsal(result, output, junit)
        raise typer.Exit(exc.exit_code) from None
    report_rehearsal(result, output, junit)


def rehearse_dump(
    files: Annotated[list[Path], typer.Argument(help="pg_dump archives (-Fc, -Fd) or .sql / .sql.gz files.")],
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
        report_rehearsal(result, output, junit)
        raise typer.Exit(exc.exit_code) from None
    report_rehearsal(result, output, junit)


def plan_docker(
    to: Annotated[str, typer.Option("--to", metavar="IMAGE", help="The new image.")],
    container: Container = None,
    volume: Volume = None,
    from_image: FromImage = None,
    pgdata: Pgdata = None,
    mode: Mode = "link",
    superuser: cli_options.Superuser = None,
    initdb_args: cli_options.InitdbArgs = "",
    output: Output = "text",
) -> None:
    """Print the plan (same as `upgrade docker --dry-run`)."""
    target, _ = resolve_target(container, volume, from_image, pgdata)
    report = Report(quiet=output != "text")
    result = engine.upgrade(
        target, to, mode=mode, dry_run=True, report=report, state=RunState("dry-run-unused")
    )
    if result.get("plan"):
        check_given(result["plan"], superuser, initdb_args)
    if output != "text":
        emit(result.get("plan", {}), output, report)


def resume_docker(
    container: Container = None,
    volume: Volume = None,
    accept: cli_options.Accept = None,
    output: Output = "text",
    sync_timeout: cli_options.SyncTimeout = None,
) -> None:
    """Continue an interrupted upgrade (or a rollback, finalize stopped half-way) where it stopped."""
    from toolkit.cli import logical

    if logical.recorded(container):  # --sync-timeout: the upgrade's (recorded) unless given again
        return logical.resume(container, output=output, sync_timeout=sync_timeout)
    cli_options.refuse_flags_without_logical("inplace", sync_timeout=sync_timeout is not None)
    accepted = tuple(accept or ())
    target, state = resolve_target(container, volume, None, None, recorded=True)
    if not state.data.get("plan"):
        raise PgleapError(f"no interrupted upgrade recorded for {target.key}")
    if finish_under_way(state, container, volume, output):
        return
    report = Report(quiet=output != "text")
    with locked(target.key):
        result = guarded_upgrade(
            target, state, report, auto_restore=False,
            run=lambda: engine.upgrade(
                target, state.data["target_image"], report=report, state=state, accept=accepted
            ),
        )  # fmt: skip
    emit(with_rollback_facts(result, target, state), output, report)


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
    from toolkit.cli import logical

    if logical.recorded(container):
        return logical.lifecycle("rollback", container, yes=yes, output=output)

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

    run_lifecycle(step, container, volume, output, verb="rollback")


def cleanup_docker(
    container: Container = None, volume: Volume = None, yes: Yes = False, output: Output = "text"
) -> None:
    """After a rollback or an automatic restore: delete the kept new cluster and the scratch volume."""
    target, state = resolve_target(container, volume, None, None)
    report = Report(quiet=output != "text")
    if not state.data.get("plan"):  # a recorded upgrade is refused by cleanup itself, unasked
        cli_options.confirm(
            f"clean up {target.key}: delete the kept new cluster (if any) and pgleap's scratch volume",
            yes=yes,
            command=target.command("cleanup"),
        )
    with locked(target.key):
        result = undo.cleanup(target, report=report, state=state)
    emit(result, output, report)


def finalize_docker(
    container: Container = None, volume: Volume = None, yes: Yes = False, output: Output = "text"
) -> None:
    """Delete the old cluster, the old container and pgleap's scratch volume."""
    from toolkit.cli import logical

    if logical.recorded(container):
        return logical.lifecycle("finalize", container, yes=yes, output=output)

    def step(target, *, report, state):
        # Asked once, before it starts (half done, it goes on unasked); refused ones are not asked.
        undo.refuse_under_way(target, state, allowed=undo.FINALIZE)
        if state.phase == "done" and not state.data.get(undo.FINALIZE):
            cli_options.confirm(
                f"finalize {target.key}: delete the old cluster (PostgreSQL "
                f"{state.data.get('plan', {}).get('old_major', '?')}), the old container and pgleap's "
                "scratch volume; no rollback after this",
                yes=yes,
                command=target.command("finalize"),
            )
        return undo.finalize(target, report=report, state=state)

    run_lifecycle(step, container, volume, output, verb="finalize")


def status_docker(
    container: Container = None,
    volume: Volume = None,
    from_image: FromImage = None,
    output: Output = "text",
) -> None:
    """The recorded phase of an upgrade, or the last operation (finalize, rollback) and when."""
    target, state = resolve_target(container, volume, from_image, None)
    data = {k: v for k, v in state.data.items() if k != "fingerprint_before"}
    result = {"target": target.key, "phase": None, **data, "pgleap_version": __version__}
    if output != "text":
        emit(result, output, Report(quiet=True))
        return
    status_text(result)


def inspect_docker(
    container: Container = None,
    volume: Volume = None,
    from_image: FromImage = None,
    pgdata: Pgdata = None,
    output: Output = "text",
) -> None:
    """What pgleap finds: image, PGDATA, volume, data directory state (read-only)."""
    target, _ = resolve_target(container, volume, from_image, pgdata)
    data = target.probe_data()
    image = target.probe_image(target.source_image)
    emit_plain(
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


def demo(
    keep: Annotated[bool, typer.Option(help="Keep the demo container and volume.")] = False,
    mode: Mode = "link",
    old: Annotated[str | None, typer.Option(help="Old image tag (default: oldest in the matrix).")] = None,
    new: Annotated[str | None, typer.Option(help="New image tag (default: newest).")] = None,
    rows: Annotated[int, typer.Option(help="Points to seed.")] = 20000,
    output: Output = "text",
) -> None:
    """Seed an old PostGIS database on Docker, upgrade it across the widest jump, print the proof."""
    from toolkit.docker.demo import run_demo

    report = Report(quiet=output != "text")
    result = run_demo(old_tag=old, new_tag=new, mode=mode, keep=keep, rows=rows, report=report)
    emit(result, output, report)
    raise typer.Exit(EXIT_OK)


def register(groups: dict[str, typer.Typer], app: typer.Typer) -> None:
    """Each command as the `docker` target of its verb (and `rehearse dump`, `demo`)."""
    groups["upgrade"].command("docker")(upgrade_docker)
    groups["rehearse"].command("docker")(rehearse_docker)
    groups["rehearse"].command("dump")(rehearse_dump)
    groups["plan"].command("docker")(plan_docker)
    groups["resume"].command("docker")(resume_docker)
    groups["rollback"].command("docker")(rollback_docker)
    groups["cleanup"].command("docker")(cleanup_docker)
    groups["finalize"].command("docker")(finalize_docker)
    groups["status"].command("docker")(status_docker)
    groups["inspect"].command("docker")(inspect_docker)
    app.command("demo")(demo)
