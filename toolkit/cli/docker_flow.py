"""How a Docker command runs: the target found or recorded, the lock, the automatic restore after a
failure, Ctrl-C/SIGTERM, the completed run's state."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable

import typer

from toolkit.cli.docker_output import emit
from toolkit.core import interrupt
from toolkit.core.interrupt import EXIT_INTERRUPTED
from toolkit.core.report import Report
from toolkit.engine import runner as engine
from toolkit.engine import undo
from toolkit.engine.state import RunState, locked
from toolkit.errors import EXIT_FAILED, PgleapError, Refused


def resolve_target(
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


def run_lifecycle(
    step: Callable[..., dict], container: str | None, volume: str | None, output: str, *, verb: str
) -> None:
    """rollback, finalize: `step` on the recorded upgrade of the target, under its lock; the result shown.

    Ctrl-C/SIGTERM stops it once the phase under way is recorded (a second signal at once); the same
    command run again goes on after the last phase recorded (engine/undo.py)."""
    target, state = resolve_target(container, volume, None, None, recorded=True)
    report = Report(quiet=output != "text")
    with locked(target.key):
        try:
            with interrupt.guarded():
                result = step(target, report=report, state=state)
        except (interrupt.Interrupted, KeyboardInterrupt) as exc:
            if isinstance(exc, interrupt.Interrupted):  # names the phase just recorded
                during = exc.during
            else:
                found = undo.under_way(RunState(target.key))
                where = f"phase {found[1]} recorded" if found else "nothing recorded yet"
                during = f"{interrupt.current_step(verb)} (stopped at once; {where})"
            raise PgleapError(
                f"{verb} interrupted during {during}",
                f"run `{target.command(verb)}` again: it goes on after the last phase recorded",
                exit_code=EXIT_INTERRUPTED,
            ) from None
    emit(result, output, report)


def finish_under_way(state: RunState, container: str | None, volume: str | None, output: str) -> bool:
    """`resume`: a rollback or finalize stopped half-way goes on (decided when it started), as the
    same command run again would; False when none is under way."""
    found = undo.under_way(state)
    if found is None:
        return False
    step = undo.rollback if found[0] == undo.ROLLBACK else undo.finalize
    run_lifecycle(step, container, volume, output, verb=found[0])
    return True


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


def guarded_upgrade(
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
        undo.reap(target, report)  # a step stopped at once may have left its helper running
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


def with_rollback_facts(result: dict, target, state: RunState) -> dict:
    """What a script needs besides the phases: where the old cluster is, whether rollback is open."""
    plan = state.data.get("plan")
    if plan and result.get("status") in ("upgraded", "already-done"):
        result["rollback_possible"] = engine.point_of_no_return(engine.plan_from_dict(plan)) is None
        result["old_container"] = target.old_name if getattr(target, "container_name", None) else None
    return result


def check_given(plan, superuser: str | None, initdb_args: str) -> None:
    """`--superuser`/`--initdb-args` on Docker: pgleap reads both from the old cluster itself (the
    OID-10 role; encoding, locale, checksums, WAL size, which pg_upgrade needs equal), so given
    values must agree with what it read; a contradiction is refused (exit 3) before any change.

    `plan` is the UpgradePlan, or its dict in a dry run's result. The same options on Kubernetes
    set what a Job cannot ask a running server."""
    read = plan if isinstance(plan, dict) else plan.to_dict()
    if superuser and superuser != read["superuser"]:
        raise Refused(
            f"--superuser {superuser}: the old cluster's bootstrap superuser (OID 10) is {read['superuser']}",
            f"drop --superuser (pgleap reads it from the cluster), or give --superuser {read['superuser']}",
        )
    flags = list(read["initdb_args"])
    other = [f for f in shlex.split(initdb_args or "") if f not in flags]
    if other:
        raise Refused(
            f"--initdb-args {' '.join(other)}: not what the old cluster was created with "
            f"(pgleap reads it: {' '.join(flags)})",
            "drop --initdb-args: on Docker the new cluster is initialised to match the old one, as "
            "pg_upgrade requires",
        )
