"""`plan sts -o yaml` is what a user commits: the same bytes for the same live StatefulSet and flags
(no random run id) and render's header (order of application, what is temporary)."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from tests.kube.harness import make_cluster
from tests.kube.test_cli_kube import build_app, scripts  # noqa: F401  (the autouse scripts fixture)

runner = CliRunner()
PLAN = ["plan", "sts", "gis", "-n", "geo", "--to", "pgleap/postgis:17-3.5", "-o", "yaml"]


def test_plan_yaml_is_deterministic_with_renders_header() -> None:
    c = make_cluster("official-plain")
    app = build_app(c)
    first, again = runner.invoke(app, PLAN), runner.invoke(app, PLAN)
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout
    assert first.stdout.startswith("# pgleap plan sts: geo/gis ")
    assert "# Order of application, as `pgleap upgrade sts gis` applies it:" in first.stdout
    assert "# commit this one: replaces StatefulSet gis" in first.stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(first.stdout)]
    assert "StatefulSet" in kinds and "Job" in kinds
    other = runner.invoke(app, [*PLAN, "--mode", "copy"])
    assert other.exit_code == 0 and other.stdout != first.stdout  # other inputs, another run id
