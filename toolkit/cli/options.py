"""What every command of both runtimes shares: the confirmation model and the option definitions.

Confirmation: a command that stops or deletes something shows a one-line summary
and asks on a terminal; `--yes` answers for scripts; without a terminal and
without `--yes` it refuses (exit 3) before changing anything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from toolkit.core.plan import DOWNTIME_MODES, MODES
from toolkit.errors import Refused

OUTPUTS = ("text", "json", "yaml")
DOWNTIMES = DOWNTIME_MODES


def choice(name: str, allowed: tuple[str, ...]):
    """A parse-time check: a bad value is a usage error (exit 2) before anything is inspected."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in allowed:
            raise typer.BadParameter(
                f"{value!r}: use {', '.join(allowed[:-1])} or {allowed[-1]}", param_hint=name
            )
        return value

    return check


Output = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        metavar="FORMAT",
        help="text, json or yaml",
        callback=choice("-o/--output", OUTPUTS),
    ),
]
Mode = Annotated[
    str,
    typer.Option(
        "--mode",
        metavar="MODE",
        help="link (default), copy, clone, or swap (18+)",
        callback=choice("--mode", MODES),
    ),
]
Downtime = Annotated[
    str,
    typer.Option(
        "--downtime",
        metavar="WINDOW",
        callback=choice("--downtime", DOWNTIMES),
        help="verified (default): everything, checks included, while the database is down; minimal: only "
        "stop, pg_upgrade and restart are down",
    ),
]
STRATEGIES = ("inplace", "logical")
Strategy = Annotated[
    str,
    typer.Option(
        metavar="STRATEGY",
        callback=choice("--strategy", STRATEGIES),
        help="inplace (default): pg_upgrade on the volume; logical: a new cluster beside the old one, "
        "synchronised by logical replication, then a short write pause (docs/logical.md)",
    ),
]
# The options of `--strategy logical`, the same on both runtimes (docs/logical.md).
RestartForWal = Annotated[
    bool, typer.Option("--restart-for-wal-level", help="logical: set wal_level=logical, restart once.")
]
IdentityFull = Annotated[
    bool,
    typer.Option("--replica-identity-full", help="logical: tables without a key get REPLICA IDENTITY FULL."),
]
VerifyAfter = Annotated[
    bool,
    typer.Option(
        "--verify-after",
        help="logical: compare the fingerprints after the switch (the write pause no longer reads every "
        "row); a difference is exit 4 with the old cluster still following the new one (rollback).",
    ),
]


def refuse_flags_without_logical(strategy: str, **flags: bool) -> None:
    """A logical-only option given to an in-place upgrade is a usage error (exit 2), on both runtimes."""
    if strategy != "logical" and (given := [f"--{k.replace('_', '-')}" for k, on in flags.items() if on]):
        raise typer.BadParameter(f"{', '.join(given)}: only with --strategy logical")


SyncTimeout = Annotated[
    float | None,
    typer.Option(
        "--sync-timeout",
        metavar="SECONDS",
        min=1,
        help="logical: how long the initial copy may take before the run stops (default 900; thousands of "
        "tables or a busy server need more). Only with --strategy logical.",
    ),
]


Superuser = Annotated[
    str | None,
    typer.Option(
        "--superuser", metavar="ROLE", help="The bootstrap superuser, OID 10 (default: POSTGRES_USER)."
    ),
]
InitdbArgs = Annotated[
    str, typer.Option("--initdb-args", metavar="FLAGS", help="initdb flags for the new cluster.")
]
NoVerify = Annotated[
    bool,
    typer.Option(
        "--no-verify",
        help="Skip the before/after fingerprint of the data (on Kubernetes: its serve-old/serve-new Jobs).",
    ),
]
NoAutoRestore = Annotated[
    bool,
    typer.Option(
        "--no-auto-restore",
        help="On a failure before the new cluster starts, leave the database stopped for inspection "
        "(default: pgleap puts the old one back by itself: the old container, the old StatefulSet).",
    ),
]
NO_VERIFY_NOTE = "--no-verify: the before/after fingerprint of the data was skipped (nothing compared)"
ACCEPTABLE = ("fingerprint", "health")


def _check_accept(values: list[str] | None) -> list[str] | None:
    unknown = [v for v in values or () if v not in ACCEPTABLE]
    if unknown:
        raise typer.BadParameter(
            f"takes {' or '.join(ACCEPTABLE)}, not {', '.join(unknown)}", param_hint="--accept"
        )
    return values


