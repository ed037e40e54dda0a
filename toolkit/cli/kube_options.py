"""The Kubernetes commands' input: Typer options shared by the sts commands, the checks that
turn a bad name or value into a usage error (exit 2), and the values read from files."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from toolkit.cli import options as cli_options
from toolkit.cli.kube_output import err
from toolkit.errors import EXIT_USAGE, PgleapError, Refused
from toolkit.kube import shape as kube_shape
from toolkit.kube.image_ref import parse_image


def check_namespace(value: str | None) -> str | None:
    """DNS-1123 label before it reaches an API path, a label or a header comment."""
    if value is not None and not kube_shape.LABEL.match(value):
        raise typer.BadParameter(
            f"{value!r} is not a namespace name (lower-case letters, digits, '-'; at most 63)",
            param_hint="-n/--namespace",
        )
    return value


def check_sts_name(value: str | None) -> str | None:
    if value is not None and not kube_shape.SUBDOMAIN.match(value):
        raise typer.BadParameter(
            f"{value!r} is not a StatefulSet name (lower-case letters, digits, '-', '.')",
            param_hint="NAME",
        )
    return value


def check_render_output(output: str) -> str:
    if output not in ("json", "yaml"):
        raise typer.BadParameter("render prints objects: use yaml or json", param_hint="-o/--output")
    return output


def read_manifests(file: str) -> str:
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


def env_pairs(pairs: list[str] | None) -> dict[str, str]:
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
        callback=check_namespace,
    ),
]
OutputOpt = cli_options.Output
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")]
YesOpt = cli_options.Yes
NameArg = Annotated[
    str, typer.Argument(metavar="NAME", help="Name of the StatefulSet.", callback=check_sts_name)
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
