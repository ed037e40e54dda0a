"""A container SIGKILLed in each phase of `--strategy logical` (the old one, the copy, the new NAME,
the old cluster started for the reverse replication), then `resume`, `rollback` or `finalize`, as an
operator would. Each case ends in one of the two states of tests/faults/logical.py: the old container
serving as before, or the new one serving with the same data, from which `rollback` gives the old
back. pgleap is stopped at a fault point (PGLEAP_FAULT), the container killed, then pgleap either
killed too or let go on to meet the dead container (it must fail cleanly, no traceback).

Also PGLEAP_FAIL at every logical point, walked on one container. CI runs the finalize case (26 s);
the rest is the full tier (PGLEAP_FULL_FAULTS=1): 34-70 s a case; 15 -> 17 on a clone of the golden
volume (conftest.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

from tests.faults.conftest import SOURCE
from tests.faults.harness import fault_env, pgleap, start, wait_for_point
from tests.faults.logical import (
    assert_new,
    assert_new_serving,
    assert_old,
    ok,
    replication_objects,
    upgrade_args,
    writable,
)

FULL = bool(os.environ.get("PGLEAP_FULL_FAULTS"))
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]
FULL_ONLY = pytest.mark.skipif(
    not FULL, reason="CI time: PGLEAP_FULL_FAULTS=1 runs the logical container kills"
)

UNDO_POINTS = ("logical-rollback-verified", "logical-finalizing")  # reached from a switched run


@dataclass(frozen=True)
class Case:
    point: str
    victim: str  # suffix of the container killed: "" is NAME (old before the hand-over, new after)
    pgleap: str  # "kill": pgleap killed too; "go on": it meets the dead container
    then: str  # resume (then rollback) | rollback | finalize
    verify_after: bool = False

    @property
    def id(self) -> str:
        who = {"": "NAME", "-pgleap-next": "next", "-pgleap-blue": "blue"}[self.victim]
        return (
            f"{self.point}-{who}-{self.pgleap.replace(' ', '')}-then-{self.then}{'-va' * self.verify_after}"
        )


CASES = [
    Case("logical-preflight", "", "kill", "resume"),  # old killed: recorded, nothing built
    Case("logical-built", "", "go on", "resume"),  # old killed while the initial copy runs
    Case("logical-synced", "-pgleap-next", "kill", "resume"),  # the copy killed, caught up
    Case("logical-paused", "-pgleap-next", "go on", "resume"),  # the copy killed in the write pause
    Case("logical-reverse-slots", "-pgleap-next", "kill", "resume"),  # forward subscription gone
    Case("logical-reverse-slots", "", "kill", "rollback"),  # old killed read-only, before the hand-over
    Case("logical-handed-over", "", "kill", "resume", True),  # the new NAME killed, run not switched
    Case("logical-handed-over", "", "go on", "rollback"),
    Case("logical-switched", "", "kill", "rollback"),  # the new NAME killed, no reverse replication
    Case("logical-switched", "", "go on", "rollback", True),
    Case("logical-rollback-verified", "", "kill", "rollback"),  # the new NAME killed in the rollback
    Case("logical-rollback-verified", "-pgleap-blue", "kill", "rollback"),  # the old cluster killed there
    Case("logical-finalizing", "", "kill", "finalize"),  # the new NAME killed in finalize
]
IN_CI = {"logical-finalizing"}  # 26 s: the only case under 40 s whose path no CI case takes


def _stop_and_kill(runtime, db, tmp_path, args: list[str], case: Case) -> int:
    """Run `args` to the point, SIGKILL the victim, then pgleap (or let it go on). pgleap's exit code."""
    run = start(*args, env=fault_env(case.point, tmp_path))
    wait_for_point(runtime, run, f"docker-{db.volume}", case.point)
    runtime.docker.containers.get(db.name + case.victim).kill(signal="SIGKILL")
    if case.pgleap == "kill":
        run.proc.kill()
    else:
        (tmp_path / "release").touch()
    code = run.proc.wait(timeout=600)
    run.proc.stdout.close()
    assert "Traceback" not in run.stderr(), run.stderr()
    return code


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=() if c.point in IN_CI else FULL_ONLY) for c in CASES]
)
def test_logical_container_killed(runtime, image_names, logical_db, tmp_path, capsys, case):
    started = time.monotonic()
    db = logical_db()
    before = db.fingerprint()
    if case.point in UNDO_POINTS:  # a switched run first, then the rollback or finalize is interrupted
        assert_new(runtime, db, image_names, before, ok(pgleap(*upgrade_args(db, image_names, False))))
        verb = "rollback" if case.point == "logical-rollback-verified" else "finalize"
        args = [verb, "docker", "-c", db.name, "-y", "-o", "json"]
    else:
        args = upgrade_args(db, image_names, case.verify_after)
    code = _stop_and_kill(runtime, db, tmp_path, args, case)
    if case.then == "resume":
        assert_new(
            runtime, db, image_names, before, ok(pgleap("resume", "docker", "-c", db.name, "-o", "json"))
        )
    if case.then == "finalize":
        assert ok(pgleap("finalize", "docker", "-c", db.name, "-y", "-o", "json"))["finalized"]
        assert_new_serving(runtime, db, image_names, before)
        assert replication_objects(db.server()) == []
        for suffix in ("-pgleap-next", "-pgleap-old", "-pgleap-blue", "-pgleap-green"):
            assert not runtime.exists(db.name + suffix), suffix
    else:
        assert ok(pgleap("rollback", "docker", "-c", db.name, "-y", "-o", "json"))["rolled_back"]
        assert_old(runtime, db, image_names, before)
    with capsys.disabled():
        print(f"\n[logical container kill] {case.id}: pgleap exit {code}, {time.monotonic() - started:.0f} s")


