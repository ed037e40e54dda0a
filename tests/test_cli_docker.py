"""The Docker commands as a user runs them, against one container upgraded once for every assertion:
pgleap killed in the downtime and resumed (downtime counts from the first stop), `upgrade` again while
the upgrade awaits finalize, then finalize."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import remove_old, start_old
from tests.faults.harness import fault_env, helpers, kill_pgleap_at, pgleap, result_json, start

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]
SOURCE, TARGET = "15-3.3", "17-3.5"


@pytest.fixture(scope="module")
def upgraded(runtime, image_names, tmp_path_factory) -> Iterator[dict]:
    """A 15 container upgraded to 17: pgleap killed after pg_upgrade, 8 s of nothing, then `resume`."""
    tmp = tmp_path_factory.mktemp("cli")
    env = {"PGLEAP_STATE_DIR": str(tmp / "state")}
    db = start_old(runtime, image_names[SOURCE], SOURCE, rows=300)
    try:
        run = start(
            "upgrade", "docker", "--container", db.name, "--to", image_names[TARGET], "--yes", "--no-auto-restore",
            env={**env, **fault_env("after-upgraded", tmp)},
        )  # fmt: skip
        kill_pgleap_at(runtime, run, f"docker-{db.volume}", "after-upgraded")
        killed = time.monotonic()
        time.sleep(8)
        resumed = result_json(pgleap("resume", "docker", "--container", db.name, "-o", "json", env=env))
        yield {"db": db, "env": env, "resumed": resumed, "since_kill": time.monotonic() - killed}
    finally:
        for c in helpers(runtime, f"docker-{db.volume}"):
            c.remove(force=True)
        remove_old(db)


def cli(upgraded: dict, *args: str):
    return pgleap(*args, env=upgraded["env"])


def test_resume_counts_downtime_from_the_first_stop(upgraded):
    result = upgraded["resumed"]
    assert result["status"] == "upgraded", result
    # The database stopped before pgleap was killed: the downtime covers the kill, the wait and the resume.
    assert result["downtime_seconds"] >= upgraded["since_kill"], (result["downtime_seconds"], upgraded)


def test_upgrade_again_to_the_same_target_says_it_awaits_finalize(upgraded, image_names):
    db = upgraded["db"]
    proc = cli(upgraded, "upgrade", "docker", "--container", db.name, "--to", image_names[TARGET], "--yes")
    text = " ".join(proc.stderr.split())
    assert proc.returncode == 0, proc.stderr
    assert f"already upgraded to {image_names[TARGET]}; it awaits finalize" in text, text
    assert f"pgleap finalize docker --container {db.name}" in text, text
    assert "no rollback (link mode, past the point of no return)" in text, text
    data = result_json(
        cli(
            upgraded,
            "upgrade",
            "docker",
            "--container",
            db.name,
            "--to",
            image_names[TARGET],
            "--yes",
            "-o",
            "json",
        )
    )
    assert (data["status"], data["awaits"], data["target_image"]) == (
        "already-done",
        "finalize",
        image_names[TARGET],
    )


def test_upgrade_again_to_another_target_is_refused_naming_the_recorded_one(upgraded, image_names):
    db = upgraded["db"]
    other = next(image for tag, image in image_names.items() if tag.startswith("18"))
    proc = cli(upgraded, "upgrade", "docker", "--container", db.name, "--to", other, "--yes")
    text = " ".join(proc.stderr.split())
    assert proc.returncode == 3, proc.stderr
    assert f"to {image_names[TARGET]} (PostgreSQL 17) is complete and awaits finalize" in text, text
    assert f"pgleap finalize docker --container {db.name}" in text, text
    assert runtime_image(db) == image_names[TARGET]


def runtime_image(db) -> str:
    return db.runtime.docker.containers.get(db.name).attrs["Config"]["Image"]
