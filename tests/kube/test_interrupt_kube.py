"""Ctrl-C/SIGTERM during `upgrade sts` on the recording fake: the step under way finishes, its phase
is recorded, the command exits 130 naming which of resume/rollback is open (three phases, plus a
second signal that stops at once). The signal is sent from inside a fake API call."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.kube.harness import SCRIPTS, Cluster, make_cluster
from tests.kube.test_cli_kube import build_app, runner
from toolkit.cli import kube as cli_kube
from toolkit.core.interrupt import EXIT_INTERRUPTED
from toolkit.errors import PgleapError

UP = ["upgrade", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5", "--yes"]
OLD, NEW = "pgleap/postgis:13-3.1", "pgleap/postgis:17-3.5"


@pytest.fixture(autouse=True)
def scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_kube, "load_scripts", lambda folder=None, required=True: dict(SCRIPTS))


def signal_on(c: Cluster, verb: str, resource: str, name: str, times: int = 1, sig=signal.SIGINT) -> None:
    """Send `sig` to this process (`times` times) when the fake sees the call, once."""
    sent = []

    def hook(call):
        if not sent and (call.verb, call.resource, call.name) == (verb, resource, name):
            sent.append(call)
            for _ in range(times):
                os.kill(os.getpid(), sig)
        return None

    c.fake.error_hook = hook


def interrupted(result) -> PgleapError:
    exc = result.exception
    assert isinstance(exc, PgleapError) and exc.exit_code == EXIT_INTERRUPTED, result.output
    return exc


def state(c: Cluster) -> dict:
    return (c.fake.get_for_test("ConfigMap", "geo", "pgleap-gis-state") or {}).get("data") or {}


def replicas(c: Cluster) -> int:
    return c.sts()["spec"]["replicas"]


def test_before_the_point_of_no_return_the_old_statefulset_is_put_back():
    c = make_cluster("official-plain")
    signal_on(c, "patch", "statefulsets", "gis", sig=signal.SIGTERM)  # the scale to 0
    exc = interrupted(runner.invoke(build_app(c, hook=c.hook), UP))
    assert exc.message.startswith("interrupted during the stop of the database (phase stopped recorded)")
    assert "the upgrade was undone: geo/gis serves again on its old image" in exc.message
    assert (c.image(), replicas(c)) == (OLD, 1)
    assert (state(c)["operation"], state(c)["phase"]) == ("rollback", "rolled-back")
    assert json.loads(state(c)["interrupted"])["phase"] == "rolled-back"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back


def test_after_the_upgrade_job_resume_or_rollback_then_resume_finishes():
    c = make_cluster("official-plain")
    signal_on(c, "create", "jobs", "pgleap-gis-upgrade")
    app = build_app(c, hook=c.hook)
    exc = interrupted(runner.invoke(app, UP))
    assert exc.message == (
        "interrupted during the upgrade Job (pg_upgrade) (phase upgraded recorded); the new cluster has not started"
    )
    assert exc.hint == (
        "`pgleap resume sts gis -n geo` continues the upgrade, or `pgleap rollback sts gis -n geo` brings the "
        "old cluster back"
    )
    assert (state(c)["operation"], state(c)["phase"], replicas(c)) == ("upgrade", "upgraded", 0)
    status = json.loads(runner.invoke(app, ["status", "sts", "gis", "-n", "geo", "-o", "json"]).stdout)
    assert status["interrupted"]["during"].startswith("the upgrade Job")
    c.fake.error_hook = None
    result = runner.invoke(app, ["resume", "sts", "gis", "-n", "geo", "--yes", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["phase"] == "done" and c.image() == NEW
    assert "interrupted" not in state(c)


def test_after_the_new_cluster_started_in_link_mode_rollback_is_closed():
    c = make_cluster("official-plain")

    def hook(ctx):  # the post-upgrade verification: the new cluster runs
        c.hook(ctx)
        os.kill(os.getpid(), signal.SIGINT)

    exc = interrupted(runner.invoke(build_app(c, hook=hook), UP))
    assert exc.message.startswith("interrupted during the verification (phase verified recorded)")
    assert "the new cluster has started" in exc.message
    assert "`pgleap resume sts gis -n geo` finishes the upgrade" in exc.hint
    assert "`pgleap rollback sts gis -n geo` is no longer possible (link mode" in exc.hint
    assert (state(c)["phase"], c.image()) == ("verified", NEW)


def test_a_second_signal_stops_at_once_and_resume_adopts_the_job():
    c = make_cluster("official-plain")
    signal_on(c, "create", "jobs", "pgleap-gis-upgrade", times=2)
    app = build_app(c, hook=c.hook)
    exc = interrupted(runner.invoke(app, [*UP, "--no-auto-restore"]))
    assert exc.message.startswith("interrupted during the upgrade Job (pg_upgrade) (stopped at once)")
    assert "`pgleap resume sts gis -n geo` continues the upgrade, or `pgleap rollback" in exc.hint
    assert state(c)["phase"] == "fingerprinted"  # recorded (skipped without a DataProof) before the Job
    c.fake.error_hook = None
    result = runner.invoke(app, ["resume", "sts", "gis", "-n", "geo", "--yes", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert c.image() == NEW


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_the_stop_leaves_the_database_serving(sig):
    c = make_cluster("official-plain")
    signal_on(c, "create", "configmaps", "pgleap-gis-state", sig=sig)  # the run is recorded
    exc = interrupted(runner.invoke(build_app(c, hook=c.hook), UP))
    assert "the database was not stopped and still serves" in exc.message
    assert "`pgleap rollback sts gis -n geo` drops pgleap's record of it" in exc.hint
    assert (c.image(), replicas(c), state(c)["phase"]) == (OLD, 1, "retention")


@pytest.mark.parametrize(
    ("mode", "operation", "phase", "expected"),
    [
        ("link", "upgrade", "stopped", True),
        ("link", "upgrade", "fingerprinted", True),
        ("link", "upgrade", "upgraded", None),  # verified: the serve-new Job may have started it (read-only)
        ("link", "upgrade", "compared", None),
        ("link", "upgrade", "switched", None),  # the new cluster may have started: the check decides
        ("link", "upgrade", "verified", False),
        ("link", "upgrade", "done", False),
        ("copy", "upgrade", "done", True),  # the old cluster is untouched (the new writes are dropped)
        ("clone", "upgrade", "started", True),
        ("swap", "upgrade", "snapshotted", True),
        ("swap", "upgrade", "upgraded", False),  # pg_upgrade --swap moved the old files
        ("link", "rollback", "stopped-new", None),
        ("copy", "finalize", "finalize-started", False),
    ],
)
def test_rollback_open(mode, operation, phase, expected):
    from toolkit.kube.interrupted import rollback_open

    assert rollback_open(mode, operation, phase) is expected


def test_rollback_open_in_minimal_mode_until_the_switch():
    """--downtime minimal has no serve-new Job: the new cluster first runs after the switch."""
    from toolkit.kube.interrupted import STEPS, rollback_open
    from toolkit.kube.model import UPGRADE_PHASES

    assert rollback_open("link", "upgrade", "upgraded", "minimal") is True
    assert rollback_open("link", "upgrade", "switched", "minimal") is None
    assert list(STEPS) == list(UPGRADE_PHASES[1:])  # every phase named, in the runtime's order


def test_machine_output_says_whether_rollback_is_open():
    c = make_cluster("official-plain")
    app = build_app(c, hook=c.hook)
    out = json.loads(runner.invoke(app, [*UP, "-o", "json"]).stdout)
    assert (out["phase"], out["rollback_possible"], out["pgleap_version"]) == ("done", False, "0.1.0")
    assert out["finished_at"].endswith("Z")
    status = json.loads(runner.invoke(app, ["status", "sts", "gis", "-n", "geo", "-o", "json"]).stdout)
    assert status["rollback_possible"] is False
