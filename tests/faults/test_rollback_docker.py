"""The way back (issue 14 "Rollback", issue 13 automatic restore), through the real CLI.

Rollback decides before it acts: refused (exit 3) whenever it cannot bring back what
it claims, and then nothing has changed; in copy mode it says what it drops and asks.
A failed upgrade before the point of no return brings the old database back by itself.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.faults.conftest import SOURCE, TARGET
from tests.faults.harness import fault_env, kill_container_at, pgleap, result_json, start, wait_for_point
from tests.faults.test_kill_docker import assert_old_back, key, upgrade_args
from toolkit.core.interrupt import EXIT_INTERRUPTED
from toolkit.errors import EXIT_FAILED, EXIT_REFUSED

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]


def flat(text: str) -> str:
    return " ".join(text.split())


def status(db) -> dict:
    """The recorded state as `status -o json` shows it, without the output's own metadata (the
    time it was printed, pgleap's version)."""
    proc = pgleap("status", "docker", "--container", db.name, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return {k: v for k, v in json.loads(proc.stdout).items() if k not in ("finished_at", "pgleap_version")}


def on_volume(runtime, volume: str, test: str) -> bool:
    """Whether a shell test about the volume (mounted at /v) holds: read from the exit status,
    since a short container's log can come back empty."""
    status, _, _ = runtime.run_to_exit(
        "debian:bookworm", entrypoint=["bash", "-c"], command=[test],
        volumes={volume: {"bind": "/v", "mode": "ro"}},
    )  # fmt: skip
    return status == 0


def write_after_switch(db) -> None:
    with db.server().connect("postgres") as conn:
        conn.execute("CREATE TABLE after_switch (i int)")
        conn.execute("INSERT INTO after_switch VALUES (42)")


def rows_after_switch(db) -> list:
    return db.server().query("postgres", "SELECT i FROM after_switch")


def assert_upgraded_serving(runtime, db, image_names) -> None:
    container = runtime.docker.containers.get(db.name)
    assert container.status == "running"
    assert container.attrs["Config"]["Image"] == image_names[TARGET]
    assert rows_after_switch(db) == [(42,)]


@pytest.mark.parametrize("downtime", ["verified", "minimal"])
def test_link_rollback_after_the_switch_is_refused_and_changes_nothing(
    runtime, image_names, fresh_db, downtime
):
    """Issue 14 rollback rows 1-2: minimal mode used to roll back (new row lost, indexes 0 bytes);
    the default mode used to remove the upgraded container before refusing (production down)."""
    db = fresh_db()
    proc = pgleap(*upgrade_args(db, image_names, "link"), "--downtime", downtime, "-o", "json")
    assert result_json(proc)["status"] == "upgraded"
    write_after_switch(db)
    recorded = status(db)
    proc = pgleap("rollback", "docker", "--container", db.name)
    text = flat(proc.stderr)
    assert proc.returncode == EXIT_REFUSED, text
    assert "rollback is not possible, nothing was changed" in text
    assert "can no longer be used safely" in text
    assert "complete and keeps serving" in text and "backup or snapshot" in text
    assert "Traceback" not in text
    assert_upgraded_serving(runtime, db, image_names)
    assert (
        runtime.docker.containers.get(f"{db.name}-pgleap-old").attrs["Config"]["Image"] == image_names[SOURCE]
    )
    assert status(db) == recorded


def stop_the_rollback_twice(runtime, db, image_names, tmp_path, upgraded: dict) -> None:
    """Issue 15: Docker's rollback is a phase table under its own key of the state file. Ctrl-C once
    it is decided stops it there (exit 130); `resume` (which goes on with it, refused if it asked
    again) fails after `stopped-new` (the upgraded container gone, the old one back under its name, stopped,
    its data not yet moved back): the upgrade's phases stay recorded, `status` shows the rollback
    under way, and `upgrade` and `finalize` are refused meanwhile."""
    rollback = ["rollback", "docker", "--container", db.name]
    run = start(*rollback, "--yes", env=fault_env("after-rollback-started", tmp_path))
    wait_for_point(runtime, run, key(db), "after-rollback-started")
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(timeout=120) == EXIT_INTERRUPTED, run.stderr()
    run.proc.stdout.close()
    text = flat(run.stderr())
    assert "rollback interrupted during" in text and "(phase rollback-started recorded)" in text, text
    assert f"run `pgleap rollback docker --container {db.name}` again" in text and "Traceback" not in text
    assert status(db)["rollback"]["done_phases"] == ["rollback-started"]

    # `resume` goes on with the rollback under way, as `rollback` would (no --yes: not asked again).
    proc = pgleap("resume", "docker", "--container", db.name, env={"PGLEAP_FAIL": "after-stopped-new"})
    assert proc.returncode == EXIT_FAILED and "injected failure at after-stopped-new" in proc.stderr, (
        proc.stderr
    )
    assert runtime.docker.containers.get(db.name).attrs["Config"]["Image"] == image_names[SOURCE]
    now = status(db)
    assert now["done_phases"] == upgraded["done_phases"] and now["phase"] == "done"
    assert now["rollback"]["done_phases"] == ["rollback-started", "stopped-new"]
    text = pgleap("status", "docker", "--container", db.name).stdout
    assert f"phase: done (upgrade to {image_names[TARGET]})" in text
    assert "rollback: under way, phase stopped-new recorded" in text
    for other in (upgrade_args(db, image_names, "copy"), ["finalize", "docker", "--container", db.name]):
        proc = pgleap(*other)
        assert proc.returncode == EXIT_REFUSED, proc.stderr
        assert f"a rollback of {key(db)} is under way" in flat(proc.stderr)
        assert f"pgleap rollback docker --container {db.name}" in flat(proc.stderr)


def test_copy_rollback_says_what_it_drops_asks_and_cleanup_removes_what_it_kept(
    runtime, image_names, fresh_db, tmp_path
):
    """Refused without --yes; accepted, then stopped twice (issue 15) and finished by running
    `rollback` again; `cleanup` removes what it kept."""
    db = fresh_db()
    before = db.fingerprint()
    proc = pgleap(*upgrade_args(db, image_names, "copy"), "-o", "json")
    assert result_json(proc)["status"] == "upgraded"
    write_after_switch(db)
    recorded = status(db)

    # No terminal and no --yes: refused, nothing changed.
    proc = pgleap("rollback", "docker", "--container", db.name)
    text = flat(proc.stderr)
    assert proc.returncode == EXIT_REFUSED, text
    assert "rollback would drop data, nothing was changed" in text
    assert "served clients for" in text and "checkpoint moved" in text
    assert "--yes" in text
    assert_upgraded_serving(runtime, db, image_names)
    assert status(db) == recorded

    stop_the_rollback_twice(runtime, db, image_names, tmp_path, recorded)
    proc = pgleap("rollback", "docker", "--container", db.name)  # no --yes: decided when it started
    text = flat(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert "dropped: the upgraded database has served clients" in text
    assert "the new cluster was kept in .pgleap/failed-new-" in text and f"on volume {db.volume}" in text
    assert f"pgleap cleanup docker --container {db.name}" in text
    assert_old_back(runtime, db, image_names, before)  # the row written after the switch is gone
    assert on_volume(runtime, db.volume, "compgen -G '/v/.pgleap/failed-new-*'")
    assert status(db)["last_operation"]["operation"] == "rolled-back" and "rollback" not in status(db)
    assert "rollback:" not in pgleap("status", "docker", "--container", db.name).stdout
    proc = pgleap("finalize", "docker", "--container", db.name)
    assert proc.returncode == EXIT_REFUSED and "pgleap cleanup docker" in flat(proc.stderr), proc.stderr

    proc = pgleap("cleanup", "docker", "--container", db.name, "-o", "json", "--yes")
    assert result_json(proc)["status"] == "cleaned"
    assert on_volume(runtime, db.volume, "test ! -e /v/.pgleap && test -f /v/PG_VERSION")
    assert f"pgleap-old-binaries-{db.volume}" not in [v.name for v in runtime.docker.volumes.list()]
    assert_old_back(runtime, db, image_names, before)
    assert status(db) == {"target": key(db), "phase": None}


# Failures before the point of no return: (how, point). "fail": pgleap fails at its own point
# (PGLEAP_FAIL); "kill": the container running pg_upgrade dies in the middle of the link transfer.
FAILURES = [
    ("fail", "after-stopped"),
    ("fail", "after-fingerprinted"),
    ("kill", "transfer"),
    ("fail", "after-upgraded"),  # pg_upgrade done, the new cluster never started
]


@pytest.mark.parametrize(("how", "point"), FAILURES, ids=[p for _, p in FAILURES])
def test_failure_before_the_point_of_no_return_restores_the_old_database(
    runtime, image_names, fresh_db, tmp_path, how, point
):
    db = fresh_db()
    before = db.fingerprint()
    args = upgrade_args(db, image_names, "link", auto_restore=True)
    if how == "fail":
        proc = pgleap(*args, env={"PGLEAP_FAIL": point})
        code, stderr = proc.returncode, proc.stderr
    else:
        run = start(*args, env=fault_env(point, tmp_path))
        code, stderr = kill_container_at(runtime, run, key(db), point, tmp_path), run.stderr()
    text = flat(stderr)
    assert code == EXIT_FAILED, text
    assert "the upgrade was undone: the database serves again on its old image" in text
    assert "injected failure" in text if how == "fail" else "upgrade.sh" in text
    assert "Traceback" not in text
    assert_old_back(runtime, db, image_names, before)  # no command run since
    assert status(db)["last_operation"]["operation"] == "restored"
