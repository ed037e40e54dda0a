"""The Docker commands as a user runs them, against one container upgraded once for every assertion:
pgleap killed in the downtime and resumed (downtime counts from the first stop), `upgrade` again while
the upgrade awaits finalize, then finalize."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import yaml

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
        plans = {
            fmt: pgleap(
                "plan", "docker", "--container", db.name, "--to", image_names[TARGET], "-o", fmt, env=env
            )
            for fmt in ("text", "json", "yaml")
        }
        read = json.loads(plans["json"].stdout)  # Kubernetes' option names, checked against the cluster
        plan_given = lambda *flags: pgleap(  # noqa: E731
            "plan", "docker", "--container", db.name, "--to", image_names[TARGET], "-o", "json", *flags, env=env
        )  # fmt: skip
        given = {
            "agrees": plan_given("--superuser", read["superuser"], "--initdb-args", read["initdb_args"][0]),
            "contradicts": plan_given("--superuser", "nobody-here"),
        }
        run = start(
            "upgrade", "docker", "--container", db.name, "--to", image_names[TARGET], "--yes", "--no-auto-restore",
            env={**env, **fault_env("after-upgraded", tmp)},
        )  # fmt: skip
        kill_pgleap_at(runtime, run, f"docker-{db.volume}", "after-upgraded")
        killed = time.monotonic()
        time.sleep(8)
        resumed = result_json(pgleap("resume", "docker", "--container", db.name, "-o", "json", env=env))
        yield {
            "db": db,
            "env": env,
            "resumed": resumed,
            "since_kill": time.monotonic() - killed,
            "plans": plans,
            "given": given,
        }
    finally:
        for c in helpers(runtime, f"docker-{db.volume}"):
            c.remove(force=True)
        remove_old(db)


def cli(upgraded: dict, *args: str):
    return pgleap(*args, env=upgraded["env"])


def test_superuser_and_initdb_args_are_checked_against_the_cluster(upgraded):
    """The same option names as on Kubernetes; Docker reads both, so a given value must agree."""
    agrees, contradicts = upgraded["given"]["agrees"], upgraded["given"]["contradicts"]
    assert agrees.returncode == 0, agrees.stderr
    assert json.loads(agrees.stdout)["superuser"] == json.loads(upgraded["plans"]["json"].stdout)["superuser"]
    assert contradicts.returncode == 3, contradicts.stderr
    assert "bootstrap superuser (OID 10)" in contradicts.stderr


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


def parsed(proc, fmt: str):
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout) if fmt == "json" else yaml.safe_load(proc.stdout)
    assert isinstance(data, dict) and data, proc.stdout
    return data


def test_plan_is_the_result_on_stdout_unwrapped_when_piped(upgraded, image_names):
    """`pgleap plan … > plan.txt` keeps the plan; a pipe gets long lines whole, no spinner frames."""
    text = upgraded["plans"]["text"]
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any(line.startswith("Plan: PostgreSQL 15.") for line in lines), text.stdout
    images = [line for line in lines if line.strip().startswith("images")]
    assert images and f"{image_names[SOURCE]} -> {image_names[TARGET]}" in images[0], text.stdout
    pgdata = next(line for line in lines if line.strip().startswith("PGDATA"))
    assert len(pgdata) > 80 and pgdata.rstrip().endswith(")"), pgdata  # one line, not wrapped at 80
    assert max(len(line) for line in text.stderr.splitlines()) > 0
    assert not any(ch in text.stderr for ch in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"), text.stderr
    for fmt in ("json", "yaml"):
        plan = parsed(upgraded["plans"][fmt], fmt)
        assert plan["old_major"] == 15 and plan["new_major"] == 17, plan


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_every_docker_command_speaks_json_and_yaml(upgraded, fmt):
    db = upgraded["db"]
    where = ["--container", db.name]
    status = parsed(cli(upgraded, "status", "docker", *where, "-o", fmt), fmt)
    assert status["phase"] == "done" and status["pgleap_version"], status
    inspected = parsed(cli(upgraded, "inspect", "docker", *where, "-o", fmt), fmt)
    assert inspected["data"]["pg_version"] == 17, inspected
    again = parsed(cli(upgraded, "resume", "docker", *where, "-o", fmt), fmt)
    assert again["status"] == "already-done" and again["rollback_possible"] is False, again
    assert again["old_container"] == f"{db.name}-pgleap-old" and again["finished_at"], again
    assert isinstance(again["downtime_seconds"], float | int | type(None)), again


def test_a_bad_output_format_is_a_usage_error_before_anything(upgraded):
    for args in (["status", "docker"], ["inspect", "docker"], ["finalize", "docker", "--yes"]):
        proc = cli(upgraded, *args, "--container", upgraded["db"].name, "-o", "table")
        assert proc.returncode == 2, (args, proc.stderr)
        assert "use text, json or yaml" in proc.stderr, proc.stderr


def test_finalize_stopped_half_way_then_status_shows_the_last_operation(upgraded):
    """Last in this module: it ends the upgrade. Issue 15: finalize is a phase table under its own
    key of the state file; failed after `finalized-data` (the old cluster deleted, the old container
    not yet), `status` shows it under way beside the upgrade's phases, rollback is refused, and
    finalize run again (without --yes: not asked again) goes on after that phase."""
    db = upgraded["db"]
    where = ["--container", db.name]
    upgrade = parsed(cli(upgraded, "status", "docker", *where, "-o", "json"), "json")
    stopped = pgleap(
        "finalize", "docker", *where, "--yes", env={**upgraded["env"], "PGLEAP_FAIL": "after-finalized-data"}
    )
    assert stopped.returncode == 1 and "injected failure at after-finalized-data" in " ".join(
        stopped.stderr.split()
    ), stopped.stderr
    now = parsed(cli(upgraded, "status", "docker", *where, "-o", "json"), "json")
    assert now["phase"] == "done" and now["done_phases"] == upgrade["done_phases"], now
    assert now["finalize"]["done_phases"] == ["finalize-started", "finalized-data"], now
    assert (
        "finalize: under way, phase finalized-data recorded"
        in cli(upgraded, "status", "docker", *where).stdout
    )
    refused = cli(upgraded, "rollback", "docker", *where, "--yes")
    assert refused.returncode == 3 and f"a finalize of docker-{db.volume} is under way" in " ".join(
        refused.stderr.split()
    ), refused
    done = parsed(cli(upgraded, "finalize", "docker", *where, "-o", "yaml"), "yaml")
    assert done["status"] == "finalized" and done["finalized_at"] > 0, done
    text = cli(upgraded, "status", "docker", "--container", db.name)
    assert "phase: no upgrade recorded" in text.stdout and "last operation: finalized at 20" in text.stdout, (
        text
    )
    cleaned = parsed(
        cli(upgraded, "cleanup", "docker", "--container", db.name, "--yes", "-o", "json"), "json"
    )
    assert cleaned["status"] == "nothing-recorded", cleaned
