"""`pgleap inspect|plan|upgrade|status sts NAME`: read, plan and run an upgrade of a StatefulSet."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from rich.markup import escape
from rich.table import Table

from toolkit.cli import kube_logical
from toolkit.cli import options as cli_options
from toolkit.cli.kube_deps import deps, env_for, ns_for, overrides, runtime_for, scripts, with_way_forward
from toolkit.cli.kube_options import (
    AllowArgo,
    AllowFlux,
    AllowHelm,
    AllowOwner,
    AllowTf,
    ContextOpt,
    DryRunOpt,
    InitdbOpt,
    KeepReadersOpt,
    KubeconfigOpt,
    ModeOpt,
    NameArg,
    NamespaceOpt,
    OutputOpt,
    PatchRetentionOpt,
    SetEnvOpt,
    SnapshotOpt,
    SuperuserOpt,
    ToOpt,
    YesOpt,
)
from toolkit.cli.kube_output import err, replica_lines

# the printers under this module's old names, so that its command bodies stay as they were
from toolkit.cli.kube_output import outcome_text as _outcome_text
from toolkit.cli.kube_output import print_data as _print
from toolkit.core.report import console
from toolkit.kube import history, objects, render, render_doc
from toolkit.kube import interrupted as kube_interrupted
from toolkit.kube.facts import facts_as_dict
from toolkit.kube.plan import KubePlan


def inspect_sts(
    name: NameArg,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = "text",
) -> None:
    """Image, PG major, PGDATA, uid/fsGroup, PVCs, nodes, Services, PDBs, owners, snapshot classes."""
    ns = ns_for(namespace, kubeconfig, context)
    rt = runtime_for(kubeconfig, context, output)
    facts = rt.inspect(ns, name)
    topology, _, _ = rt.topology(ns, name, rt.read_sts(ns, name), facts)
    data = facts_as_dict(facts)
    data["topology"] = dataclasses.asdict(topology)

    def text() -> None:
        table = Table("", f"StatefulSet {ns}/{name}", show_header=True)
        rows = {
            "image": f"{facts.image.ref} ({facts.image.kind}, PostgreSQL {facts.image.major})",
            "container": facts.container,
            "PGDATA": f"{facts.pgdata}{'' if facts.pgdata_from_env else ' (image default)'}",
            "data mount": f"{facts.data_claim} at {facts.mount_path}"
            + (f" subPath {facts.sub_path}" if facts.sub_path else ""),
            "uid/gid/fsGroup": f"{facts.uid}/{facts.gid}/{facts.fs_group}",
            "replicas": str(facts.replicas),
            "standbys": (
                ", ".join(f"{sb.pod} ({sb.pvc})" for sb in topology.standbys)
                + f" [{topology.kind}, from {topology.primary_host}]"
                if topology.has_standbys and not topology.problem
                else topology.problem or "-"
            ),
            "retention": f"whenScaled={facts.when_scaled} whenDeleted={facts.when_deleted}",
            "node (last pod)": facts.pod_node or "-",
            "services": ", ".join(facts.services) or "-",
            "PDBs": ", ".join(facts.pdbs) or "-",
            "snapshot classes": ", ".join(facts.snapshot_classes) or "none for this volume",
            "owners": "; ".join(f"{o.kind} {o.name} ({o.evidence})" for o in facts.owners) or "-",
        }
        for c in facts.claims:
            rows[f"PVC {c.name}"] = (
                f"{c.size or '?'} {c.storage_class or '-'} {','.join(c.access_modes)}"
                if c.exists
                else "missing"
            )
        for k, v in rows.items():
            table.add_row(k, v)
        console(stderr=False).print(table)

    _print(data, output, text)


def plan_sts(
    name: NameArg,
    to: ToOpt,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = "text",
    snapshot: SnapshotOpt = None,
    mode: ModeOpt = "link",
    downtime: cli_options.Downtime = "verified",
    superuser: SuperuserOpt = None,
    initdb_args: InitdbOpt = "",
    set_env: SetEnvOpt = None,
    patch_retention: PatchRetentionOpt = True,
    allow_argocd: AllowArgo = False,
    allow_flux: AllowFlux = False,
    allow_helm: AllowHelm = False,
    allow_terraform: AllowTf = False,
    allow_owner_reference: AllowOwner = False,
    keep_readers: KeepReadersOpt = False,
    strategy: cli_options.Strategy = "inplace",
    restart_for_wal_level: cli_options.RestartForWal = False,
    replica_identity_full: cli_options.IdentityFull = False,
    verify_after: cli_options.VerifyAfter = False,
) -> None:
    """Every object the upgrade would create or change (-o yaml: manifests to commit).

    Reads the live cluster as `upgrade sts` does before its stop (same refusals). Changes
    nothing: only two short probe Pods (one per image) are created and deleted."""
    logical = {"restart_for_wal_level": restart_for_wal_level, "replica_identity_full": replica_identity_full,
               "verify_after": verify_after}  # fmt: skip
    cli_options.refuse_flags_without_logical(strategy, **logical)
    ns = ns_for(namespace, kubeconfig, context)
    if strategy == "logical":  # docs/logical.md: a new StatefulSet beside this one
        return kube_logical.plan(
            runtime_for(kubeconfig, context, output).kube, ns, name, to, output, **logical
        )
    _show_plan(
        runtime_for(kubeconfig, context, output), ns, name, to, output, snapshot, mode, downtime, superuser,
        initdb_args, set_env, patch_retention, keep_readers,
        overrides(allow_argocd, allow_flux, allow_helm, allow_terraform, allow_owner_reference),
    )  # fmt: skip


def _show_plan(
    rt: Any,
    ns: str,
    name: str,
    to: str,
    output: str,
    snapshot: bool | None,
    mode: str,
    downtime: str,
    superuser: str | None,
    initdb_args: str,
    set_env: list[str] | None,
    patch_retention: bool,
    keep_readers: bool,
    guards: Any,
) -> None:
    """`plan sts` and `upgrade sts --dry-run`: the live plan (read-only, the upgrade's refusals) printed."""
    facts = rt.inspect(ns, name)
    # deterministic, as `render`: the run id (snapshot and object names) comes from the inputs
    run_id = render_doc.run_id_for(
        objects.clean_object(rt.read_sts(ns, name)), to, ns, name, snapshot, mode, downtime, superuser,
        initdb_args, set_env, patch_retention, keep_readers, dataclasses.asdict(guards),
    )  # fmt: skip
    plan, sts, warnings = rt.plan(
        ns,
        name,
        to,
        run_id=run_id,
        job_env=env_for(facts, superuser, initdb_args, set_env),
        mode=mode,
        snapshot=snapshot,
        overrides=guards,
        patch_retention=patch_retention,
        keep_readers=keep_readers,
        scripts=scripts(required=False),
        preflight=deps().preflight,
        downtime=downtime,
    )
    objs = render.objects_for(plan, sts, scripts(required=False), rt.read_statefulset(plan))
    for w in warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}")
    if output != "text":
        for line in replica_lines(plan):
            err.print(line, markup=False, highlight=False)
    if output == "yaml":  # render's header and per-object roles: what to commit, what is temporary
        print(render_doc.to_yaml(objs, plan, command="plan sts"), end="")
        return
    _print(objs, output, lambda: _plan_text(ns, name, plan, objs))


