"""Progress for the operator (rich, on stderr) and the run's result (JSON on stdout with -o json)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from toolkit.core import interrupt
from toolkit.core.progress import Phase, Progress


def console(*, stderr: bool) -> Console:
    """A rich console that colours nothing by guess (digits in image tags), and that neither wraps
    nor animates when its stream is not a terminal (a file, a pipe, CI logs)."""
    c = Console(stderr=stderr, highlight=False)
    if c.is_terminal:
        return c
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=10_000)


@dataclass(kw_only=True)
class Report(Progress):
    """Docker's printer of the one progress model (toolkit/core/progress.py): each phase as a line
    on stderr while it runs, the result with its `data` (plan, verification…) on stdout."""

    console: Console = field(default_factory=lambda: console(stderr=True))
    out: Console = field(default_factory=lambda: console(stderr=False))
    quiet: bool = False
    data: dict = field(default_factory=dict)

    def say(self, message: str) -> None:
        """Progress: on stderr."""
        if not self.quiet:
            self.console.print(message)

    def result(self, message: str) -> None:
        """Part of the text result (the plan): on stdout, so `pgleap plan … > plan.txt` keeps it."""
        if not self.quiet:
            self.out.print(message)

    @contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[Phase]:
        """Time a phase, show a spinner while it runs and a line when it is done."""
        interrupt.stop_before(name)  # after Ctrl-C no new step begins
        interrupt.set_step(name)
        with self.timed(name, detail) as entry:
            if self.quiet or not self.console.is_terminal:  # no spinner in a pipe or a log
                yield entry
            else:
                with self.console.status(f"[bold]{name}[/] {detail}"):
                    yield entry
        marker = "[red]●[/]" if entry.in_downtime else "[green]●[/]"
        self.say(f"{marker} {name:<34} {entry.seconds:6.2f} s  [dim]{entry.detail}[/]")

    def to_dict(self) -> dict:
        return {**self.data, "phases": self.phase_rows(), "downtime_seconds": self.downtime_seconds()}


def print_findings(out: Console, result: dict) -> None:
    """A rehearsal's health checks, extension versions and rebuilt indexes (text output)."""
    for row in result.get("health", []):
        mark = "[green]ok[/]" if row["ok"] else "[red]FAILED[/]"
        out.print(f"  check  {mark}  {escape(str(row['check']))}  {escape(str(row['detail']))}")
    for e in result.get("extensions", []):
        out.print(
            f"  extension  {e['database']}: {e['extension']} {e['before']} -> {e['after']}", markup=False
        )
    indexes = result.get("collation_indexes", [])
    if indexes and not logging.getLogger().isEnabledFor(logging.INFO):  # -v lists them
        out.print(
            f"  {plural(len(indexes), 'collation-dependent index', 'collation-dependent indexes')} rebuilt "
            "(-v lists them)",
            markup=False,
        )
        return
    for index in indexes:
        out.print(f"  collation-dependent index rebuilt: {index}", markup=False)


def plural(n: int, one: str, many: str | None = None) -> str:
    """ "1 table", "2 tables"."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def print_verdict(out: Console, result: dict) -> None:
    """GO, or NO-GO with the reason and what to do."""
    if result["verdict"] == "go":
        out.print("verdict: [bold green]GO[/]")
        return
    out.print(f"verdict: [bold red]NO-GO[/]: {escape(str(result.get('reason')))}", highlight=False)
    if result.get("what_to_do"):
        out.print(f"what to do: {result['what_to_do']}", markup=False, highlight=False)