FAIL_POINTS = ["logical-preflight", "logical-built", "logical-synced", "logical-paused",
               "logical-reverse-slots", "logical-handed-over", "logical-switched"]  # fmt: skip


def _serving(runtime, db, image_names, before) -> str:
    """Which of the two states NAME is in: "old" or "new" (each writable, the data identical)."""
    if runtime.docker.containers.get(db.name).attrs["Config"]["Image"] == image_names[SOURCE]:
        server = db.server()
        from toolkit.db import verify

        comparison = verify.compare(before, verify.fingerprint(server))
        assert comparison.identical, comparison.differences
        assert writable(server), "the old server was left read-only"
        return "old"
    assert_new_serving(runtime, db, image_names, before)
    return "new"


@FULL_ONLY
def test_logical_fail_at_every_point_then_run_again(runtime, image_names, logical_db, capsys):
    """PGLEAP_FAIL at each logical point in turn on one container: pgleap fails cleanly (exit 1),
    NAME serves writable with the same data (old, or new once handed over), and the next run goes
    on from there; the last resume finishes, rollback gives the old state back."""
    started = time.monotonic()
    db = logical_db()
    before = db.fingerprint()
    seen = []
    for i, point in enumerate(FAIL_POINTS):
        args = (
            upgrade_args(db, image_names, False)
            if i == 0
            else ["resume", "docker", "-c", db.name, "-o", "json"]
        )
        failed = pgleap(*args, env={"PGLEAP_FAIL": point})
        assert failed.returncode == 1, (point, failed.stdout, failed.stderr)
        assert "Traceback" not in failed.stderr and f"injected failure at {point}" in failed.stderr
        seen.append((point, _serving(runtime, db, image_names, before)))
    resumed = pgleap("resume", "docker", "-c", db.name, "-o", "json")
    if resumed.returncode != 0:  # a failure after the switch leaves nothing to resume: it is switched
        assert "already switched" in resumed.stderr, resumed.stderr
    assert ok(pgleap("rollback", "docker", "-c", db.name, "-y", "-o", "json"))["rolled_back"]
    assert_old(runtime, db, image_names, before)
    with capsys.disabled():
        print(f"\n[logical fail walk] {seen}: {time.monotonic() - started:.0f} s")