def _plan_text(ns: str, name: str, plan: KubePlan, objs: list[dict[str, Any]]) -> None:
    """The text form of the plan on stdout: images, PGDATA move, retention, standbys, objects."""
    c = console(stderr=False)
    c.print(
        f"{ns}/{name}: {plan.core.old_image} → {plan.core.new_image} (mode {plan.core.mode})", markup=False
    )
    c.print(
        f"PGDATA in volume: {plan.core.layout.old_rel or '.'} → {plan.core.layout.new_rel or '.'}",
        markup=False,
    )
    if plan.patch_retention:
        c.print("PVC retention policy set to Retain during the upgrade")
    for line in replica_lines(plan):
        c.print(line, markup=False, highlight=False)
    for o in objs:
        c.print(f"  {o['kind']} {o['metadata']['name']}", markup=False)


def upgrade_sts(
    name: NameArg,
    to: ToOpt,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = "text",
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    snapshot: SnapshotOpt = None,
    mode: ModeOpt = "link",
    downtime: cli_options.Downtime = "verified",
    superuser: SuperuserOpt = None,
    initdb_args: InitdbOpt = "",
    set_env: SetEnvOpt = None,
    patch_retention: PatchRetentionOpt = True,
    allow_argocd: AllowArgo = False,
    allow_flux: AllowFlux = False,
    allow_helm: AllowHelm = False,
    allow_terraform: AllowTf = False,
    allow_owner_reference: AllowOwner = False,
    keep_readers: KeepReadersOpt = False,
    no_verify: cli_options.NoVerify = False,
    no_auto_restore: cli_options.NoAutoRestore = False,
    strategy: cli_options.Strategy = "inplace",
    restart_for_wal_level: cli_options.RestartForWal = False,
    replica_identity_full: cli_options.IdentityFull = False,
    verify_after: cli_options.VerifyAfter = False,
    sync_timeout: cli_options.SyncTimeout = None,
) -> None:
    """Stop the StatefulSet, upgrade its volume in a Job, start it on the new image; re-seed its standbys."""
    logical = {"restart_for_wal_level": restart_for_wal_level, "replica_identity_full": replica_identity_full,
               "verify_after": verify_after}  # fmt: skip
    cli_options.refuse_flags_without_logical(strategy, **logical, sync_timeout=sync_timeout is not None)
    ns = ns_for(namespace, kubeconfig, context)
    rt = runtime_for(kubeconfig, context, output)
    if strategy == "logical":  # docs/logical.md: a new StatefulSet beside this one, then a write pause
        return kube_logical.upgrade(
            rt.kube, ns, name, to, dry_run=dry_run, yes=yes, output=output, sync_timeout=sync_timeout, **logical
        )  # fmt: skip
    kube_logical.refuse_inplace_over(rt.kube, ns, name)
    if no_verify:
        rt.proof = None  # no serve-old/serve-new Job (a later resume finds no fingerprint: not compared)
    guards = overrides(allow_argocd, allow_flux, allow_helm, allow_terraform, allow_owner_reference)
    if dry_run:  # the plan, as `plan sts -o yaml` prints it (or -o json)
        _show_plan(
            rt, ns, name, to, output if output != "text" else "yaml", snapshot, mode, downtime, superuser,
            initdb_args, set_env, patch_retention, keep_readers, guards,
        )  # fmt: skip
        if no_verify:
            err.print(cli_options.NO_VERIFY_NOTE, markup=False, highlight=False)
        err.print("dry run: nothing was changed")
        return
    env = env_for(rt.inspect(ns, name), superuser, initdb_args, set_env)
    cli_options.confirm(
        f"upgrade {ns}/{name}: stop it and upgrade it to {to}; the database is down until it finishes; "
        "standbys, if any, are re-seeded afterwards (`pgleap plan sts` shows their read downtime)",
        yes=yes,
        command=f"{cli_options.prog()} upgrade sts {name} -n {ns} --to {to}",
    )
    run = functools.partial(
        rt.upgrade, ns, name, to, scripts=scripts(), job_env=env, mode=mode, snapshot=snapshot, overrides=guards,
        patch_retention=patch_retention, post_upgrade=deps().post_upgrade, keep_readers=keep_readers,
        standby_probe=deps().standby_probe, preflight=deps().preflight, auto_restore=not no_auto_restore,
        downtime=downtime,
    )  # fmt: skip
    outcome = kube_interrupted.guarded(
        rt, ns, name, lambda: with_way_forward(rt, ns, name, run), prog=cli_options.prog()
    ).as_dict()
    if no_verify:
        outcome["notes"].append(cli_options.NO_VERIFY_NOTE)
    outcome.update(history.machine_fields(rt.kube, ns, name))
    _print(outcome, output, lambda: _outcome_text(outcome))


def status_sts(
    name: NameArg,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    output: OutputOpt = "text",
) -> None:
    """Where a pgleap run of this StatefulSet stands."""
    ns = ns_for(namespace, kubeconfig, context)
    rt = runtime_for(kubeconfig, context, output)
    if kube_logical.recorded(rt.kube, ns, name):
        return kube_logical.status(rt.kube, ns, name, output)
    data = rt.status(ns, name)
    data.update(history.status_extra(rt.kube, ns, name))  # the last finished operation, an interruption

    def text() -> None:
        for k, v in data.items():
            if isinstance(v, dict):  # last_operation, interrupted, jobs: one readable line
                v = ", ".join(f"{key} {value}" for key, value in v.items()) or "-"
            console(stderr=False).print(f"{k}: {v}", markup=False)

    _print(data, output, text)
