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

import json
import os
import time

import pytest

from tests.faults.conftest import SOURCE, TARGET
from tests.faults.harness import fault_env, kill_pgleap_at, pgleap, start, wait_for_point
from toolkit.db import verify

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


@pytest.fixture
def logical_db(runtime, fresh_db):
    """A clone of the golden 15 cluster; the logical strategy's containers and volume removed after."""
    made = []

    def make():
        db = fresh_db()
        made.append(db)
        return db

    yield make
    for db in made:  # NAME may be the new cluster on the second volume: it goes first
        for suffix in ("-pgleap-green", "-pgleap-next", "-pgleap-blue", "", "-pgleap-old"):
            runtime.remove(db.name + suffix)
        runtime.remove_volume(db.volume + "-pgleap-next")


def _upgrade_args(db, image_names, verify_after: bool) -> list[str]:
    args = ["upgrade", "docker", "-c", db.name, "--to", image_names[TARGET], "--strategy", "logical",
            "--restart-for-wal-level", "--replica-identity-full", "-y", "-o", "json"]  # fmt: skip
    return [*args, "--verify-after"] if verify_after else args


def _kill_at(runtime, db, image_names, tmp_path, point: str, verify_after: bool) -> None:
    run = start(*_upgrade_args(db, image_names, verify_after), env=fault_env(point, tmp_path))
    kill_pgleap_at(runtime, run, f"docker-{db.volume}", point)


def _ok(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def _writable(server) -> bool:
    return server.query("postgres", "SHOW default_transaction_read_only")[0][0] == "off"


def _assert_old(runtime, db, image_names, before) -> None:
    container = runtime.docker.containers.get(db.name)
    assert container.status == "running"
    assert container.attrs["Config"]["Image"] == image_names[SOURCE]
    server = db.server()
    comparison = verify.compare(before, verify.fingerprint(server))
    assert comparison.identical, comparison.differences
    assert _writable(server), "the old server was left read-only"
    leftovers = server.query("postgres", "SELECT slot_name FROM pg_replication_slots")
    for name in server.databases():
        leftovers += server.query(name, "SELECT pubname FROM pg_publication")
    assert leftovers == [], leftovers
    for suffix in ("-pgleap-next", "-pgleap-old", "-pgleap-blue"):
        assert not runtime.exists(db.name + suffix), suffix


def _assert_new(runtime, db, image_names, before, result) -> None:
    assert result["phase"] == "switched", result
    assert runtime.docker.containers.get(db.name).attrs["Config"]["Image"] == image_names[TARGET]
    server = db.server()
    assert server.query("postgres", "SHOW server_version_num")[0][0].startswith("17")
    comparison = verify.compare(before, verify.fingerprint(server), include_extension_tables=False)
    assert comparison.identical, comparison.differences
    assert _writable(server), "the new server was left read-only"


def _case(
    runtime, db, image_names, tmp_path, before, point, then, verify_after, *, back: bool = True
) -> None:
    """Kill, then `then`; after a resume, with `back`, a rollback must give the old state again."""
    _kill_at(runtime, db, image_names, tmp_path, point, verify_after)
    if then == "resume":
        resumed = _ok(pgleap("resume", "docker", "-c", db.name, "-o", "json"))
        _assert_new(runtime, db, image_names, before, resumed)
        if not back:
            return
        then = "rollback"
    result = _ok(pgleap(then, "docker", "-c", db.name, "-y", "-o", "json"))
    assert result["rolled_back"], result
    _assert_old(runtime, db, image_names, before)


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
    run = start(*_upgrade_args(db, image_names, False), env=fault_env("logical-built", tmp_path))
    wait_for_point(runtime, run, f"docker-{db.volume}", "logical-built")
    runtime.docker.containers.get(f"{db.name}-pgleap-next").kill(signal="SIGKILL")
    (tmp_path / "release").touch()
    assert run.proc.wait(timeout=300) == 1, run.stderr()
    run.proc.stdout.close()
    assert "Traceback" not in run.stderr(), run.stderr()
    assert _writable(db.server()), "the old server must not pause for a failure before the switch"
    resumed = _ok(pgleap("resume", "docker", "-c", db.name, "-o", "json"))
    _assert_new(runtime, db, image_names, before, resumed)
    assert _ok(pgleap("rollback", "docker", "-c", db.name, "-y", "-o", "json"))["rolled_back"]
    _assert_old(runtime, db, image_names, before)


@pytest.mark.skipif(not FULL, reason="CI time: PGLEAP_FULL_FAULTS=1 runs the container kill too")
def test_logical_old_container_killed_in_the_write_pause_then_rollback(
    runtime, image_names, logical_db, tmp_path
):
    """The old primary SIGKILLed inside the write pause: pgleap fails (exit 1); `rollback` starts it
    again (it comes up read-only: the pause is in its postgresql.auto.conf), lifts the pause and
    removes the copy: the old state, writable."""
    db = logical_db()
    before = db.fingerprint()
    run = start(*_upgrade_args(db, image_names, False), env=fault_env("logical-paused", tmp_path))
    wait_for_point(runtime, run, f"docker-{db.volume}", "logical-paused")
    runtime.docker.containers.get(db.name).kill(signal="SIGKILL")
    (tmp_path / "release").touch()
    assert run.proc.wait(timeout=300) == 1, run.stderr()
    run.proc.stdout.close()
    assert "Traceback" not in run.stderr(), run.stderr()
    assert _ok(pgleap("rollback", "docker", "-c", db.name, "-y", "-o", "json"))["rolled_back"]
    _assert_old(runtime, db, image_names, before)
