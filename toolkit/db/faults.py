"""Test-only fault points (tests/faults): `PGLEAP_FAULT=<point>` stops pgleap at a named point.

At the point, pgleap prints ``PGLEAP fault=<point>`` on stderr and waits, so a
test can SIGKILL pgleap, or a container, exactly there. With
``PGLEAP_FAULT_RELEASE=<file>`` it goes on once that file exists (the test killed
a container and wants pgleap to meet the broken world). The container scripts
honour the same variable (lib.sh `fault`). Unset, as in every real run, nothing
here does anything. ``PGLEAP_FAIL=<point>`` makes pgleap fail at a point instead
(an error, as when a step fails there), for the automatic-restore tests.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import psycopg

from toolkit.core import interrupt
from toolkit.errors import PgleapError

ENV = "PGLEAP_FAULT"
FAIL_ENV = "PGLEAP_FAIL"
RELEASE_ENV = "PGLEAP_FAULT_RELEASE"


def armed(name: str) -> bool:
    return os.environ.get(ENV) == name


def announce(name: str) -> None:
    print(f"PGLEAP fault={name}", file=sys.stderr, flush=True)


def point(name: str) -> None:
    """Wait here (to be killed) when PGLEAP_FAULT names this point, fail when PGLEAP_FAIL does;
    return at once otherwise."""
    if os.environ.get(FAIL_ENV) == name:
        raise PgleapError(f"injected failure at {name} (test-only PGLEAP_FAIL)")
    if not armed(name):
        return
    announce(name)
    release = os.environ.get(RELEASE_ENV)
    while not (release and os.path.exists(release)) and not interrupt.requested():
        time.sleep(0.05)


def container_env() -> dict[str, str]:
    """Handed to the container scripts, so their points (lib.sh `fault`) fire too."""
    value = os.environ.get(ENV)
    return {ENV: value} if value else {}


def hold_reindex(server, db: str):
    """For the point `reindex`: make the next REINDEX CONCURRENTLY in `db` wait, announce it once it waits.

    A second session holds a snapshot, so REINDEX CONCURRENTLY stops in "waiting for
    old snapshots" with its `_ccnew` index built but not yet valid: the state a
    crash in the middle of a reindex leaves. Returns the connection (keep it open).
    """
    blocker = psycopg.connect(**server._params(db))  # not autocommit: the snapshot lives in a transaction
    blocker.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    blocker.execute("SELECT 1")

    def watch() -> None:
        with server.connect(db) as conn:
            while True:
                row = conn.execute(
                    "SELECT phase FROM pg_stat_progress_create_index "
                    "WHERE command = 'REINDEX CONCURRENTLY' AND phase LIKE 'waiting%'"
                ).fetchone()
                if row:
                    announce("reindex")
                    return
                time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    return blocker


def skip_repairs() -> str:
    """Test-only (PGLEAP_TEST_SKIP_REPAIRS): "1" leaves known extension traps unrepaired, "all"
    also skips the check in the update's transaction, so tests prove that each later check
    fails by itself. Empty in every real run."""
    return os.environ.get("PGLEAP_TEST_SKIP_REPAIRS", "")
