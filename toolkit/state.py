"""Run state on the machine running pgleap: the phase reached and what rollback needs; a lock per volume.

The data's own state (what pg_upgrade did, where each cluster is) lives on the
volume in marker files written by upgrade.sh; this file only says how far the
orchestration got, so `resume`, `rollback` and `finalize` know where to go on.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from toolkit.errors import PgleapError


def state_dir() -> Path:
    base = os.environ.get("PGLEAP_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "pgleap"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunState:
    """JSON document per target (e.g. one Docker volume), rewritten atomically at each phase."""

    def __init__(self, key: str) -> None:
        self.path = state_dir() / f"{key}.json"
        self.data: dict = json.loads(self.path.read_text()) if self.path.exists() else {}

    @property
    def phase(self) -> str | None:
        return self.data.get("phase")

    def save(self, **changes) -> None:
        self.data.update(changes)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        self.data = {}


@contextmanager
def locked(key: str) -> Iterator[None]:
    """One pgleap at a time per volume: a second run is refused, not queued."""
    path = state_dir() / f"{key}.lock"
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PgleapError(
                f"another pgleap run is working on {key}",
                "wait for it to finish, or check `pgleap status`",
            ) from None
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
