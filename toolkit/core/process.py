"""Is a process of this machine still running? Asked of the pid a lock or a lease recorded."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True unless the pid is gone: a pid we may not signal belongs to a live process (of another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
