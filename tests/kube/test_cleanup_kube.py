"""`cleanup sts` after a rollback or a finalize, and `status` naming the last operation and when
(on the recording fake; every call checked against manifests/rbac.yaml)."""

from __future__ import annotations

import json

import pytest

from tests.kube.harness import SCRIPTS, Cluster, make_cluster
from tests.kube.test_cli_kube import build_app, runner
from tests.kube.test_rbac import check_calls
from toolkit.cli import kube as cli_kube
from toolkit.cli import options as cli_options
from toolkit.errors import Refused

STS = ["sts", "gis", "-n", "geo"]
UP = ["upgrade", *STS, "--to", "pgleap/postgis:17-3.5", "--yes"]


@pytest.fixture(autouse=True)
def scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_kube, "load_scripts", lambda folder=None, required=True: dict(SCRIPTS))


def ok(app, args: list[str]) -> dict:
    result = runner.invoke(app, [*args, "-o", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def pgleap_objects(c: Cluster) -> list[tuple[str, str]]:
    return sorted(
        (kind, name)
        for (_ns, kind, name) in c.fake.objects
        if kind in ("Job", "ConfigMap") and name.startswith("pgleap-gis")
    )


def rolled_back(mode: str = "copy") -> tuple[Cluster, object]:
    c = make_cluster("official-plain")
    app = build_app(c, hook=c.hook)
    ok(app, [*UP, "--mode", mode])
    assert ok(app, ["rollback", *STS, "--yes"])["phase"] == "rolled-back"
    return c, app


def test_status_after_rollback_and_after_finalize_names_the_last_operation():
    c, app = rolled_back()
    status = ok(app, ["status", *STS])
    last = status["last_operation"]
    assert (last["operation"], last["phase"], last["from"], last["to"]) == (
        "rollback",
        "rolled-back",
        "pgleap/postgis:13-3.1",
        "pgleap/postgis:17-3.5",
    )
    assert last["at"].endswith("+00:00") and status["updated"]
    ok(app, ["finalize", *STS, "--yes"])  # after a rollback: clears pgleap's run state
    status = ok(app, ["status", *STS])
    assert status["operation"] is None  # nothing under way
    assert (status["last_operation"]["operation"], status["last_operation"]["phase"]) == (
        "finalize",
        "finalized",
    )
    text = runner.invoke(app, ["status", *STS]).stdout
    assert "last_operation:" in text and "finalized" in text


def test_status_after_an_upgrade_finalized():
    c = make_cluster("official-plain")
    app = build_app(c, hook=c.hook)
    ok(app, UP)
    ok(app, ["finalize", *STS, "--yes"])
    last = ok(app, ["status", *STS])["last_operation"]
    assert (last["operation"], last["phase"], last["to"]) == (
        "finalize",
        "finalized",
        "pgleap/postgis:17-3.5",
    )


def test_cleanup_after_rollback_deletes_the_kept_cluster_jobs_and_configmaps():
    c, app = rolled_back()
    before = len(c.fake.calls)
    out = ok(app, ["cleanup", *STS, "--yes"])
    assert out["operation"] == "cleanup" and out["phase"] == "cleaned"
    assert "deleted the kept new cluster(s) on PVC data-gis-0 (1)" in out["changed"]
    assert pgleap_objects(c) == [("ConfigMap", "pgleap-gis-last")]  # only the record of what happened
    jobs = [x for x in c.fake.calls[before:] if x.verb == "create" and x.resource == "jobs"]
    assert [x.name for x in jobs] == ["pgleap-gis-cleanup"]
    pod = jobs[0].detail["body"]["spec"]["template"]["spec"]
    main = next(x for x in pod["containers"] if x["name"] == "upgrade")
    assert {e["name"]: e["value"] for e in main["env"]}["PGLEAP_ACTION"] == "cleanup"
    status = ok(app, ["status", *STS])["last_operation"]
    assert status["operation"] == "rollback" and status["cleaned-at"]
    assert c.image() == "pgleap/postgis:13-3.1" and c.sts()["spec"]["replicas"] == 1
    check_calls(c.fake.calls)  # every call of upgrade, rollback, status and cleanup is in the Role


def test_cleanup_after_rollback_then_finalize_still_cleans_the_volume():
    c, app = rolled_back()
    ok(app, ["finalize", *STS, "--yes"])
    out = ok(app, ["cleanup", *STS, "--yes"])
    assert any("kept new cluster" in line for line in out["changed"])


def test_cleanup_refuses_a_recorded_upgrade_without_asking(monkeypatch):
    c = make_cluster("official-plain")
    app = build_app(c, hook=c.hook)
    ok(app, UP)
    writes = len(c.fake.writes_for_test())
    monkeypatch.setattr(cli_options, "interactive", lambda: True)  # it must not even ask
    result = runner.invoke(app, ["cleanup", *STS])
    assert isinstance(result.exception, Refused) and result.exception.exit_code == 3
    assert "an upgrade of geo/gis is recorded (phase done)" in result.exception.message
    assert "`pgleap finalize sts gis -n geo`" in result.exception.hint
    assert len(c.fake.writes_for_test()) == writes


def test_cleanup_without_terminal_and_without_yes_is_refused_and_asks_on_a_terminal(monkeypatch):
    c, app = rolled_back()
    writes = len(c.fake.writes_for_test())
    result = runner.invoke(app, ["cleanup", *STS])
    assert isinstance(result.exception, Refused) and "not confirmed (no terminal" in result.exception.message
    monkeypatch.setattr(cli_options, "interactive", lambda: True)
    result = runner.invoke(app, ["cleanup", *STS], input="n\n")
    assert "clean up geo/gis: delete the new cluster kept on PVC data-gis-0" in result.stderr
    assert isinstance(result.exception, Refused)
    assert len(c.fake.writes_for_test()) == writes


def test_cleanup_with_nothing_recorded_changes_nothing():
    c = make_cluster("official-plain")
    out = ok(build_app(c), ["cleanup", *STS, "--yes"])
    assert out["changed"] == [] and "nothing recorded" in out["unchanged"][0]
    assert c.fake.writes_for_test() == []
