"""`pgleap … sts NAME` and `pgleap render`: the Kubernetes commands, added to the CLI by `register`.

Commands only parse options, call the runtime once and print; errors are the
project's `PgleapError` subclasses, turned into messages and exit codes by
`toolkit.cli.app.main`. `-o json|yaml` prints only data on stdout; progress goes to
stderr.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from toolkit.cli import options as cli_options
from toolkit.core.report import console, print_findings, print_verdict
from toolkit.errors import EXIT_USAGE, EnvironmentProblem, PgleapError, Refused
from toolkit.kube import guard, render
from toolkit.kube import shape as kube_shape
from toolkit.kube.facts import facts_as_dict, find_postgres_container, gather, parse_image
from toolkit.kube.plan import MODES, KubePlan, make_plan, read_availability, superuser_for
from toolkit.kube.topology import detect, read_sts_names
from toolkit.resources import container_dir

err = console(stderr=True)

SCRIPT_NAMES = ("collect.sh", "upgrade.sh", "lib.sh")
Connect = Callable[[str | None, str | None], Any]  # (kubeconfig, context) → toolkit.kube.api.Kube
Hook = Callable[[Any], None]


def load_scripts(folder: Path | None = None, *, required: bool = True) -> dict[str, str]:
    """The in-container scripts shipped in toolkit/container/ (name → content)."""
    folder = folder or container_dir()
    scripts = {p.name: p.read_text() for p in sorted(folder.glob("*.sh"))} if folder.is_dir() else {}
    missing = [n for n in SCRIPT_NAMES[:2] if n not in scripts]
    if missing and required:
        raise EnvironmentProblem(
            f"the container scripts {', '.join(missing)} are missing from {folder}",
            "reinstall pgleap; the Job needs them",
        )
    return scripts


def _progress(message: str) -> None:
    """Progress and container logs on stderr, printed as they are (no rich markup in log lines)."""
    err.print(message, style="dim", markup=False, highlight=False)


def _print(data: Any, output: str, text: Callable[[], None]) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    elif output == "yaml":
        if isinstance(data, list):
            print(render.to_yaml(data), end="")
        else:
            print(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False), end="")
    else:
        text()


def _outcome_text(outcome: dict[str, Any]) -> None:
    out = console(stderr=False)
    out.print(f"[bold]{escape(outcome['operation'])}[/]: phase [bold]{escape(str(outcome['phase']))}[/]")
    for line in outcome["changed"]:
        out.print(f"  [green]changed[/]  {escape(line)}")
    for line in outcome["unchanged"]:
        out.print(f"  [dim]ok[/]       {escape(line)}")
    for line in outcome["notes"]:
        out.print(f"  [yellow]note[/]     {escape(line)}")


def _rehearsal_text(result: dict[str, Any]) -> None:
    out = console(stderr=False)
    out.print(
        f"rehearsal of {result['source']} → {result['target_image']} (clone: {result['clone']})", markup=False
    )
    table = Table("phase", "seconds", "down in a real run", "detail")
    for p in result["phases"]:
        table.add_row(p["name"], f"{p['seconds']:.1f}", "yes" if p["in_downtime"] else "", p["detail"])
    out.print(table)
    print_findings(out, result)
    for hint in result.get("real_run_needs", []):
        out.print(f"  [yellow]before the real run[/]: {escape(hint)}")
    if result.get("predicted_downtime_seconds") is not None:
        out.print(f"predicted downtime of the real run: [bold]{result['predicted_downtime_seconds']} s[/]")
        out.print(f"  ({result['predicted_downtime_basis']})", markup=False)
    if result.get("kept"):
        k = result["kept"]
        out.print(
            f"upgraded clone kept: StatefulSet {k['statefulset']}, Service {k['service']}", markup=False
        )
        out.print(f"  connect: {k['connect']}", markup=False)
        out.print(f"  remove it with: {k['remove']}", markup=False)
    print_verdict(out, result)


def _check_output(output: str) -> str:
    if output not in ("text", "json", "yaml"):
        raise typer.BadParameter("use text, json or yaml", param_hint="-o/--output")
    return output


def _check_namespace(value: str | None) -> str | None:
    """DNS-1123 label before it reaches an API path, a label or a header comment."""
    if value is not None and not kube_shape.LABEL.match(value):
        raise typer.BadParameter(
            f"{value!r} is not a namespace name (lower-case letters, digits, '-'; at most 63)",
            param_hint="-n/--namespace",
        )
    return value


def _check_sts_name(value: str | None) -> str | None:
    if value is not None and not kube_shape.SUBDOMAIN.match(value):
        raise typer.BadParameter(
            f"{value!r} is not a StatefulSet name (lower-case letters, digits, '-', '.')",
            param_hint="NAME",
        )
    return value


def _check_render_output(output: str) -> str:
    if output not in ("json", "yaml"):
        raise typer.BadParameter("render prints objects: use yaml or json", param_hint="-o/--output")
    return output


def _read_manifests(file: str) -> str:
    """The text of `-f FILE` ('-': stdin); a usage error (exit 2) when it cannot be read."""
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PgleapError(
            f"cannot read {file}: {reason}",
            "pass a file of manifests (e.g. the output of `helm template`), or '-' for stdin",
            exit_code=EXIT_USAGE,
        ) from exc


def _env_pairs(pairs: list[str] | None) -> dict[str, str]:
    env = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set-env")
        env[key] = value
    return env


# Typer options shared by the sts commands (Annotated aliases keep the signatures short).
KubeconfigOpt = Annotated[str | None, typer.Option("--kubeconfig", help="Path to the kubeconfig file.")]
ContextOpt = Annotated[str | None, typer.Option("--context", help="The kubeconfig context to use.")]
NamespaceOpt = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace of the StatefulSet.", callback=_check_namespace),
]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="text, json or yaml", callback=_check_output)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")]
YesOpt = cli_options.Yes
NameArg = Annotated[str, typer.Argument(help="Name of the StatefulSet.", callback=_check_sts_name)]
ToOpt = Annotated[str, typer.Option("--to", help="Target image, e.g. postgis/postgis:17-3.5.")]
SnapshotOpt = Annotated[
    bool | None,
    typer.Option(
        "--snapshot/--no-snapshot", help="VolumeSnapshot before the upgrade (default: if a class fits)."
    ),
]
ModeOpt = Annotated[str, typer.Option("--mode", help=f"pg_upgrade transfer mode: {'|'.join(MODES)}.")]
SetEnvOpt = Annotated[
    list[str] | None, typer.Option("--set-env", help="Extra KEY=VALUE for the Job (no secrets).")
]
InitdbOpt = Annotated[str, typer.Option("--initdb-args", help="initdb flags for the new cluster.")]
PatchRetentionOpt = Annotated[
    bool,
    typer.Option(
        "--patch-retention/--no-patch-retention",
        help="Keep PVCs (Retain) while pgleap scales down; the new StatefulSet gets your policy back.",
    ),
]
AllowArgo = Annotated[bool, typer.Option("--allow-argocd", help="Argo CD auto-sync is paused.")]
AllowFlux = Annotated[
    bool, typer.Option("--allow-flux", help="The Flux Kustomization/HelmRelease is suspended.")
]
AllowHelm = Annotated[
    bool, typer.Option("--allow-helm", help="You will helm upgrade with the new image tag.")
]
AllowTf = Annotated[bool, typer.Option("--allow-terraform", help="Terraform ignores or expects the change.")]
AllowOwner = Annotated[bool, typer.Option("--allow-owner-reference", help="The owning controller is paused.")]
KeepReadersOpt = Annotated[
    bool,
    typer.Option(
        "--keep-readers",
        help="Leave the read StatefulSet running while the primary is upgraded: it serves STALE reads "
        "(old major, no new writes) until its re-seed starts.",
    ),
]

# Why the pg_upgrade docs' rsync --hard-links method for standbys is not offered.
NO_RSYNC = (
    "standbys are re-seeded with pg_basebackup from the upgraded primary; the rsync --hard-links "
    "method of the pg_upgrade docs is not offered: it needs the primary's old and new data directories "
    "and the standby's on hosts rsync can reach, while each standby here keeps its data on its own "
    "ReadWriteOnce PVC, usually attached on another node and not mountable from the primary's node"
)


def trusted_major(ref: str, given: int | None, option: str) -> int | None:
    """The major `render` uses for `ref`: its tag's, else `given` (trusted, said on stderr).

    A contradiction between tag and option is refused: one of the two is wrong."""
    from_tag = parse_image(ref).major if ref else None
    if given is None or given == from_tag:
        return from_tag
    if from_tag is not None:
        raise Refused(
            f"{option} {given} contradicts the tag of {ref} (PostgreSQL {from_tag})",
            f"drop {option}, or check which image you mean",
        )
    err.print(
        f"[yellow]note:[/] trusted {option} {given} for {escape(ref)} (its tag names no version); "
        "`pgleap plan sts` probes the image itself",
        highlight=False,
    )
    return given


def replica_lines(plan: KubePlan) -> list[str]:
    """What happens to each standby, and when reads are unavailable (plan output)."""
    rp = plan.replicas
    if rp is None:
        return []
    where = (
        f"ordinals 1..{rp.count - 1} of {plan.sts}"
        if rp.topology == "ordinals"
        else f"read StatefulSet {rp.sts} ({rp.count} replicas)"
    )
    lines = [
        f"standbys: {where}; re-seeded from {rp.primary_host} as {rp.replication_user}"
        + (
            f" (password: Secret {rp.password_secret['name']} key {rp.password_secret['key']})"
            if rp.password_secret
            else " (no password Secret)"
        ),
        (
            f"the new {plan.sts} starts with ordinal 0 alone; it is scaled back to {rp.count} once the standbys "
            "are re-seeded"
            if rp.topology == "ordinals"
            else f"{rp.sts} is "
            + (
                "left running on the old major (--keep-readers)"
                if rp.keep_readers
                else "scaled to 0 together with the primary"
            )
            + f"; it comes back on {plan.new_image} with {rp.count} replicas after the primary is upgraded and "
            "verified"
        ),
    ]
    windows = read_availability(plan)
    slowest = max((w["reseed_estimate_seconds"] or 0 for w in windows), default=0)
    reseed = f"the slowest re-seed (~{max(1, round(slowest / 60))} min at 100 MiB/s, an upper bound)"
    lines.append(
        (
            "reads on the standbys: STALE (old major) while the primary is down (stop → upgraded → verified), "
            f"then unavailable for {reseed} plus their start"
            if rp.keep_readers
            else "reads on the standbys: unavailable for the primary's own downtime (stop → upgraded → verified) "
            f"plus {reseed} plus their start"
        )
        + (
            "; Services that select every ordinal route to the primary alone until the standbys are back"
            if rp.topology == "ordinals"
            else ""
        )
    )
    for w in windows:
        est = w["reseed_estimate_seconds"]
        lines.append(
            f"  {w['pod']} (PVC {w['pvc']}, node {w['node'] or '?'}): reads unavailable {w['unavailable']}"
            + (
                f"; re-seed copies up to {w['reseed_copies_up_to']} (~{max(1, round(est / 60))} min at 100 MiB/s)"
                if est
                else ""
            )
        )
        if w["stale_reads"]:
            lines.append(f"    {w['stale_reads']}")
        if w["services"]:
            lines.append(f"    Services routing to it: {', '.join(w['services'])}")
    lines.append(NO_RSYNC)
    return lines


def register(
    groups: dict[str, typer.Typer],
    app: typer.Typer,
    *,
    connect: Connect | None = None,
    post_upgrade: Hook | None = None,
    job_env: Callable[[Any], dict[str, str]] | None = None,
    standby_probe: Callable[[Any, tuple[str, ...]], Any] | None = None,
    rehearsal_hooks: Callable[[], Any] | None = None,
    preflight: Callable[..., Any] | None = None,
    data_proof: Any = None,
) -> None:
    """Add `sts NAME` to the inspect/plan/upgrade/status/resume/rollback/finalize groups and `render` to app.

    `connect(kubeconfig, context)` builds the `toolkit.kube.api.Kube` (tests pass a fake);
    `post_upgrade(ctx)` is the engine's post-upgrade/verify step (`HookContext`);
    `job_env(facts)` adds the engine's env for the Job (superuser, initdb flags, …);
    `standby_probe(ctx, slots)` returns the replication slots that stream from the new primary;
    `rehearsal_hooks()` gives the database steps of `rehearse sts` (`RehearsalHooks`);
    `preflight(ctx, images, pgdata=, scripts=)` reads the live cluster before the stop (kube_inspect);
    `data_proof` (DataProof) fingerprints the old cluster after the stop and the new one before the switch.
    """

    def kube_for(kubeconfig: str | None, context: str | None) -> Any:
        if connect is not None:
            return connect(kubeconfig, context)
        from toolkit.kube.api import Kube

        return Kube.connect(kubeconfig, context)

    def runtime_for(kubeconfig: str | None, context: str | None, output: str) -> Any:
        from toolkit.kube.runtime import KubeRuntime

        return KubeRuntime(kube_for(kubeconfig, context), log=_progress, proof=data_proof)

    def ns_for(namespace: str | None, kubeconfig: str | None, context: str | None) -> str:
        if namespace:
            return namespace
        from toolkit.kube.api import Kube

        return Kube.default_namespace(kubeconfig, context)

    def env_for(
        facts: Any, superuser: str | None, initdb_args: str, set_env: list[str] | None
    ) -> dict[str, str]:
        env = dict(job_env(facts)) if job_env else {}
        extra = _env_pairs(set_env)
        given = superuser or extra.get("PGLEAP_SUPERUSER") or env.get("PGLEAP_SUPERUSER")
        env["PGLEAP_SUPERUSER"] = superuser_for(facts, given)
        if initdb_args:
            env["PGLEAP_INITDB_ARGS"] = initdb_args
        env.update(extra)
        return env

    def overrides(argo: bool, flux: bool, helm: bool, tf: bool, owner: bool) -> guard.GuardOverrides:
        return guard.GuardOverrides(argo, flux, helm, tf, owner)

    @groups["inspect"].command("sts")
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

    @groups["plan"].command("sts")
    def plan_sts(
        name: NameArg,
        to: ToOpt,
        kubeconfig: KubeconfigOpt = None,
        context: ContextOpt = None,
        namespace: NamespaceOpt = None,
        output: OutputOpt = "text",
        snapshot: SnapshotOpt = None,
        mode: ModeOpt = "link",
        superuser: Annotated[str | None, typer.Option(help="OID-10 role (default: POSTGRES_USER).")] = None,
        initdb_args: InitdbOpt = "",
        set_env: SetEnvOpt = None,
        patch_retention: PatchRetentionOpt = True,
        allow_argocd: AllowArgo = False,
        allow_flux: AllowFlux = False,
        allow_helm: AllowHelm = False,
        allow_terraform: AllowTf = False,
        allow_owner_reference: AllowOwner = False,
        keep_readers: KeepReadersOpt = False,
    ) -> None:
        """Every object the upgrade would create or change (-o yaml: manifests to commit).

        Reads the live cluster as `upgrade sts` does before its stop (same refusals). Changes
        nothing: only two short probe Pods (one per image) are created and deleted."""
        ns = ns_for(namespace, kubeconfig, context)
        rt = runtime_for(kubeconfig, context, output)
        facts = rt.inspect(ns, name)
        plan, sts, warnings = rt.plan(
            ns,
            name,
            to,
            job_env=env_for(facts, superuser, initdb_args, set_env),
            mode=mode,
            snapshot=snapshot,
            overrides=overrides(allow_argocd, allow_flux, allow_helm, allow_terraform, allow_owner_reference),
            patch_retention=patch_retention,
            keep_readers=keep_readers,
            scripts=load_scripts(required=False),
            preflight=preflight,
        )
        objs = render.objects_for(plan, sts, load_scripts(required=False), rt.read_statefulset(plan))
        for w in warnings:
            err.print(f"[yellow]warning:[/] {escape(w)}")
        if output != "text":
            for line in replica_lines(plan):
                err.print(line, markup=False, highlight=False)

        def text() -> None:
            c = console(stderr=False)
            c.print(f"{ns}/{name}: {plan.old_image} → {plan.new_image} (mode {plan.mode})", markup=False)
            c.print(
                f"PGDATA in volume: {plan.layout.old_rel or '.'} → {plan.layout.new_rel or '.'}", markup=False
            )
            if plan.patch_retention:
                c.print("PVC retention policy set to Retain during the upgrade")
            for line in replica_lines(plan):
                c.print(line, markup=False, highlight=False)
            for o in objs:
                c.print(f"  {o['kind']} {o['metadata']['name']}", markup=False)

        _print(objs, output, text)

    @groups["upgrade"].command("sts")
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
        superuser: Annotated[str | None, typer.Option(help="OID-10 role (default: POSTGRES_USER).")] = None,
        initdb_args: InitdbOpt = "",
        set_env: SetEnvOpt = None,
        patch_retention: PatchRetentionOpt = True,
        allow_argocd: AllowArgo = False,
        allow_flux: AllowFlux = False,
        allow_helm: AllowHelm = False,
        allow_terraform: AllowTf = False,
        allow_owner_reference: AllowOwner = False,
        keep_readers: KeepReadersOpt = False,
        downtime: Annotated[
            str,
            typer.Option(
                help="verified (default): fingerprint the stopped old cluster and the new one before the "
                "switch; minimal: collect and initdb beside the running pod, only stop, pg_upgrade and "
                "start in the window.",
            ),
        ] = "verified",
        no_auto_restore: Annotated[
            bool,
            typer.Option(
                "--no-auto-restore",
                help="On a failure before the new cluster starts, leave the StatefulSet stopped for "
                "inspection (default: pgleap puts the old StatefulSet back by itself).",
            ),
        ] = False,
    ) -> None:
        """Stop the StatefulSet, upgrade its volume in a Job, start it on the new image; re-seed its standbys."""
        ns = ns_for(namespace, kubeconfig, context)
        rt = runtime_for(kubeconfig, context, output)
        facts = rt.inspect(ns, name)
        env = env_for(facts, superuser, initdb_args, set_env)
        guards = overrides(allow_argocd, allow_flux, allow_helm, allow_terraform, allow_owner_reference)
        if dry_run:
            plan, sts, warnings = rt.plan(
                ns,
                name,
                to,
                job_env=env,
                mode=mode,
                snapshot=snapshot,
                overrides=guards,
                patch_retention=patch_retention,
                keep_readers=keep_readers,
                scripts=load_scripts(required=False),
                preflight=preflight,
                downtime=downtime,
            )
            for w in warnings:
                err.print(f"[yellow]warning:[/] {escape(w)}")
            for line in replica_lines(plan):
                err.print(line, markup=False, highlight=False)
            objs = render.objects_for(plan, sts, load_scripts(required=False), rt.read_statefulset(plan))
            _print(objs, output if output != "text" else "yaml", lambda: None)
            err.print("dry run: nothing was changed")
            return
        cli_options.confirm(
            f"upgrade {ns}/{name}: stop it and upgrade it to {to}; the database is down until it finishes; "
            "standbys, if any, are re-seeded afterwards (`pgleap plan sts` shows their read downtime)",
            yes=yes,
            command=f"pgleap upgrade sts {name} -n {ns} --to {to}",
        )
        outcome = rt.upgrade(
            ns,
            name,
            to,
            scripts=load_scripts(),
            job_env=env,
            mode=mode,
            snapshot=snapshot,
            overrides=guards,
            patch_retention=patch_retention,
            post_upgrade=post_upgrade,
            keep_readers=keep_readers,
            standby_probe=standby_probe,
            preflight=preflight,
            auto_restore=not no_auto_restore,
            downtime=downtime,
        ).as_dict()
        _print(outcome, output, lambda: _outcome_text(outcome))

    @groups["status"].command("sts")
    def status_sts(
        name: NameArg,
        kubeconfig: KubeconfigOpt = None,
        context: ContextOpt = None,
        namespace: NamespaceOpt = None,
        output: OutputOpt = "text",
    ) -> None:
        """Where a pgleap run of this StatefulSet stands."""
        ns = ns_for(namespace, kubeconfig, context)
        data = runtime_for(kubeconfig, context, output).status(ns, name)

        def text() -> None:
            for k, v in data.items():
                console(stderr=False).print(f"{k}: {v}", markup=False)

        _print(data, output, text)

    WHAT = {
        "resume": "continue the recorded operation (the database may stop)",
        "rollback": "stop the upgraded database and bring the old data directory back",
        "finalize": "delete the old data directory; no rollback after this",
    }

    def _lifecycle(command: str, doc: str) -> None:
        def run(
            name: NameArg,
            kubeconfig: KubeconfigOpt = None,
            context: ContextOpt = None,
            namespace: NamespaceOpt = None,
            output: OutputOpt = "text",
            dry_run: DryRunOpt = False,
            yes: YesOpt = False,
        ) -> None:
            ns = ns_for(namespace, kubeconfig, context)
            rt = runtime_for(kubeconfig, context, output)
            if dry_run:
                data = rt.status(ns, name)
                _print(
                    data,
                    output,
                    lambda: console(stderr=False).print(
                        f"{command} would continue from: {data}", markup=False
                    ),
                )
                err.print("dry run: nothing was changed")
                return
            cli_options.confirm(
                f"{command} {ns}/{name}: {WHAT[command]}",
                yes=yes,
                command=f"pgleap {command} sts {name} -n {ns}",
            )
            if command == "resume":
                result = rt.resume(
                    ns, name, scripts=load_scripts(), post_upgrade=post_upgrade, standby_probe=standby_probe
                )
            elif command == "rollback":
                # --yes also accepts what a copy/clone rollback drops (as `rollback docker --yes`)
                def ask(loss: str) -> bool:
                    return typer.confirm(f"{loss}. Roll back anyway?", default=False, err=True)

                confirm = (lambda _loss: True) if yes else (ask if cli_options.interactive() else None)
                result = rt.rollback(ns, name, scripts=load_scripts(), confirm=confirm)
            else:
                result = rt.finalize(ns, name, scripts=load_scripts())
            outcome = result.as_dict()
            _print(outcome, output, lambda: _outcome_text(outcome))

        run.__doc__ = doc
        groups[command].command("sts")(run)

    _lifecycle("resume", "Continue a recorded upgrade, rollback or finalize from its last phase.")
    _lifecycle("rollback", "Restore the original StatefulSet and the old data directory.")
    _lifecycle("finalize", "Remove the old data directory and pgleap's Jobs and ConfigMaps.")

    @groups["rehearse"].command("sts")
    def rehearse_sts(
        name: NameArg,
        to: Annotated[
            str | None, typer.Option("--to", help="Target image, e.g. postgis/postgis:17-3.5.")
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
            str | None, typer.Option("--snapshot-class", help="VolumeSnapshotClass for --from-snapshot.")
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
        superuser: Annotated[str | None, typer.Option(help="OID-10 role (default: POSTGRES_USER).")] = None,
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
                command=f"pgleap rehearse sts {name} -n {ns} --remove",
            )
            removed = rehearsal.remove(ns, name)
            _print(
                {"removed": removed},
                output,
                lambda: console(stderr=False).print(
                    "\n".join(removed) or f"no rehearsal of {ns}/{name} found"
                ),
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
                scripts=load_scripts(required=False),
                job_env=env_for(facts, superuser, initdb_args, set_env),
                mode=mode,
                from_snapshot=from_snapshot,
                snapshot_class=snapshot_class,
            )
            _print(objs, output if output != "text" else "yaml", lambda: None)
            err.print("dry run: nothing was changed")
            return
        if rehearsal_hooks is None:
            raise EnvironmentProblem("no database hooks given for the rehearsal", "run it through `pgleap`")
        result = rehearsal.rehearse(
            ns,
            name,
            to,
            scripts=load_scripts(),
            hooks=rehearsal_hooks(),
            job_env=env_for(facts, superuser, initdb_args, set_env),
            mode=mode,
            from_snapshot=from_snapshot,
            snapshot_class=snapshot_class,
            keep=keep,
        )
        _print(result, output, lambda: _rehearsal_text(result))
        if result["verdict"] != "go":
            raise typer.Exit(result.get("exit_code") or 1)

    @app.command("render")
    def render_cmd(
        to: ToOpt,
        file: Annotated[
            str, typer.Option("--file", "-f", help="Manifests with the StatefulSet ('-': stdin).")
        ],
        sts_name: Annotated[
            str | None,
            typer.Option("--sts", help="Which StatefulSet, if several.", callback=_check_sts_name),
        ] = None,
        namespace: NamespaceOpt = None,
        output: Annotated[
            str, typer.Option("--output", "-o", help="yaml or json", callback=_check_render_output)
        ] = "yaml",
        snapshot: SnapshotOpt = False,
        mode: ModeOpt = "link",
        superuser: Annotated[str | None, typer.Option(help="OID-10 role (default: POSTGRES_USER).")] = None,
        initdb_args: InitdbOpt = "",
        set_env: SetEnvOpt = None,
        keep_readers: KeepReadersOpt = False,
        from_major: Annotated[
            int | None,
            typer.Option(
                "--from-major",
                min=9,
                max=99,
                help="PostgreSQL major of the running image, if its tag says none.",
            ),
        ] = None,
        to_major: Annotated[
            int | None,
            typer.Option("--to-major", min=9, max=99, help="PostgreSQL major of --to, if its tag says none."),
        ] = None,
    ) -> None:
        """Offline: objects an upgrade would create (-f FILE, or `helm template … | pgleap render -f -`).

        Offline, nothing can probe the images: the majors come from the tags, or from
        --from-major/--to-major (trusted, and said so). `pgleap plan sts` probes them."""
        text = _read_manifests(file)
        try:
            docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
        except yaml.YAMLError as exc:
            raise Refused(
                f"{file} is not valid YAML: {exc}", "pass the output of `helm template` or kubectl"
            ) from exc
        for d in list(docs):  # kubectl get -o yaml gives a List
            if d.get("kind") == "List" and isinstance(d.get("items"), list):
                docs += [i for i in d["items"] if isinstance(i, dict)]
        candidates = [d for d in docs if d.get("kind") == "StatefulSet"]
        for d in candidates + [d for d in docs if d.get("kind") == "Service"]:
            meta = d.get("metadata")
            if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
                raise Refused(
                    f"{file}: a {d['kind']} has no metadata.name",
                    "pass complete manifests (the output of `helm template` or `kubectl get -o yaml`)",
                )
        names = {d["metadata"]["name"] for d in candidates}
        if not sts_name and len(candidates) == 2:  # a primary and its read StatefulSet: the primary
            primaries = [d for d in candidates if names & set(read_sts_names(d["metadata"]["name"]))]
            candidates = primaries or candidates
        if sts_name:
            candidates = [d for d in candidates if d["metadata"]["name"] == sts_name]
        if len(candidates) != 1:
            names = ", ".join(d["metadata"]["name"] for d in docs if d.get("kind") == "StatefulSet") or "none"
            raise Refused(
                f"{file}: expected one StatefulSet{f' named {sts_name}' if sts_name else ''}, found: {names}",
                "pick one with --sts NAME",
            )
        sts = candidates[0]
        sts.setdefault("metadata", {})
        sts["metadata"]["namespace"] = namespace or sts["metadata"].get("namespace") or "default"
        services = [d for d in docs if d.get("kind") == "Service"]
        kube_shape.check_statefulset(sts)  # hostile input: types first
        running = find_postgres_container(sts).get("image")
        old_major = trusted_major(running if isinstance(running, str) else "", from_major, "--from-major")
        facts = gather(sts, services=services, major=old_major)
        read = next(
            (
                d
                for n in read_sts_names(facts.name)
                for d in docs
                if d.get("kind") == "StatefulSet" and d["metadata"]["name"] == n
            ),
            None,
        )
        read_facts = None
        if read is not None:
            read.setdefault("metadata", {})["namespace"] = sts["metadata"]["namespace"]
            read_facts = gather(read, services=services, major=old_major)
        topology = detect(sts, facts, read_sts=read, read_facts=read_facts, services=services)
        target = parse_image(to)
        target = dataclasses.replace(target, major=trusted_major(to, to_major, "--to-major"))
        found = guard.problems(facts, target, live=False, topology=topology)
        for p in found:
            if p.owner:  # rendering changes nothing: tell, do not refuse
                err.print(f"[yellow]warning:[/] {escape(p.message)} ({escape(p.hint)})")
        hard = [p for p in found if not p.owner]
        if hard:
            raise Refused("; ".join(p.message for p in hard), " | ".join(p.hint for p in hard))
        try:
            plan = make_plan(
                facts,
                to,
                mode=mode,
                snapshot=snapshot,
                job_env=env_for(facts, superuser, initdb_args, set_env),
                topology=topology,
                read_facts=read_facts,
                keep_readers=keep_readers,
                target=target,
            )
        except ValueError as exc:
            raise PgleapError(str(exc), "see --set-env") from exc
        objs = render.objects_for(plan, sts, load_scripts(required=False), read if plan.read_sts else None)
        for line in replica_lines(plan):
            err.print(line, markup=False, highlight=False)
        if output == "json":
            print(json.dumps(objs, indent=2))
        else:
            print(f"# pgleap render: {facts.namespace}/{facts.name} {plan.old_image} -> {plan.new_image}")
            print(render.to_yaml(objs), end="")
