"""The `pgleap` command line: parse, call one core function, turn errors into exit codes."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from toolkit import __version__
from toolkit.cli.options import Output, prog
from toolkit.core.report import console
from toolkit.errors import PgleapError

app = typer.Typer(
    name="pgleap",
    help="Upgrade a PostgreSQL + PostGIS cluster to a new major version, safely.",
    no_args_is_help=True,
    add_completion=False,
)
images_app = typer.Typer(help="Build or reuse the local PostGIS test images.", no_args_is_help=True)
app.add_typer(images_app, name="images")

# Verb groups, each with a `docker` target (and `sts` from the Kubernetes runtime).
GROUPS = {
    "inspect": "Show what pgleap finds about a database (read-only).",
    "plan": "Show what an upgrade would do, without changing anything.",
    "upgrade": "Upgrade a database to a new major version.",
    "status": "Show the recorded state of an upgrade.",
    "resume": "Continue an interrupted upgrade from its last finished phase.",
    "rollback": "Bring the old cluster back (until the point of no return).",
    "finalize": "Delete the old cluster once the new one is verified.",
    "cleanup": "After a rollback: delete the kept new cluster and pgleap's scratch volume.",
    "rehearse": "Run the whole upgrade on a clone while production keeps running.",
}
groups: dict[str, typer.Typer] = {}
for _verb, _help in GROUPS.items():
    groups[_verb] = typer.Typer(help=_help, no_args_is_help=True)
    app.add_typer(groups[_verb], name=_verb)

err = console(stderr=True)
out = console(stderr=False)


def _version(value: bool) -> None:
    if value:
        print(f"pgleap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@images_app.command("build")
def images_build(
    tags: Annotated[list[str] | None, typer.Argument(help="Tags to build (default: all).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when the input hash matches.")] = False,
    jobs: Annotated[int, typer.Option(help="Images built at once.")] = 2,
    output: Output = "text",
) -> None:
    """Build the test images from Debian's packages, and pgleap's own image (tag `pgleap`); reuses unchanged ones."""
    from toolkit.docker import images

    test_tags = [t for t in tags or [] if t != "pgleap"]
    results = []

    def log(message: str) -> None:
        err.print(message, style="dim", markup=False)

    if not tags or test_tags:
        results = images.build_all(test_tags, force=force, jobs=jobs, log=log)
    if not tags or "pgleap" in tags:  # pgleap itself as an image (images/pgleap.Dockerfile)
        from toolkit.docker import pgleap_image

        results.append(pgleap_image.build(force=force, log=log))
    if output != "text":
        _dump([r.__dict__ for r in results], output)
        return
    table = Table("tag", "image", "action", "seconds")
    for r in results:
        table.add_row(r.tag, r.image, r.action, f"{r.seconds:.1f}")
    out.print(table)


@images_app.command("list")
def images_list(output: Output = "text") -> None:
    """Show the image matrix and which release is end-of-life."""
    from toolkit.docker import images

    if output != "text":
        rows = [
            {"tag": s.tag, "image": images.image_name(s.tag), "debian": s.release, "postgresql": s.pg,
             "postgis": s.postgis, "end_of_life": bool(s.eol)}
            for s in images.load_matrix()
        ]  # fmt: skip
        _dump(rows, output)
        return

    table = Table("tag", "image", "Debian", "PostgreSQL", "PostGIS", "end of life")
    for s in images.load_matrix():
        table.add_row(
            s.tag, images.image_name(s.tag), s.release, str(s.pg), s.postgis, "yes" if s.eol else ""
        )
    out.print(table)


def _dump(data, output: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    else:
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False), end="")


def _register_runtimes() -> None:
    from toolkit.cli import docker as cli_docker

    cli_docker.register(groups, app)
    from toolkit.cli import kube as cli_kube
    from toolkit.kube.hooks import (
        engine_data_proof,
        engine_post_upgrade,
        engine_rehearsal_hooks,
        engine_standby_probe,
    )
    from toolkit.kube.inspect import engine_preflight

    cli_kube.register(
        groups,
        app,
        preflight=engine_preflight,
        post_upgrade=engine_post_upgrade,
        standby_probe=engine_standby_probe,
        rehearsal_hooks=engine_rehearsal_hooks,
        data_proof=engine_data_proof(),
    )


_register_runtimes()


VERBOSE = ("-v", "--verbose")


def verbose_first(args: list[str]) -> list[str]:
    """`-v` is a root option; accept it after the subcommand too (`pgleap rehearse docker … -v`)."""
    head = args[: args.index("--")] if "--" in args else args
    if not any(a in VERBOSE for a in head) or (head and head[0] in VERBOSE):
        return args
    return ["--verbose", *[a for a in head if a not in VERBOSE], *args[len(head) :]]


def main() -> None:
    """Console entry point: one place maps the project's errors to exit codes."""
    sys.argv[1:] = verbose_first(sys.argv[1:])
    try:
        app(prog_name=prog())
    except PgleapError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err.print(f"[yellow]what to do:[/] {escape(exc.hint)}")
        sys.exit(exc.exit_code)
    except Exception as exc:  # a server or container died under us: one line, not a traceback
        from toolkit.db.sql import DatabaseError
        from toolkit.docker.client import DockerException

        if not isinstance(exc, DatabaseError | DockerException):
            raise
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        err.print(f"[bold red]error:[/] interrupted: {escape(first)}")
        err.print(
            "[yellow]what to do:[/] every phase is recorded; see `pgleap status`, then "
            "`pgleap resume` (or `pgleap rollback` before the point of no return)"
        )
        sys.exit(1)
