"""`pgleap resume|rollback|finalize sts NAME` and `pgleap rehearse sts NAME`: the lifecycle commands."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.cli import options as cli_options
from toolkit.cli.kube_deps import deps, env_for, ns_for, runtime_for, scripts, with_way_forward
from toolkit.cli.kube_options import (
    ContextOpt,
    DryRunOpt,
    InitdbOpt,
    KubeconfigOpt,
    ModeOpt,
    NameArg,
    NamespaceOpt,
    OutputOpt,
    SetEnvOpt,
    SuperuserOpt,
    YesOpt,
)
from toolkit.cli.kube_output import err, outcome_text, print_data, rehearsal_text
from toolkit.core.report import console
from toolkit.errors import EnvironmentProblem
from toolkit.kube import cleanup as kube_cleanup
from toolkit.kube import history
from toolkit.kube import interrupted as kube_interrupted

WHAT = {
    "resume": "continue the recorded operation (the database may stop)",
    "rollback": "stop the upgraded database and bring the old data directory back",
    "finalize": "delete the old data directory; no rollback after this",
}


def _lifecycle(
    command: str,
    name: str,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    output: str,
    dry_run: bool,
    yes: bool,
    accept: tuple[str, ...] = (),
) -> None:
    """One body for resume, rollback and finalize: dry run, confirm, call the runtime, print."""
    ns = ns_for(namespace, kubeconfig, context)
    rt = runtime_for(kubeconfig, context, output)
    if dry_run:
        data = rt.status(ns, name)
        print_data(
            data,
            output,
            lambda: console(stderr=False).print(f"{command} would continue from: {data}", markup=False),
        )
        err.print("dry run: nothing was changed")
        return
    cli_options.confirm(
        f"{command} {ns}/{name}: {WHAT[command]}",
        yes=yes,
        command=f"{cli_options.prog()} {command} sts {name} -n {ns}",
    )
    before = rt.read_state(ns, name)  # finalize deletes it: what finished is recorded from it
    if command == "resume":
        result = kube_interrupted.guarded(
            rt,
            ns,
            name,
            lambda: with_way_forward(
                rt,
                ns,
                name,
                lambda: rt.resume(
                    ns,
                    name,
                    scripts=scripts(),
                    post_upgrade=deps().post_upgrade,
                    standby_probe=deps().standby_probe,
                    accept=accept,
                ),
            ),
            prog=cli_options.prog(),
            resume=True,
        )
    elif command == "rollback":
        # --yes also accepts what a copy/clone rollback drops (as `rollback docker --yes`)
        def ask(loss: str) -> bool:
            return typer.confirm(f"{loss}. Roll back anyway?", default=False, err=True)

        confirm = (lambda _loss: True) if yes else (ask if cli_options.interactive() else None)
        result = rt.rollback(ns, name, scripts=scripts(), confirm=confirm)
    else:
        result = rt.finalize(ns, name, scripts=scripts())
    if before is not None and result.changed and history.FINISHED.get(result.operation) == result.phase:
        after = {"after": before.operation} if before.operation != result.operation else {}
        history.record(rt.kube, before.plan, result.operation, result.phase, **after)
    outcome = {**result.as_dict(), **history.machine_fields(rt.kube, ns, name)}
    print_data(outcome, output, lambda: outcome_text(outcome))


def resume_sts(
    name: NameArg,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = "text",
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    accept: cli_options.Accept = None,
) -> None:
    """Continue a recorded upgrade, rollback or finalize from its last phase."""
    if "health" in (accept or ()):
        raise typer.BadParameter(
            "on Kubernetes it takes fingerprint (the health checks run on the serving database)",
            param_hint="--accept",
        )
    _lifecycle("resume", name, kubeconfig, context, namespace, output, dry_run, yes, tuple(accept or ()))


def _lifecycle_command(command: str, doc: str):
    """rollback and finalize: the same options, one body (`_lifecycle`); a module-level function each."""

    def run(
        name: NameArg,
        kubeconfig: KubeconfigOpt = None,
        context: ContextOpt = None,
        namespace: NamespaceOpt = None,
        output: OutputOpt = "text",
        dry_run: DryRunOpt = False,
        yes: YesOpt = False,
    ) -> None:
        _lifecycle(command, name, kubeconfig, context, namespace, output, dry_run, yes)

    run.__name__ = run.__qualname__ = f"{command}_sts"
    run.__doc__ = doc
    return run


rollback_sts = _lifecycle_command("rollback", "Restore the original StatefulSet and the old data directory.")
finalize_sts = _lifecycle_command(
    "finalize", "Remove the old data directory and pgleap's Jobs and ConfigMaps."
)


def cleanup_sts(
    name: NameArg,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = "text",
    yes: YesOpt = False,
) -> None:
    """After a rollback (or a finalize): delete the kept new cluster and pgleap's Jobs and ConfigMaps."""
    ns = ns_for(namespace, kubeconfig, context)
    rt = runtime_for(kubeconfig, context, output)
    refused = kube_cleanup.refusal(rt, ns, name)  # a recorded upgrade is refused unasked
    if refused is not None:
        raise refused
    cli_options.confirm(
        kube_cleanup.what(rt, ns, name), yes=yes, command=f"{cli_options.prog()} cleanup sts {name} -n {ns}"
    )
    outcome = {
        **kube_cleanup.cleanup(rt, ns, name, scripts=scripts()).as_dict(),
        **history.machine_fields(rt.kube, ns, name),
    }
    print_data(outcome, output, lambda: outcome_text(outcome))


