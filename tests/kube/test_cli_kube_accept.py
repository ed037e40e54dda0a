"""The way forward after a Kubernetes exit 4 and `--no-verify`, through the CLI (recording fake):
`resume sts --accept fingerprint` is the command the hint names, as `resume docker --accept`."""

from __future__ import annotations

import copy
import json

import typer
from typer.testing import CliRunner

from tests.kube.harness import make_cluster
from tests.kube.test_cli_kube import GROUPS
from tests.kube.test_fingerprint_kube import FP, serving
from toolkit.cli import kube as cli_kube
from toolkit.errors import VerificationFailed
from toolkit.kube import objects
from toolkit.kube.model import DataProof

runner = CliRunner()
TARGET = "pgleap/postgis:17-3.5"


def app_for(c, proof) -> typer.Typer:
    app = typer.Typer()
    groups = {name: typer.Typer() for name in GROUPS}
    for name, group in groups.items():
        app.add_typer(group, name=name)
    cli_kube.register(groups, app, connect=lambda kubeconfig, context: c.kube, post_upgrade=c.hook,
                      data_proof=proof)  # fmt: skip
    return app


def differing() -> DataProof:
    changed = copy.deepcopy(FP)
    changed["tables"]["gis"]["public.t"] = [3, "abd"]
    return DataProof(
        lambda ctx: FP if ctx.pod.startswith(objects.job_name("gis", "serve-old")) else changed,
        lambda a, b: [] if a == b else ["table gis.public.t: rows or content differ"],
    )


def test_link_exit_4_names_resume_accept_fingerprint_which_moves_forward(monkeypatch) -> None:
    monkeypatch.setattr(cli_kube, "load_scripts", lambda folder=None, required=True: {"collect.sh": "", "upgrade.sh": "", "lib.sh": ""})  # fmt: skip
    c = make_cluster("official-plain")
    serving(c)
    app = app_for(c, differing())
    result = runner.invoke(app, ["upgrade", "sts", "gis", "-n", "geo", "--to", TARGET, "--yes"])
    assert isinstance(result.exception, VerificationFailed), result.output
    hint = result.exception.hint
    assert "rollback is no longer possible" in hint
    assert "`pgleap resume sts gis -n geo --accept fingerprint`" in hint
    assert c.sts()["spec"]["replicas"] == 0
    bad = runner.invoke(app, ["resume", "sts", "gis", "-n", "geo", "--yes", "--accept", "health"])
    assert bad.exit_code == 2 and c.sts()["spec"]["replicas"] == 0
    result = runner.invoke(
        app, ["resume", "sts", "gis", "-n", "geo", "--yes", "--accept", "fingerprint", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["phase"] == "done"
    assert any(n.startswith("accepted") and "gis.public.t" in n for n in out["notes"])
    assert c.image() == TARGET


def test_accept_takes_fingerprint_or_health_on_both_runtimes() -> None:
    from toolkit.cli.app import app

    for runtime in (["docker", "--container", "x"], ["sts", "gis"]):
        result = runner.invoke(app, ["resume", *runtime, "--accept", "everything"])
        assert result.exit_code == 2, result.output
        assert "fingerprint or health" in result.output


def test_no_verify_runs_no_fingerprint_job_and_says_so(monkeypatch) -> None:
    monkeypatch.setattr(cli_kube, "load_scripts", lambda folder=None, required=True: {"collect.sh": "", "upgrade.sh": "", "lib.sh": ""})  # fmt: skip
    c = make_cluster("official-plain")
    serving(c)
    app = app_for(c, differing())  # a proof that would fail: --no-verify never runs it
    result = runner.invoke(
        app, ["upgrade", "sts", "gis", "-n", "geo", "--to", TARGET, "--yes", "--no-verify", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["phase"] == "done" and any(n.startswith("--no-verify:") for n in out["notes"])
    jobs = [x.name for x in c.fake.writes_for_test() if x.verb == "create" and x.resource == "jobs"]
    assert jobs == [objects.job_name("gis", "upgrade")]


def test_exit_4_after_the_extension_updates_names_the_way_forward_too(monkeypatch) -> None:
    """An exit 4 in `proved` (phase compared recorded) gets the same hint as one in `compared`."""
    from tests.kube.test_fingerprint_kube import _proving

    monkeypatch.setattr(cli_kube, "load_scripts", lambda folder=None, required=True: {"collect.sh": "", "upgrade.sh": "", "lib.sh": ""})  # fmt: skip
    c = make_cluster("official-plain")
    serving(c)
    _proving(c, corrupt=True)
    result = runner.invoke(
        app_for(c, c.runtime.proof), ["upgrade", "sts", "gis", "-n", "geo", "--to", TARGET, "--yes"]
    )
    assert isinstance(result.exception, VerificationFailed), result.output
    assert "after the extension updates" in result.exception.message
    assert "`pgleap resume sts gis -n geo --accept fingerprint`" in result.exception.hint
    assert c.sts()["spec"]["replicas"] == 0
