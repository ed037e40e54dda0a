"""Ctrl-C (SIGINT) during `upgrade docker` at three phases: before the stop, in the downtime before
the point of no return, and past it. Each ends with exit 130, one message naming the way on that is
still open, and the database in the state that message promises."""

from __future__ import annotations

import signal

import pytest

from tests.faults.harness import fault_env, pgleap, result_json, start, wait_for_point
from tests.faults.test_kill_docker import assert_new, assert_old_back, key, upgrade_args

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]


def interrupt_at(runtime, db, image_names, tmp_path, point: str, *, auto_restore: bool = True):
    run = start(
        *upgrade_args(db, image_names, "link", auto_restore=auto_restore), env=fault_env(point, tmp_path)
    )
    wait_for_point(runtime, run, key(db), point)
    run.proc.send_signal(signal.SIGINT)
    run.proc.wait(timeout=300)
    run.proc.stdout.close()
    text = " ".join(run.stderr().split())
    assert run.proc.returncode == 130, run.stderr()
    assert "Traceback" not in text, run.stderr()
    assert "error: interrupted during" in text, run.stderr()
    return text


def test_sigint_before_the_stop_leaves_it_serving(runtime, image_names, fresh_db, tmp_path):
    db = fresh_db()
    before = db.fingerprint()
    text = interrupt_at(runtime, db, image_names, tmp_path, "after-collected")
    assert "phase collected recorded" in text and "still serves" in text, text
    assert "pgleap resume docker" in text and "pgleap rollback docker" in text, text
    assert "no longer possible" not in text, text
    assert_old_back(runtime, db, image_names, before)
    status = result_json(pgleap("status", "docker", "--container", db.name, "-o", "json"))
    assert status["interrupted"]["during"].startswith("collect old binaries"), status


def test_sigint_in_the_downtime_restores_the_old_database(runtime, image_names, fresh_db, tmp_path):
    db = fresh_db()
    before = db.fingerprint()
    text = interrupt_at(runtime, db, image_names, tmp_path, "after-upgraded")
    assert "the upgrade was undone" in text and "serves again" in text, text
    assert_old_back(runtime, db, image_names, before)


def test_sigint_past_the_point_of_no_return_offers_resume_only(runtime, image_names, fresh_db, tmp_path):
    db = fresh_db()
    before = db.fingerprint()
    text = interrupt_at(runtime, db, image_names, tmp_path, "extensions")
    assert "pgleap resume docker" in text and "no longer possible" in text, text
    assert "undone" not in text, text
    proc = pgleap("resume", "docker", "--container", db.name, "-o", "json")
    assert_new(runtime, db, image_names, before, result_json(proc))