def rehearse_sts(
    name: NameArg,
    to: Annotated[
        str | None, typer.Option("--to", metavar="IMAGE", help="Target image, e.g. postgis/postgis:17-3.5.")
    ] = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = "text",
    mode: ModeOpt = "link",
    from_snapshot: Annotated[
        bool,
        typer.Option(
            "--from-snapshot",
            help="Clone from a VolumeSnapshot of the running volume instead of pg_basebackup "
            "(no replication login needed; needs a VolumeSnapshotClass).",
        ),
    ] = False,
    snapshot_class: Annotated[
        str | None,
        typer.Option("--snapshot-class", metavar="CLASS", help="VolumeSnapshotClass for --from-snapshot."),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Leave the upgraded clone running behind its own Service for a test app."
        ),
    ] = False,
    remove: Annotated[
        bool, typer.Option("--remove", help="Remove a kept (or interrupted) rehearsal, then exit.")
    ] = False,
    dry_run: DryRunOpt = False,
    superuser: SuperuserOpt = None,
    initdb_args: InitdbOpt = "",
    set_env: SetEnvOpt = None,
    yes: YesOpt = False,
) -> None:
    """Clone the StatefulSet's database while it runs, upgrade the clone, report go / no-go.

    Production is only read. Exit code 0 is go; otherwise the no-go reason's code."""
    from toolkit.kube.rehearsal import KubeRehearsal

    ns = ns_for(namespace, kubeconfig, context)
    rehearsal = KubeRehearsal(runtime_for(kubeconfig, context, output))
    if remove:
        cli_options.confirm(
            f"remove the rehearsal of {ns}/{name}: its clone, Jobs and volumes are deleted",
            yes=yes,
            command=f"{cli_options.prog()} rehearse sts {name} -n {ns} --remove",
        )
        removed = rehearsal.remove(ns, name)
        print_data(
            {"removed": removed},
            output,
            lambda: console(stderr=False).print("\n".join(removed) or f"no rehearsal of {ns}/{name} found"),
        )
        return
    if not to:
        raise typer.BadParameter("give the target image", param_hint="--to")
    facts = rehearsal.rt.inspect(ns, name)
    if dry_run:
        objs = rehearsal.objects(
            ns,
            name,
            to,
            scripts=scripts(required=False),
            job_env=env_for(facts, superuser, initdb_args, set_env),
            mode=mode,
            from_snapshot=from_snapshot,
            snapshot_class=snapshot_class,
        )
        print_data(objs, output if output != "text" else "yaml", lambda: None)
        err.print("dry run: nothing was changed")
        return
    if deps().rehearsal_hooks is None:
        raise EnvironmentProblem("no database hooks given for the rehearsal", "run it through `pgleap`")
    result = rehearsal.rehearse(
        ns,
        name,
        to,
        scripts=scripts(),
        hooks=deps().rehearsal_hooks(),
        job_env=env_for(facts, superuser, initdb_args, set_env),
        mode=mode,
        from_snapshot=from_snapshot,
        snapshot_class=snapshot_class,
        keep=keep,
    )
    print_data(result, output, lambda: rehearsal_text(result))
    if result["verdict"] != "go":
        raise typer.Exit(result.get("exit_code") or 1)
