"""The Kubernetes commands through Typer's CliRunner, on a local app built with `register`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from tests.kube.conftest import FIXTURES
from tests.kube.harness import SCRIPTS, Cluster, make_cluster
from tests.kube.validation import validate_strict
from toolkit.cli import kube as cli_kube
from toolkit.cli import options as cli_options
from toolkit.errors import EnvironmentProblem, Refused
from toolkit.kube.api import Forbidden

GROUPS = ("inspect", "plan", "upgrade", "status", "resume", "rollback", "finalize", "cleanup", "rehearse")
runner = CliRunner()


def build_app(cluster: Cluster | None = None, hook=None, rehearsal_hooks=None) -> typer.Typer:
    app = typer.Typer()
    groups = {name: typer.Typer() for name in GROUPS}
    for name, group in groups.items():
        app.add_typer(group, name=name)

    def connect(kubeconfig, context):
        if cluster is None:
            raise AssertionError("this command must not touch a cluster")
        return cluster.kube

    cli_kube.register(groups, app, connect=connect, post_upgrade=hook, rehearsal_hooks=rehearsal_hooks)
    return app


@pytest.fixture(autouse=True)
def scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_kube, "load_scripts", lambda folder=None, required=True: dict(SCRIPTS))


def test_render_offline_from_file() -> None:
    result = runner.invoke(
        build_app(),
        [
            "render",
            "-f",
            str(FIXTURES / "official-plain.yaml"),
            "--to",
            "pgleap/postgis:18-3.x",
            "-o",
            "yaml",
        ],
    )
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job", "StatefulSet"]  # no run state: pgleap's own
    sts = docs[-1]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "pgleap/postgis:18-3.x"
    assert c["volumeMounts"][0]["mountPath"] == "/var/lib/postgresql"
    job_env = {e["name"]: e["value"] for e in docs[1]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (job_env["PGLEAP_OLD_REL"], job_env["PGLEAP_NEW_REL"], job_env["PGLEAP_SUPERUSER"]) == (
        "",
        "18/docker",
        "gis",
    )


def test_render_from_stdin_helm_template_with_owner_warning() -> None:
    text = (FIXTURES / "bitnami.yaml").read_text()
    result = runner.invoke(
        build_app(),
        [
            "render",
            "-f",
            "-",
            "--to",
            "bitnamilegacy/postgresql:17.2.0-debian-12-r8",
            "-o",
            "json",
            "--snapshot",
        ],
        input=text,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stdout holds only JSON: one List, as `kubectl get -o json`
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "List")
    assert [o["kind"] for o in doc["items"]] == ["VolumeSnapshot", "ConfigMap", "Job", "StatefulSet"]
    assert "Helm release 'pg'" in result.stderr


def test_render_needs_sts_when_several() -> None:
    text = (FIXTURES / "argo.yaml").read_text() + "\n---\n" + (FIXTURES / "flux.yaml").read_text()
    result = runner.invoke(build_app(), ["render", "-f", "-", "--to", "postgis/postgis:18-3.6"], input=text)
    assert isinstance(result.exception, Refused) and "tiles, osm" in result.exception.message
    result = runner.invoke(
        build_app(), ["render", "-f", "-", "--to", "postgis/postgis:18-3.6", "--sts", "osm"], input=text
    )
    assert result.exit_code == 0, result.output
    assert "Flux Kustomization 'apps'" in result.stderr


def test_render_refuses_an_older_major() -> None:
    result = runner.invoke(
        build_app(), ["render", "-f", str(FIXTURES / "official-plain.yaml"), "--to", "pgleap/postgis:13-3.1"]
    )
    assert isinstance(result.exception, Refused)
    assert "already runs PostgreSQL 13" in result.exception.message


def test_render_refuses_a_secret_in_env(tmp_path: Path) -> None:
    result = runner.invoke(
        build_app(),
        [
            "render",
            "-f",
            str(FIXTURES / "official-plain.yaml"),
            "--to",
            "pgleap/postgis:17-3.5",
            "--set-env",
            "PGPASSWORD=x",
        ],
    )
    assert result.exception is not None and "secret" in str(result.exception)


def test_inspect_json() -> None:
    c = make_cluster("bitnami")
    result = runner.invoke(build_app(c), ["inspect", "sts", "pg-postgresql", "-n", "db", "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["data_pvc"] == "data-pg-postgresql-0"
    assert data["image"]["major"] == 16 and data["uid"] == 1001
    assert data["snapshot_classes"] == ["ebs-snapclass"]
    assert c.fake.writes_for_test() == []


def test_inspect_text() -> None:
    c = make_cluster("official-plain")
    result = runner.invoke(build_app(c), ["inspect", "sts", "gis", "-n", "geo"])
    assert result.exit_code == 0, result.output
    assert "pgleap/postgis:13-3.1" in result.stdout and "data-gis-0" in result.stdout


def test_plan_yaml_is_read_only() -> None:
    c = make_cluster("official-plain")
    result = runner.invoke(
        build_app(c), ["plan", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5", "-o", "yaml"]
    )
    assert result.exit_code == 0, result.output
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds == ["ConfigMap", "ConfigMap", "Job", "StatefulSet"]
    assert c.fake.writes_for_test() == []


def test_plan_refused_for_argo_without_flag() -> None:
    c = make_cluster("argo")
    args = ["plan", "sts", "tiles", "-n", "geo", "--to", "postgis/postgis:17-3.5"]
    result = runner.invoke(build_app(c), args)
    assert isinstance(result.exception, Refused)
    assert runner.invoke(build_app(c), [*args, "--allow-argocd"]).exit_code == 0


def test_upgrade_status_finalize() -> None:
    c = make_cluster("official-plain")
    app = build_app(c, hook=c.hook)
    result = runner.invoke(
        app, ["upgrade", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5", "--yes", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["phase"] == "done"
    # the phases in the one progress model's rows, as Docker's `-o json` prints them
    assert [p["name"] for p in data["phases"]] == list(data["seconds"])
    assert all(set(p) == {"name", "seconds", "detail", "in_downtime"} for p in data["phases"])
    assert {p["name"] for p in data["phases"] if p["in_downtime"]} >= {"stopped", "upgraded", "started"}
    assert len(c.hook_calls) == 1
    assert "[upgrade]" in result.stderr  # Job logs streamed to stderr
    status = json.loads(runner.invoke(app, ["status", "sts", "gis", "-n", "geo", "-o", "json"]).stdout)
    assert (status["phase"], status["ready"]) == ("done", True)
    result = runner.invoke(app, ["finalize", "sts", "gis", "-n", "geo", "--yes"])
    assert result.exit_code == 0, result.output
    assert "finalized" in result.stdout
    assert c.image() == "pgleap/postgis:17-3.5"


def test_upgrade_asks_first(monkeypatch) -> None:
    c = make_cluster("official-plain")
    monkeypatch.setattr(cli_options, "interactive", lambda: True)
    result = runner.invoke(
        build_app(c), ["upgrade", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5"], input="n\n"
    )
    assert "upgrade geo/gis: stop it and upgrade it to pgleap/postgis:17-3.5" in result.stderr
    assert isinstance(result.exception, Refused) and result.exception.exit_code == 3
    assert c.fake.writes_for_test() == []


@pytest.mark.parametrize(
    "args",
    [
        ["upgrade", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5"],
        ["rollback", "sts", "gis", "-n", "geo"],
        ["finalize", "sts", "gis", "-n", "geo"],
        ["resume", "sts", "gis", "-n", "geo"],
        ["rehearse", "sts", "gis", "-n", "geo", "--remove"],
    ],
    ids=lambda a: a[0],
)
def test_without_a_terminal_and_without_yes_is_refused(args) -> None:
    c = make_cluster("official-plain")
    result = runner.invoke(build_app(c), args)
    assert isinstance(result.exception, Refused) and result.exception.exit_code == 3, result.output
    assert "not confirmed (no terminal to ask on); nothing was changed" in str(result.exception)
    assert c.fake.writes_for_test() == []


def test_upgrade_dry_run_writes_nothing() -> None:
    c = make_cluster("official-plain")
    result = runner.invoke(
        build_app(c), ["upgrade", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "StatefulSet" in [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert c.fake.writes_for_test() == []


def test_resume_and_rollback_commands() -> None:
    c = make_cluster("official-plain")
    c.fake.job_results["pgleap-gis-upgrade"] = "Failed"
    app = build_app(c)
    result = runner.invoke(
        app, ["upgrade", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5", "--yes"]
    )
    assert "failed" in str(result.exception)
    result = runner.invoke(app, ["rollback", "sts", "gis", "-n", "geo", "--yes", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["phase"] == "rolled-back"
    result = runner.invoke(app, ["resume", "sts", "gis", "-n", "geo", "--yes", "-o", "json"])
    assert json.loads(result.stdout)["phase"] == "rolled-back"


@pytest.mark.parametrize(("flags", "replicas"), [([], 1), (["--no-auto-restore"], 0)])
def test_a_failed_upgrade_job_restores_unless_asked_not_to(flags, replicas) -> None:
    c = make_cluster("official-plain")
    c.fake.job_results["pgleap-gis-upgrade"] = "Failed"
    result = runner.invoke(
        build_app(c), ["upgrade", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5", "--yes", *flags]
    )
    assert result.exit_code != 0 and "failed" in str(result.exception)
    assert c.fake.get_for_test("StatefulSet", "geo", "gis")["spec"]["replicas"] == replicas
    assert ("serves again" in str(getattr(result.exception, "message", ""))) == (replicas == 1)


def test_unknown_statefulset_message() -> None:
    c = make_cluster("official-plain")
    result = runner.invoke(build_app(c), ["inspect", "sts", "gsi", "-n", "geo"])
    assert isinstance(result.exception, Refused)
    assert result.exception.message == "StatefulSet gsi not found in namespace geo"


def test_forbidden_names_verb_and_rbac_file() -> None:
    c = make_cluster("official-plain")
    c.fake.error_hook = lambda call: (
        ApiException(status=403, reason="Forbidden") if call.resource == "services" else None
    )
    result = runner.invoke(build_app(c), ["inspect", "sts", "gis", "-n", "geo"])
    assert isinstance(result.exception, Forbidden)
    assert "'list' on services in namespace geo" in result.exception.message
    assert "manifests/rbac.yaml" in result.exception.hint


def test_bad_output_flag() -> None:
    result = runner.invoke(
        build_app(make_cluster("official-plain")), ["status", "sts", "gis", "-n", "geo", "-o", "xml"]
    )
    assert result.exit_code == 2


def test_load_scripts_reads_any_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()
    (tmp_path / "collect.sh").write_text("a")
    (tmp_path / "upgrade.sh").write_text("b")
    (tmp_path / "extra.sh").write_text("c")
    assert cli_kube.load_scripts(tmp_path) == {"collect.sh": "a", "extra.sh": "c", "upgrade.sh": "b"}
    (tmp_path / "upgrade.sh").unlink()
    with pytest.raises(EnvironmentProblem, match=r"upgrade\.sh"):
        cli_kube.load_scripts(tmp_path)
    assert cli_kube.load_scripts(tmp_path, required=False) == {"collect.sh": "a", "extra.sh": "c"}


def test_rehearse_go_json_then_kept_then_removed() -> None:
    from tests.kube.test_rehearsal import Hooks, tick

    c = make_cluster("official-plain")
    tick(c)
    app = build_app(c, rehearsal_hooks=lambda: Hooks().bundle())
    args = ["rehearse", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5"]
    result = runner.invoke(app, [*args, "--keep", "-o", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["verdict"] == "go" and data["predicted_downtime_seconds"] > 0
    assert data["kept"]["remove"] == "pgleap rehearse sts gis -n geo --remove"
    text = runner.invoke(app, args)  # a kept rehearsal blocks a new one: no-go, exit 3
    assert text.exit_code == 3
    assert "NO-GO" in text.stdout and "--remove" in text.stdout
    removed = runner.invoke(app, ["rehearse", "sts", "gis", "-n", "geo", "--remove", "--yes", "-o", "json"])
    assert removed.exit_code == 0 and "StatefulSet gis-rehearsal" in json.loads(removed.stdout)["removed"]
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "verdict: GO" in again.stdout and "predicted downtime of the real run" in again.stdout


def test_rehearse_needs_a_target() -> None:
    c = make_cluster("official-plain")
    result = runner.invoke(build_app(c), ["rehearse", "sts", "gis", "-n", "geo"])
    assert result.exit_code == 2 and "--to" in result.output


def test_rehearse_dry_run_prints_the_objects_and_writes_nothing() -> None:
    c = make_cluster("official-plain")
    result = runner.invoke(
        build_app(c), ["rehearse", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "ConfigMap", "Job", "StatefulSet"]
    env = {e["name"]: e.get("value") for e in docs[2]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGLEAP_SOURCE_HOST"] == "gis-0.gis.geo.svc"
    for doc in docs:
        validate_strict(doc)
    assert c.fake.writes_for_test() == []


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_every_sts_command_speaks_json_and_yaml(fmt) -> None:
    """Issue 14's output contract on the Kubernetes side, against the recording fake."""
    from tests.kube.test_rehearsal import Hooks, tick

    def parsed(args: list[str], app) -> object:
        result = runner.invoke(app, [*args, "-o", fmt])
        assert result.exit_code == 0, (args, result.output)
        if fmt == "json":
            data = json.loads(result.stdout)
        else:  # objects (plan) are a multi-document stream, as kubectl prints them
            docs = list(yaml.safe_load_all(result.stdout))
            data = docs[0] if len(docs) == 1 else docs
        assert data, (args, result.stdout)
        return data

    sts, to = ["sts", "gis", "-n", "geo"], ["--to", "pgleap/postgis:17-3.5"]
    c = make_cluster("official-plain")
    tick(c)
    app = build_app(c, hook=c.hook, rehearsal_hooks=lambda: Hooks().bundle())
    assert parsed(["inspect", *sts], app)
    assert parsed(["plan", *sts, *to], app)
    assert parsed(["rehearse", *sts, *to, "--keep"], app)["verdict"] == "go"
    assert parsed(["rehearse", *sts, "--remove", "--yes"], app)["removed"]
    assert parsed(["upgrade", *sts, *to, "--yes"], app)["phase"] == "done"
    assert parsed(["status", *sts], app)["phase"] == "done"
    assert parsed(["finalize", *sts, "--yes"], app)
    failed = make_cluster("official-plain")
    failed.fake.job_results["pgleap-gis-upgrade"] = "Failed"
    app = build_app(failed)
    runner.invoke(app, ["upgrade", *sts, *to, "--yes"])
    assert parsed(["rollback", *sts, "--yes"], app)["phase"] == "rolled-back"
    assert parsed(["resume", *sts, "--yes"], app)["phase"] == "rolled-back"
    bad = runner.invoke(app, ["status", *sts, "-o", "table"])
    assert bad.exit_code == 2 and "use text, json or yaml" in bad.output