Accept = Annotated[
    list[str] | None,
    typer.Option(
        "--accept",
        metavar="CHECK",
        callback=_check_accept,
        help="After an exit 4 you have read: go on despite the failed check and start the upgraded "
        "database: fingerprint, or health (Docker). Repeatable.",
    ),
]
Yes = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Do not ask: go on (for scripts; without a terminal it is required)."),
]


def prog() -> str:
    """How pgleap was called: `kubectl pgleap` through the kubectl plugin, else `pgleap` (usage, hints)."""
    return "kubectl pgleap" if os.path.basename(sys.argv[0]) == "kubectl-pgleap" else "pgleap"


def interactive() -> bool:
    """Someone can answer a question (tests replace this)."""
    return sys.stdin.isatty()


def confirm(summary: str, *, yes: bool, command: str) -> None:
    """Ask before `summary` happens; Refused (exit 3, nothing changed) unless the answer is yes."""
    if yes:
        return
    if not interactive():
        raise Refused(
            f"{summary}: not confirmed (no terminal to ask on); nothing was changed",
            f"add --yes to run it unattended: `{command} --yes`",
        )
    if not typer.confirm(f"{summary}. Go on?", default=False, err=True):
        raise Refused("not confirmed; nothing was changed")


def require_yes_without_terminal(what: str, *, yes: bool, command: str) -> None:
    """Before any inspection: a script that did not say --yes is refused at once (nothing read, nothing changed)."""
    if not yes and not interactive():
        raise Refused(
            f"{what}: not confirmed (no terminal to ask on); nothing was changed",
            f"add --yes to run it unattended: `{command} --yes`",
        )


def upgrade_summary(key: str, plan, downtime: str = "verified", *, verify_data: bool = True) -> str:
    """The plan in one line, for the question before an upgrade; the estimate is the chosen mode's."""
    seconds = plan.estimated_downtime_seconds(downtime, verify_data=verify_data)
    return (
        f"upgrade {key}: PostgreSQL {plan.old_major} -> {plan.new_major} ({plan.source_image} -> "
        f"{plan.target_image}, {plan.mode} mode, --downtime {downtime}); the database stops for about "
        f"{round(seconds)} s"
    )


# The Docker target (`--container`, or `--volume` with `--from`) and report options.
Container = Annotated[
    str | None, typer.Option("--container", "-c", metavar="NAME", help="The database container.")
]
Volume = Annotated[
    str | None,
    typer.Option("--volume", metavar="VOLUME", help="A Docker volume holding PGDATA (no container)."),
]
FromImage = Annotated[
    str | None, typer.Option("--from", metavar="IMAGE", help="Image the volume's cluster was created with.")
]
Pgdata = Annotated[
    str | None,
    typer.Option("--pgdata", metavar="PATH", help="PGDATA inside the old image (default: image's)."),
]
Junit = Annotated[
    Path | None, typer.Option("--junit", help="Write a JUnit XML report here (one case per check).")
]


def _readable_help_types() -> None:
    """Help without `<bool>` after flags and `<str>` after arguments (typer ≥ 0.2x prints them).

    A flag takes no value, and an argument's metavar (NAME) already names it; options with a
    value keep their metavar (IMAGE, FORMAT, …). Both runtimes' help, and `--help` itself."""
    from typer import core

    option_type = getattr(core.TyperOption, "display_type_rich", None)
    argument_type = getattr(core.TyperArgument, "display_type_rich", None)
    if option_type is None or argument_type is None:
        return  # a typer without the hook: its help keeps the type names, nothing else changes

    def option(self, ctx):  # type: ignore[no-untyped-def]
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return option_type(self, ctx)

    def argument(self, ctx):  # type: ignore[no-untyped-def]
        return None if self.metavar is not None else argument_type(self, ctx)

    core.TyperOption.display_type_rich = option  # type: ignore[method-assign]
    core.TyperArgument.display_type_rich = argument  # type: ignore[method-assign]


_readable_help_types()


def only_verified_downtime(downtime: str, runtime: str) -> None:
    """A runtime without --downtime minimal refuses it before anything is read (exit 3)."""
    if downtime != "verified":
        raise Refused(
            f"--downtime {downtime} is not available on {runtime} yet: the upgrade keeps the database down "
            "until it is verified",
            "drop --downtime (verified is the default); `pgleap plan sts` shows the stop",
        )
