"""Paths that reach a shell: refused in Python, before anything changes (pure).

pg_upgrade runs its commands (initdb checks, copying, the old server's start) through a
shell with the data directories inside double quotes, so `$(...)` or a backtick in PGDATA
would run a command. Both runtimes check PGDATA and the volume's paths with this first.
"""

from __future__ import annotations

import re
from typing import Any

from toolkit.errors import Refused

# Characters a shell acts on inside double quotes, and line breaks.
_SHELL_META = re.compile(r"[$`\n\r\\\"]")


def check_path(value: Any, what: str) -> str:
    """An absolute path without shell metacharacters or line breaks; `Refused` otherwise."""
    if not isinstance(value, str) or not value.startswith("/") or _SHELL_META.search(value):
        raise Refused(
            f"{what} {value!r} must be an absolute path without $, `, \\, quotes or line breaks",
            "pg_upgrade passes data directories through a shell: move the data to a plain path",
        )
    return value
