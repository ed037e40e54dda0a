"""Kill pgleap at every phase of `--strategy logical` (toolkit/engine/logical.py's fault points); then
`resume` or `rollback`, as an operator would.

Each case ends in one of two states, asserted from outside:
  (a) old: the container runs the OLD image, takes writes, fingerprint identical to the one before,
      no copy and no replication object left;
  (b) new: `resume` finished, the container runs the NEW image, takes writes, fingerprint identical
      (extension-owned tables apart: PostGIS fills them itself); then `rollback` brings back (a).
15 -> 17 on a clone of the fault suite's golden volume (tests/faults/conftest.py).

CI runs two points in one container: pgleap killed inside the write pause then rolled back (the old
server must serve again, writable), and killed after the hand-over with `--verify-after` then resumed
(the gap docs/logical.md named: the new server started read-only). PGLEAP_FULL_FAULTS=1 runs every point.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.faults.harness import fault_env, pgleap, start, wait_for_point
from tests.faults.logical import assert_new, assert_old, kill_at, ok, upgrade_args, writable

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

FULL = bool(os.environ.get("PGLEAP_FULL_FAULTS"))

# (point, then, --verify-after)
CI_CASES = [("logical-paused", "rollback", False), ("logical-handed-over", "resume", True)]
FULL_CASES = [
    ("logical-preflight", "resume", False),  # recorded, nothing built yet, wal_level not yet set
    ("logical-built", "rollback", False),  # copy built, initial copy running
    ("logical-synced", "resume", False),
    ("logical-paused", "resume", True),  # old server read-only, nothing switched
    ("logical-reverse-slots", "resume", False),  # forward subscription gone, reverse slot made
    ("logical-reverse-slots", "rollback", False),
    ("logical-handed-over", "rollback", True),  # NAME is the new cluster, the run not yet switched
    ("logical-handed-over", "resume", False),
    ("logical-switched", "rollback", False),  # switched, reverse replication not started
]


def _case(
    runtime, db, image_names, tmp_path, before, point, then, verify_after, *, back: bool = True
) -> None:
    """Kill, then `then`; after a resume, with `back`, a rollback must give the old state again."""
    kill_at(runtime, db, image_names, tmp_path, point, verify_after)
    if then == "resume":
        resumed = ok(pgleap("resume", "docker", "-c", db.name, "-o", "json"))
        assert_new(runtime, db, image_names, before, resumed)
        if not back:
            return
        then = "rollback"
    result = ok(pgleap(then, "docker", "-c", db.name, "-y", "-o", "json"))
    assert result["rolled_back"], result
    assert_old(runtime, db, image_names, before)


def test_logical_pgleap_killed_ci_points(runtime, image_names, logical_db, tmp_path, capsys):
    """The two CI points, one after the other on one container (the first ends with the old server
    back as it was, so the second starts from the same data)."""
    db = logical_db()
    before = db.fingerprint()
    for i, (point, then, verify_after) in enumerate(CI_CASES):
        started = time.monotonic()
        # the last one stops at the new state (the rollback after a switch is tests/test_logical_docker.py's)
        last = i == len(CI_CASES) - 1
        _case(runtime, db, image_names, tmp_path, before, point, then, verify_after, back=not last)
        with capsys.disabled():
            print(f"\n[logical kill] {point} then {then}: {time.monotonic() - started:.0f} s")


@pytest.mark.skipif(not FULL, reason="CI time: PGLEAP_FULL_FAULTS=1 runs every logical point")
@pytest.mark.parametrize(
    ("point", "then", "verify_after"), FULL_CASES, ids=[f"{p}-then-{t}{'-va' * v}" for p, t, v in FULL_CASES]
)
def test_logical_pgleap_killed(runtime, image_names, logical_db, tmp_path, point, then, verify_after):
    db = logical_db()
    _case(runtime, db, image_names, tmp_path, db.fingerprint(), point, then, verify_after)


@pytest.mark.skipif(not FULL, reason="CI time: PGLEAP_FULL_FAULTS=1 runs the container kill too")
def test_logical_new_container_killed_during_the_initial_copy_then_resume(
    runtime, image_names, logical_db, tmp_path
):
    """The new cluster's container SIGKILLed while the initial copy runs: pgleap fails (exit 1, the old
    server never paused), `resume` starts the copy's container again and finishes; rollback goes back."""
    db = logical_db()
    before = db.fingerprint()
    run = start(*upgrade_args(db, image_names, False), env=fault_env("logical-built", tmp_path))
    wait_for_point(runtime, run, f"docker-{db.volume}", "logical-built")
    runtime.docker.containers.get(f"{db.name}-pgleap-next").kill(signal="SIGKILL")
    (tmp_path / "release").touch()
    assert run.proc.wait(timeout=300) == 1, run.stderr()
    run.proc.stdout.close()
    assert "Traceback" not in run.stderr(), run.stderr()
    assert writable(db.server()), "the old server must not pause for a failure before the switch"
    resumed = ok(pgleap("resume", "docker", "-c", db.name, "-o", "json"))
    assert_new(runtime, db, image_names, before, resumed)
    assert ok(pgleap("rollback", "docker", "-c", db.name, "-y", "-o", "json"))["rolled_back"]
    assert_old(runtime, db, image_names, before)


@pytest.mark.skipif(not FULL, reason="CI time: PGLEAP_FULL_FAULTS=1 runs the container kill too")
def test_logical_old_container_killed_in_the_write_pause_then_rollback(
    runtime, image_names, logical_db, tmp_path
):
    """The old primary SIGKILLed inside the write pause: pgleap fails (exit 1); `rollback` starts it
    again (it comes up read-only: the pause is in its postgresql.auto.conf), lifts the pause and
    removes the copy: the old state, writable."""
    db = logical_db()
    before = db.fingerprint()
    run = start(*upgrade_args(db, image_names, False), env=fault_env("logical-paused", tmp_path))
    wait_for_point(runtime, run, f"docker-{db.volume}", "logical-paused")
    runtime.docker.containers.get(db.name).kill(signal="SIGKILL")
    (tmp_path / "release").touch()
    assert run.proc.wait(timeout=300) == 1, run.stderr()
    run.proc.stdout.close()
    assert "Traceback" not in run.stderr(), run.stderr()
    assert ok(pgleap("rollback", "docker", "-c", db.name, "-y", "-o", "json"))["rolled_back"]
    assert_old(runtime, db, image_names, before)
