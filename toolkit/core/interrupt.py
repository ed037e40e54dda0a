"""Ctrl-C and SIGTERM during `upgrade`/`resume`: stop between steps, never inside one.

The first signal asks the run to stop once the step under way is finished and
recorded (engine's checkpoint calls `stop_if_requested`); a second signal stops
at once (KeyboardInterrupt), and the next `resume` or `rollback` reaps what the
step left behind. Either way the command exits 130 and says which way on is open.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from toolkit.errors import PgleapError

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells expect from a Ctrl-C

_requested: list[str] = []  # names of the signals received while guarded
_current: list[str] = []  # the step under way, for the messages


class Interrupted(PgleapError):
    """The operator stopped the run; `during` names the step it stopped in or after."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, during: str, *, at_once: bool = False) -> None:
        super().__init__(f"interrupted during {during}")
        self.during = during
        self.at_once = at_once


def requested() -> bool:
    return bool(_requested)


def set_step(name: str | None) -> None:
    """Report.phase tells which step runs, so an interruption can name it."""
    _current[:] = [name] if name else []


def current_step(default: str = "the upgrade") -> str:
    return _current[0] if _current else default


def stop_if_requested(phase: str) -> None:
    """Called once a phase is recorded: the safe place to stop."""
    if _requested:
        raise Interrupted(f"{current_step(phase)} (phase {phase} recorded)")


def stop_before(step: str) -> None:
    """Called as a step starts: after an interruption no new step begins."""
    if _requested:
        raise Interrupted(f"{current_step('the upgrade')}, before {step}")


def _handler(signum: int, _frame) -> None:
    name = signal.Signals(signum).name
    if _requested:  # a second signal: stop now
        raise KeyboardInterrupt(name)
    _requested.append(name)
    print(
        f"{name}: stopping once `{current_step()}` is finished and recorded (again to stop at once)",
        file=sys.stderr,
        flush=True,
    )


@contextmanager
def guarded() -> Iterator[None]:
    """Catch SIGINT and SIGTERM for the duration of an upgrade (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _requested.clear()
        set_step(None)
