"""`pgleap plan|upgrade|status|resume|rollback|finalize sts NAME --strategy logical`: thin, as the
Docker commands in toolkit/cli/logical.py, over the same engine (toolkit/engine/logical.py) with
the Kubernetes side (toolkit/kube/logical.py).

kube_sts dispatches here on `--strategy logical`; kube_lifecycle dispatches resume, rollback
and finalize here when a logical run is recorded (its ConfigMap exists).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from toolkit.cli import options as cli_options
from toolkit.cli.kube_deps import load_scripts
from toolkit.cli.logical import emit
from toolkit.core.report import Report, console
from toolkit.engine import logical as engine
from toolkit.engine import logical_undo
from toolkit.errors import PgleapError, Refused

err = console(stderr=True)


def _side(kube: Any, ns: str, name: str, output: str):
    from toolkit.kube.facts import find_postgres_container
    from toolkit.kube.logical import KubeState, LogicalKube

    state = KubeState(kube, ns, name)
    source = state.data.get("logical_source") or {}
    container = source.get("container")
    if not container:
        sts = kube.get("StatefulSet", ns, name)
        if sts is None:
            raise PgleapError(f"StatefulSet {ns}/{name} not found", "check the name and the namespace (-n)")
        container = find_postgres_container(sts)["name"]
    log = (
        (lambda line: err.print(line, markup=False, highlight=False))
        if output == "text"
        else (lambda _l: None)
    )
    side = LogicalKube(
        kube,
        ns,
        name,
        container=container,
        state=state,
        log=log,
        prog=cli_options.prog(),
        scripts=load_scripts(),
    )
    return side, state


def recorded(kube: Any, ns: str, name: str) -> bool:
    """Whether a logical run is recorded for this StatefulSet (lifecycle dispatch)."""
    from toolkit.kube.logical import KubeState

    return KubeState(kube, ns, name).exists


def refuse_inplace_over(kube: Any, ns: str, name: str) -> None:
    """An in-place upgrade must not start over an open logical run."""
    if recorded(kube, ns, name):
        raise Refused(
            f"a logical upgrade is recorded for StatefulSet {name}",
            f"finish it (`{cli_options.prog()} finalize sts {name}`) or roll it back first",
        )


@contextmanager
def _held(side, state, operation: str) -> Iterator[None]:
    """One run at a time per StatefulSet: the in-place commands' lease, on the logical ConfigMap."""
    from toolkit.kube.lease import Lease

    lease = Lease(side.kube, side.namespace, state.name, operation, log=side.log)
    lease.acquire()
    state.annotations = lease.annotation
    try:
        yield
    finally:
        lease.release()


def _kube_refusals(side) -> None:
    refusals = side.refusals()
    if refusals:
        (message, hint), *more = refusals
        raise Refused(message, hint + "".join(f"\nalso refused: {m} ({h})" for m, h in more))


def plan(kube: Any, ns: str, name: str, to: str, output: str, **options: bool) -> None:
    """The logical plan read from the live servers (port-forward, read-only) and the objects."""
    from toolkit.kube import logical_objects as lo
    from toolkit.kube.logical_reads import plan_lines as read_lines
    from toolkit.kube.logical_standbys import plan_lines

    side, _state = _side(kube, ns, name, output)
    with contextlib.closing(side):
        the_plan = engine.plan(side, to, **options).to_dict()
        services = side.services()
        refusals = [{"message": m, "hint": h} for m, h in side.refusals()]
        source = side.describe()
        objects = lo.plan_lines(name, services) + plan_lines(source) + read_lines(source)
    the_plan["refusals"] = list(the_plan["refusals"]) + refusals
    result = {"strategy": "logical", "statefulset": f"{ns}/{name}", "target_image": to,
              "services": services, "objects": objects, "plan": the_plan}  # fmt: skip
    if output == "text":
        for line in result.pop("objects"):
            console(stderr=False).print(line, markup=False, highlight=False)
        result.pop("services")
    emit(result, output)


def upgrade(
    kube: Any,
    ns: str,
    name: str,
    to: str,
    *,
    dry_run: bool,
    yes: bool,
    output: str,
    sync_timeout: float | None = None,
    **options: bool,
) -> None:
    if dry_run:
        plan(kube, ns, name, to, output, **options)
        err.print("dry run: nothing was changed")
        return
    cli_options.require_yes_without_terminal(
        f"upgrade {ns}/{name} over logical replication (a new StatefulSet {name}-next beside it)",
        yes=yes,
        command=f"{cli_options.prog()} upgrade sts {name} -n {ns} --to {to} --strategy logical",
    )
    side, state = _side(kube, ns, name, output)
    with contextlib.closing(side), _held(side, state, "logical upgrade"):
        if state.phase is None:
            _kube_refusals(side)
        report = Report(quiet=output != "text")
        timeout = {"sync_timeout": sync_timeout} if sync_timeout else {}
        result = engine.upgrade(side, to, report=report, state=state, **options, **timeout)
    result.pop("container", None)
    result["statefulset"] = f"{ns}/{name}"
    emit(result, output)


def status(kube: Any, ns: str, name: str, output: str) -> None:
    from toolkit.kube.logical import KubeState

    state = KubeState(kube, ns, name)
    data = state.data
    source = data.get("logical_source") or {}
    result = {"strategy": "logical", "statefulset": f"{ns}/{name}", "phase": state.phase,
              "target_image": data.get("target_image"), "next": source.get("next"),
              "services": sorted(source.get("services") or {}), "pause_seconds": data.get("pause_seconds")}  # fmt: skip
    if read := source.get("read"):  # a read StatefulSet R and its R-next
        result["read"] = {"statefulset": read["statefulset"], "next": read["next"],
                          "services": sorted({*read["services"], *(read.get("pod_services") or {})}), "reseeded": [
                              s for s in data.get("standbys_reseeded", []) if s.startswith(read["statefulset"] + "-")]}  # fmt: skip
    emit(result, output)


WHAT = {
    "resume": "continue the logical upgrade (the old StatefulSet serves until the switch)",
    "rollback": "clients go back to the old StatefulSet with every write made on the new one; {next} is deleted",
    "finalize": "StatefulSet {name} and its PVCs (the old cluster's data) are deleted; no rollback after this",
}


def lifecycle(kube: Any, ns: str, name: str, verb: str, *, dry_run: bool, yes: bool, output: str) -> None:
    """resume, rollback or finalize of a recorded logical upgrade (the same confirmation as in place)."""
    side, state = _side(kube, ns, name, output)
    with contextlib.closing(side):
        if dry_run:
            emit({"strategy": "logical", "phase": state.phase, "would": verb}, output)
            err.print("dry run: nothing was changed")
            return
        cli_options.confirm(
            f"{verb} {ns}/{name} — " + WHAT[verb].format(name=name, next=side.next_name),
            yes=yes,
            command=f"{cli_options.prog()} {verb} sts {name} -n {ns}",
        )
        with _held(side, state, f"logical {verb}"):
            result = _step(side, state, verb, output)
    emit(result, output)


def _step(side, state, verb: str, output: str) -> dict:
    report = Report(quiet=output != "text")
    if verb == "resume":
        target = state.data.get("target_image")
        if not target:
            raise PgleapError("the recorded logical run names no target image")
        return engine.upgrade(side, target, report=report, state=state)
    if verb == "rollback":
        return logical_undo.rollback(side, report=report, state=state)
    return logical_undo.finalize(side, report=report, state=state)