def test_rollback_after_the_new_cluster_ran_needs_yes() -> None:
    """A copy rollback drops the writes made on the new cluster: refused without --yes (no tty here)."""
    c = make_cluster("official-plain")
    app = build_app(c, hook=c.hook)
    up = ["upgrade", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5", "--mode", "copy", "--yes"]
    assert runner.invoke(app, up).exit_code == 0
    result = runner.invoke(app, ["rollback", "sts", "gis", "-n", "geo"], input="y\n")
    assert isinstance(result.exception, Refused) and "--yes" in result.exception.hint
    assert c.image() == "pgleap/postgis:17-3.5"
    result = runner.invoke(app, ["rollback", "sts", "gis", "-n", "geo", "--yes", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["phase"] == "rolled-back" and c.image() == "pgleap/postgis:13-3.1"


@pytest.mark.parametrize("verb", ["plan", "upgrade"])
def test_strategy_logical_is_refused_on_kubernetes_before_any_cluster_call(verb) -> None:
    """Docker-only for now: never a silent in-place upgrade (build_app() without a cluster fails on any call)."""
    args = [verb, "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5", "--strategy", "logical"]
    result = runner.invoke(build_app(), args)
    assert isinstance(result.exception, Refused) and result.exception.exit_code == 3, result.output
    assert "Docker-only" in result.exception.message
    assert "upgrade docker" in result.exception.hint and "in place" in result.exception.hint
    bad = runner.invoke(build_app(), [verb, "sts", "gis", "--to", "x", "--strategy", "blue"])
    assert bad.exit_code == 2
