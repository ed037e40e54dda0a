"""`pgleap upgrade docker --strategy logical` and its rollback/finalize: thin, as the other commands.

Kept apart from toolkit/cli/docker.py, which only dispatches here when the strategy is logical.
"""

from __future__ import annotations

import json

import typer

from toolkit.cli import options as cli_options
from toolkit.core.report import Report, console
from toolkit.engine import logical as engine
from toolkit.engine import logical_undo
from toolkit.engine.logical_pause import HANDING_OVER
from toolkit.engine.state import RunState, locked
from toolkit.errors import PgleapError, Refused

out = console(stderr=False)


def _side(container: str | None):
    from toolkit.docker.logical import for_container
    from toolkit.docker.runtime import DockerRuntime

    if not container:
        raise typer.BadParameter("--strategy logical needs --container NAME (a running container)")
    side = for_container(DockerRuntime(), container)
    return side, f"docker-{side.source.volume.key}"


def recorded(container: str | None) -> bool:
    """Whether the run recorded for this container is a logical one (rollback/finalize dispatch)."""
    if not container:
        return False
    from toolkit.docker.runtime import DockerRuntime

    rt = DockerRuntime()
    holder = f"{container}-pgleap-old" if rt.exists(f"{container}-pgleap-old") else container
    if not rt.exists(holder):
        return False
    state = RunState(f"docker-{rt.source_container(holder).volume.key}")
    return state.data.get("strategy") == "logical"


def refuse_inplace_over(state: RunState) -> None:
    """An in-place upgrade must not start over a logical run that is still open."""
    if state.data.get("strategy") == "logical":
        raise Refused(
            f"a logical upgrade is recorded for this container (phase {state.phase})",
            "finish it with `pgleap upgrade docker … --strategy logical` and `pgleap finalize docker`, or "
            "`pgleap rollback docker`",
        )


def emit(result: dict, output: str) -> None:
    if output == "json":
        print(json.dumps(result, indent=2, default=str))
    elif output == "yaml":
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(result, default=str)), sort_keys=False))
    else:
        for key, value in result.items():
            if key in ("phases", "plan"):
                continue
            out.print(f"{key}: {value}", markup=False)
        if result.get("plan"):
            plan = result["plan"]
            for item in plan["carried"]:
                objects = f" ({', '.join(item['objects'])})" if item["objects"] else ""
                out.print(f"{item['what']} [{item['database']}]{objects}: {item['how']}", markup=False)
            for refusal in plan["refusals"]:
                out.print(f"refused: {refusal['message']} ({refusal['hint']})", markup=False)


def upgrade(
    container: str | None,
    to: str,
    *,
    restart_for_wal_level: bool,
    replica_identity_full: bool,
    verify_after: bool = False,
    sync_timeout: float | None = None,
    dry_run: bool,
    yes: bool,
    output: str,
) -> None:
    side, key = _side(container)
    state = RunState(key)
    if state.data.get("plan") and state.data.get("strategy") != "logical":
        raise Refused(
            f"an in-place upgrade is recorded for {container}",
            "finish it (`pgleap finalize docker`) or roll it back first",
        )
    command = f"pgleap upgrade docker -c {container} --to {to} --strategy logical"
    if not dry_run:
        cli_options.require_yes_without_terminal(
            f"upgrade {container} over logical replication (a new volume and container beside it)",
            yes=yes,
            command=command,
        )
    report = Report(quiet=output != "text")
    with locked(key):
        result = engine.upgrade(
            side, to, report=report, state=state, restart_for_wal_level=restart_for_wal_level,
            replica_identity_full=replica_identity_full, verify_after=verify_after, dry_run=dry_run,
            **({"sync_timeout": sync_timeout} if sync_timeout else {}),
        )  # fmt: skip
    emit(result, output)


def resume(container: str | None, *, output: str, sync_timeout: float | None = None) -> None:
    """`pgleap resume docker` over a logical run: the upgrade again, with the recorded image and
    choices (each step checks before it acts; a run stopped in the hand-over is finished)."""
    side, key = _side(container)
    state = RunState(key)
    report = Report(quiet=output != "text")
    with locked(key):
        if state.phase != HANDING_OVER:  # there NAME may be the old cluster, writable again if started
            side.start_stopped()
        result = engine.upgrade(
            side, state.data["target_image"], report=report, state=state,
            verify_after=not state.data.get("verify_in_pause", True), sync_timeout=sync_timeout,
        )  # fmt: skip
    emit(result, output)


def lifecycle(verb: str, container: str | None, *, yes: bool, output: str) -> None:
    """rollback or finalize of a recorded logical upgrade."""
    side, key = _side(container)
    state = RunState(key)
    if state.data.get("strategy") != "logical":
        raise PgleapError(f"no logical upgrade recorded for {container}")
    what = (
        "rollback: clients go back to the old cluster with every write made on the new one"
        if verb == "rollback"
        else "finalize: the old cluster, its containers and its volume are deleted; no rollback after this"
    )
    cli_options.confirm(
        f"{verb} {container} — {what}", yes=yes, command=f"pgleap {verb} docker -c {container}"
    )
    report = Report(quiet=output != "text")
    with locked(key):
        if state.phase != HANDING_OVER:  # there NAME may be the old cluster, writable again if started
            side.start_stopped()
        step = logical_undo.rollback if verb == "rollback" else logical_undo.finalize
        result = step(side, report=report, state=state)
    emit(result, output)
