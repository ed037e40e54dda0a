"""What a run did, one model for both runtimes: the phases it timed (with detail and whether the
database was down), the writes it made, the checks that found a step already done, notes for
the operator, and the downtime window. Docker's printer (`toolkit.core.report.Report`) and
Kubernetes' `Outcome` (toolkit/kube/model.py) are this model plus how each one shows it, so a
phase row in `-o json` has one shape whichever runtime wrote it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Phase:
    name: str
    seconds: float
    detail: str = ""
    in_downtime: bool = False

    def as_row(self) -> dict[str, Any]:
        """The phase as `-o json`/`-o yaml` show it (Docker, Kubernetes and the rehearsal alike)."""
        return {
            "name": self.name,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
            "in_downtime": self.in_downtime,
        }


class PhaseSeconds(MutableMapping[str, float]):
    """phase → seconds, a view on the phases: `progress.seconds["stopped"] = 1.5` records the
    phase (or times it anew), so a runner that only counts seconds still fills the one model."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def _find(self, name: str) -> Phase | None:
        return next((p for p in reversed(self._progress.phases) if p.name == name), None)

    def __getitem__(self, name: str) -> float:
        found = self._find(name)
        if found is None:
            raise KeyError(name)
        return found.seconds

    def __setitem__(self, name: str, seconds: float) -> None:
        found = self._find(name)
        if found is None:
            self._progress.record(name, seconds)
        else:
            found.seconds = seconds

    def __delitem__(self, name: str) -> None:
        found = self._find(name)
        if found is None:
            raise KeyError(name)
        self._progress.phases.remove(found)

    def __iter__(self) -> Iterator[str]:
        return iter([p.name for p in self._progress.phases])

    def __len__(self) -> int:
        return len(self._progress.phases)

    def __repr__(self) -> str:
        return repr(dict(self))


@dataclass(kw_only=True)
class Progress:
    """What a run did. `changed` lists the writes made, `unchanged` the checks that found a step
    done; `clock` is monotonic seconds (Kubernetes injects its API client's, tests a fake)."""

    phases: list[Phase] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    downtime: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    _down_since: float | None = field(default=None, repr=False, compare=False)

    @property
    def seconds(self) -> PhaseSeconds:
        return PhaseSeconds(self)

    def in_downtime(self, name: str) -> bool:
        """Whether a phase starting now runs while the database does not serve."""
        return self._down_since is not None

    def record(
        self, name: str, seconds: float, detail: str = "", *, in_downtime: bool | None = None
    ) -> Phase:
        """A phase timed elsewhere (a runner's loop, another run's outcome)."""
        entry = Phase(name, seconds, detail, self.in_downtime(name) if in_downtime is None else in_downtime)
        self.phases.append(entry)
        return entry

    @contextmanager
    def timed(
        self, name: str, detail: str = "", *, in_downtime: bool | None = None, keep_failed: bool = False
    ) -> Iterator[Phase]:
        """Time a phase; a phase that raises is recorded only with `keep_failed` (a report that
        shows how far a failed run came)."""
        entry = Phase(name, 0.0, detail, self.in_downtime(name) if in_downtime is None else in_downtime)
        start = self.clock()
        try:
            yield entry
        except BaseException:
            if keep_failed:
                entry.seconds = self.clock() - start
                self.phases.append(entry)
            raise
        entry.seconds = self.clock() - start
        self.phases.append(entry)

    def down(self, since: float | None = None) -> float:
        """The database stopped serving, now or at `since` (epoch seconds, recorded by an earlier run
        that a resume continues); returns that moment, for the run state."""
        now = time.time()
        since = now if since is None else min(float(since), now)
        self._down_since = self.clock() - (now - since)
        return since

    def up(self, at: float | None = None) -> None:
        """The database serves again (now, or at `at` in epoch seconds when that was recorded)."""
        if self._down_since is not None:
            end = self.clock() - (0.0 if at is None else max(0.0, time.time() - float(at)))
            self.downtime = max(0.0, end - self._down_since)
            self._down_since = None

    def phase_rows(self) -> list[dict[str, Any]]:
        return [p.as_row() for p in self.phases]

    def downtime_seconds(self) -> float | None:
        return None if self.downtime is None else round(self.downtime, 3)
