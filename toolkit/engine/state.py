"""Run state on the machine running pgleap: the phase reached and what rollback needs; a lock per volume.

The data's own state (what pg_upgrade did, where each cluster is) lives on the
volume in marker files written by upgrade.sh; this file only says how far the
orchestration got, so `resume`, `rollback` and `finalize` know where to go on.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from toolkit.errors import PgleapError, Refused

# Run state lists table names, row counts and role names: readable by its owner only.
_DIR_MODE, _FILE_MODE = 0o700, 0o600
# Where the per-volume lock lives: one place for every user of this host (not the state dir,
# which differs between `sudo pgleap` and `pgleap`), so both see the same lock for one volume.
LOCK_ROOT = Path("/tmp")


def state_dir() -> Path:
    base = os.environ.get("PGLEAP_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "pgleap"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
    if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
        path.chmod(_DIR_MODE)  # made by an older pgleap with the default 0755
    return path


def _load(path: Path) -> dict:
    """The saved state; a damaged file is an error that names it and how to recover."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise PgleapError(
            f"the pgleap state file {path} is damaged ({exc})",
            f"the data itself is safe; move the file aside (mv {path} {path}.damaged) and run "
            "`pgleap status` to see the volume's own markers, then resume or roll back from there",
        ) from exc
    return data


class RunState:
    """JSON document per target (e.g. one Docker volume), rewritten atomically at each phase."""

    def __init__(self, key: str) -> None:
        self.path = state_dir() / f"{key}.json"
        self.data: dict = _load(self.path)

    @property
    def phase(self) -> str | None:
        return self.data.get("phase")

    def save(self, **changes) -> None:
        self.data.update(changes)
        tmp = self.path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(self.data, indent=2, default=str))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        self.data = {}


def _flock(path: Path, key: str, *, write: bool) -> int:
    """An exclusive, non-blocking flock on `path`; PgleapError when another run holds it."""
    flags = (os.O_RDWR if write else os.O_RDONLY) | getattr(os, "O_NOFOLLOW", 0)
    try:  # open an existing file without O_CREAT: fs.protected_regular refuses O_CREAT on
        fd = os.open(path, flags)  # another user's file in a sticky directory such as /tmp
    except FileNotFoundError:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, _FILE_MODE if write else 0o644)
        except FileExistsError:  # another run made it meanwhile
            fd = os.open(path, flags)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Refused(
            f"another pgleap run is working on {key}",
            "wait for it to finish, or check `pgleap status`",
        ) from None
    return fd


@contextmanager
def locked(key: str) -> Iterator[None]:
    """One pgleap at a time per volume: a second run is refused, not queued. Two locks: one in
    the state dir (holds the pid), and one keyed on the volume alone in LOCK_ROOT, which every
    user of the host shares (flock needs only read access, so root's lock file blocks a user)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    shared = _flock(LOCK_ROOT / f"pgleap-{digest}.lock", key, write=False)
    try:
        own = _flock(state_dir() / f"{key}.lock", key, write=True)
    except BaseException:
        os.close(shared)
        raise
    try:
        os.ftruncate(own, 0)
        os.write(own, str(os.getpid()).encode())
        yield
    finally:
        os.close(own)
        os.close(shared)
