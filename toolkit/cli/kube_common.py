"""What the Kubernetes commands share: their dependencies, option definitions and printers.

`register` (toolkit/cli/kube.py) sets the dependencies once (`configure`); each command is a
module-level function in `kube_sts`, `kube_lifecycle` or `kube_render`, callable on its own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from toolkit.cli import options as cli_options
from toolkit.core.report import console, print_findings, print_verdict
from toolkit.errors import EXIT_USAGE, EnvironmentProblem, PgleapError, Refused, VerificationFailed
from toolkit.kube import guard, render_doc
from toolkit.kube import shape as kube_shape
from toolkit.kube.facts import parse_image
from toolkit.kube.plan import KubePlan, read_availability, superuser_for
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
            print(render_doc.to_yaml(data), end="")
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
    if outcome.get("operation") in ("upgrade", "rollback"):
        possible = outcome.get("rollback_possible")
        said = {True: "still possible", False: "no longer possible"}.get(possible, "decided by its check")
        out.print(f"  rollback {said}", markup=False, highlight=False)


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


# Typer options shared by the sts commands (Annotated aliases keep the signatures short);
# those Docker has too (output, mode, yes, superuser, initdb args) come from cli/options.py.
KubeconfigOpt = Annotated[
    str | None, typer.Option("--kubeconfig", metavar="FILE", help="Path to the kubeconfig file.")
]
ContextOpt = Annotated[
    str | None, typer.Option("--context", metavar="CONTEXT", help="The kubeconfig context to use.")
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        metavar="NAMESPACE",
        help="Namespace of the StatefulSet (default: the context's).",
        callback=_check_namespace,
    ),
]
OutputOpt = cli_options.Output
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")]
YesOpt = cli_options.Yes
NameArg = Annotated[
    str, typer.Argument(metavar="NAME", help="Name of the StatefulSet.", callback=_check_sts_name)
]
ToOpt = Annotated[
    str, typer.Option("--to", metavar="IMAGE", help="Target image, e.g. postgis/postgis:17-3.5.")
]
SnapshotOpt = Annotated[
    bool | None,
    typer.Option(
        "--snapshot/--no-snapshot", help="VolumeSnapshot before the upgrade (default: if a class fits)."
    ),
]
ModeOpt = cli_options.Mode
SetEnvOpt = Annotated[
    list[str] | None,
    typer.Option("--set-env", metavar="KEY=VALUE", help="Extra KEY=VALUE for the Job (no secrets)."),
]
InitdbOpt = cli_options.InitdbArgs
SuperuserOpt = cli_options.Superuser
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


@dataclass
class Deps:
    """What the commands call besides the runtime: injected by `register` (tests pass fakes).

    `connect(kubeconfig, context)` builds the `toolkit.kube.api.Kube`;
    `post_upgrade(ctx)` is the engine's post-upgrade/verify step (`HookContext`);
    `job_env(facts)` adds the engine's env for the Job (superuser, initdb flags, …);
    `standby_probe(ctx, slots)` returns the replication slots that stream from the new primary;
    `rehearsal_hooks()` gives the database steps of `rehearse sts` (`RehearsalHooks`);
    `preflight(ctx, images, pgdata=, scripts=)` reads the live cluster before the stop (kube_inspect);
    `scripts(folder=None, required=True)` loads the in-container scripts;
    `data_proof` (DataProof) fingerprints the old cluster after the stop and the new one before the switch.
    """

    connect: Connect | None = None
    post_upgrade: Hook | None = None
    job_env: Callable[[Any], dict[str, str]] | None = None
    standby_probe: Callable[[Any, tuple[str, ...]], Any] | None = None
    rehearsal_hooks: Callable[[], Any] | None = None
    preflight: Callable[..., Any] | None = None
    scripts: Callable[..., dict[str, str]] = load_scripts
    data_proof: Any = None


_deps: list[Deps] = [Deps()]


def configure(deps: Deps) -> None:
    """Set the dependencies every command uses (called by `register`)."""
    _deps[0] = deps


def deps() -> Deps:
    return _deps[0]


def scripts(required: bool = True) -> dict[str, str]:
    return deps().scripts(required=required)


def kube_for(kubeconfig: str | None, context: str | None) -> Any:
    connect = deps().connect
    if connect is not None:
        return connect(kubeconfig, context)
    from toolkit.kube.api import Kube

    return Kube.connect(kubeconfig, context)


def runtime_for(kubeconfig: str | None, context: str | None, output: str) -> Any:
    from toolkit.kube.runtime import KubeRuntime

    return KubeRuntime(kube_for(kubeconfig, context), log=_progress, proof=deps().data_proof)


def ns_for(namespace: str | None, kubeconfig: str | None, context: str | None) -> str:
    if namespace:
        return namespace
    from toolkit.kube.api import Kube

    return Kube.default_namespace(kubeconfig, context)


def env_for(facts: Any, superuser: str | None, initdb_args: str, set_env: list[str] | None) -> dict[str, str]:
    job_env = deps().job_env
    env = dict(job_env(facts)) if job_env else {}
    extra = _env_pairs(set_env)
    given = superuser or extra.get("PGLEAP_SUPERUSER") or env.get("PGLEAP_SUPERUSER")
    env["PGLEAP_SUPERUSER"] = superuser_for(facts, given)
    if initdb_args:
        env["PGLEAP_INITDB_ARGS"] = initdb_args
    env.update(extra)
    return env


def with_way_forward(rt: Any, namespace: str, name: str, run: Callable[[], Any]) -> Any:
    """`run`, with an exit 4 of the fingerprint comparison naming the command that moves forward.

    Past the point of no return (link/swap) rollback is gone; `resume sts --accept fingerprint`
    starts the upgraded data once the operator has read the differences (as on Docker)."""
    try:
        return run()
    except VerificationFailed as exc:
        state = rt.read_state(namespace, name)
        # exit 4 in `compared` leaves phase upgraded; in `proved` (after the extension updates), compared
        if state is not None and state.operation == "upgrade" and state.phase in ("upgraded", "compared"):
            cmd = f"{cli_options.prog()} resume sts {name} -n {namespace} --accept fingerprint"
            exc.hint = f"{exc.hint}; or start the upgraded database as it is with `{cmd}`"
        raise


def overrides(argo: bool, flux: bool, helm: bool, tf: bool, owner: bool) -> guard.GuardOverrides:
    return guard.GuardOverrides(argo, flux, helm, tf, owner)
