"""PostgreSQL's regression database (1,700 relations of every kind) through pgleap, as a user would.

Issue 13: on the unadjusted database every problem is named before the stop (exit 3, the
database keeps serving); after the adjustments PostgreSQL's own cross-version test makes,
the upgrade succeeds with an identical fingerprint and clean health checks, in both
downtime modes; a rehearsal says no-go while production keeps serving.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.corpus.conftest import PAIRS
from toolkit.db import verify
from toolkit.docker import images
from toolkit.errors import EXIT_REFUSED

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.corpus]

# What pg_upgrade (or its schema restore) trips over in an unadjusted 13 regression
# database, and the names a refusal must print for each (issue 13, runs 1-4).
PROBLEMS_13 = {
    "libraries missing from the old image": ["regress.so", "autoinc.so", "refint.so"],
    "aclitem in a user table (16+)": ["aclitem", "tab_core_types"],
    "user-defined postfix operators (14+)": ["postfix", "#@#", "#%#"],
    "child table with a locally generated column": ["gtest_normal_child"],
}
PROBLEMS_15 = {k: v for k, v in PROBLEMS_13.items() if "postfix" not in k}


def pgleap(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, timeout=1200, env=env
    )


def said(proc: subprocess.CompletedProcess) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


def volume_root(runtime, volume: str) -> str:
    """Names, modes and owners at the volume's top: a new or failed cluster would show here."""
    out = runtime.docker.containers.run(
        "debian:bookworm", ["bash", "-c", "cd /v && find . -maxdepth 1 -printf '%p %m %U:%G\\n' | LC_ALL=C sort"],
        volumes={volume: {"bind": "/v", "mode": "ro"}}, remove=True,
    )  # fmt: skip
    return out.decode()


def serving_unchanged(runtime, db, started_at: str, before, root: str) -> None:
    """Still the same running container on the old image, never restarted, same data, same volume top."""
    container = runtime.docker.containers.get(db.name)
    assert container.status == "running"
    assert container.attrs["State"]["StartedAt"] == started_at, "the database was restarted"
    assert container.attrs["Config"]["Image"] == db.image
    comparison = verify.compare(before, db.fingerprint())
    assert comparison.identical, comparison.differences
    assert volume_root(runtime, db.volume) == root


def problems_for(tag: str) -> dict[str, list[str]]:
    return PROBLEMS_13 if images.spec_for(tag).pg < 14 else PROBLEMS_15


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{o}-to-{n}" for o, n in PAIRS])
def test_unadjusted_is_refused_before_the_stop_with_every_problem_named(
    runtime, image_names, corpus_factory, old, new
):
    db = corpus_factory(old)
    started_at = runtime.docker.containers.get(db.name).attrs["State"]["StartedAt"]
    before, root = db.fingerprint(), volume_root(runtime, db.volume)

    proc = pgleap("upgrade", "docker", "--container", db.name, "--to", image_names[new], "--yes")

    text = said(proc)
    assert "Traceback" not in text
    missing = {what: [n for n in names if n not in text] for what, names in problems_for(old).items()}
    missing = {what: names for what, names in missing.items() if names}
    assert proc.returncode == EXIT_REFUSED and not missing, (proc.returncode, missing, text[-3000:])
    serving_unchanged(runtime, db, started_at, before, root)


@pytest.mark.parametrize("downtime", ["verified", "minimal"])
@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{o}-to-{n}" for o, n in PAIRS])
def test_adjusted_upgrades_with_identical_fingerprint(
    runtime, image_names, corpus_factory, old, new, downtime
):
    db = corpus_factory(old, adjusted=True)
    before = db.fingerprint()

    proc = pgleap(
        "upgrade",
        "docker",
        "--container",
        db.name,
        "--to",
        image_names[new],
        "--downtime",
        downtime,
        "-o",
        "json",
        "--yes",
    )

    assert proc.returncode == 0, (proc.returncode, said(proc)[-3000:])
    result = json.loads(proc.stdout)
    assert result["status"] == "upgraded"
    if downtime == "verified":
        assert result["fingerprint"]["before"] == result["fingerprint"]["after"]
    assert result["health"] and all(r["ok"] for r in result["health"]), [
        r for r in result["health"] if not r["ok"]
    ]
    container = runtime.docker.containers.get(db.name)
    assert container.status == "running" and container.attrs["Config"]["Image"] == image_names[new]
    with db.server().connect("regression") as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    assert major == images.spec_for(new).pg
    comparison = verify.compare(before, db.fingerprint(), include_extension_tables=False)
    assert comparison.identical, comparison.differences


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{o}-to-{n}" for o, n in PAIRS])
def test_rehearsal_of_unadjusted_is_no_go_while_production_serves(
    runtime, image_names, corpus_factory, old, new
):
    db = corpus_factory(old)
    started_at = runtime.docker.containers.get(db.name).attrs["State"]["StartedAt"]
    before, root = db.fingerprint(), volume_root(runtime, db.volume)

    proc = pgleap("rehearse", "docker", "--container", db.name, "--to", image_names[new], "-o", "json")

    assert "Traceback" not in said(proc)
    assert proc.returncode != 0, said(proc)[-3000:]
    assert proc.stdout.strip().startswith("{"), (
        f"no JSON verdict (exit {proc.returncode}): {said(proc)[-3000:]}"
    )
    result = json.loads(proc.stdout)
    assert result["verdict"] == "no-go", result
    # the reason names the database's problems, not an environment hiccup
    reason = " ".join(json.dumps(result).split())
    assert any(n in reason for names in problems_for(old).values() for n in names), reason[-3000:]
    serving_unchanged(runtime, db, started_at, before, root)


@pytest.mark.parametrize(("old", "new"), PAIRS, ids=[f"{o}-to-{n}" for o, n in PAIRS])
def test_unadjusted_is_refused_alike_on_kubernetes(runtime, image_names, corpus_factory, kubelet, old, new):
    """The same refusal from `upgrade sts`: the recording fake API, probe Pods on Docker, the
    live read (exec, port-forward) reaching the same running regression cluster; no mutating
    call but the probe Pods' own, and the database serves on, unchanged."""
    from tests.kube.test_parity_refusals import kube_run
    from tests.kube.test_probe import non_probe_writes

    db = corpus_factory(old)
    started_at = runtime.docker.containers.get(db.name).attrs["State"]["StartedAt"]
    before, root = db.fingerprint(), volume_root(runtime, db.volume)

    c, refused = kube_run(db, kubelet, image_names, image_names[new])

    text = " ".join(f"{refused.message} {refused.hint}".split())
    missing = {what: [n for n in names if n not in text] for what, names in problems_for(old).items()}
    missing = {what: names for what, names in missing.items() if names}
    assert refused.exit_code == EXIT_REFUSED and not missing, (missing, text[-3000:])
    assert non_probe_writes(c) == []
    serving_unchanged(runtime, db, started_at, before, root)
