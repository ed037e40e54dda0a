"""One CLI model on Kubernetes: readable help (metavars, not `<str>`), `kubectl pgleap` in the usage,
the same option names as Docker, kubectl-like credential errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app

runner = CliRunner()
KUBE_COMMANDS = [
    ["inspect", "sts"],
    ["plan", "sts"],
    ["upgrade", "sts"],
    ["status", "sts"],
    ["resume", "sts"],
    ["rollback", "sts"],
    ["finalize", "sts"],
    ["rehearse", "sts"],
    ["render"],
]
PLUGIN = "import sys; sys.argv[0] = 'kubectl-pgleap'; from toolkit.cli.app import main; main()"


def _help(args: list[str]) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("args", KUBE_COMMANDS, ids=" ".join)
def test_help_has_readable_metavars(args):
    text = _help(args)
    raw = re.findall(r"<str>|<bool>|<list|<int>|\bTEXT\b|\bBOOLEAN\b", text)
    assert not raw, f"{raw} in `{' '.join(args)} --help`:\n{text}"
    if args != ["render"]:
        assert "[OPTIONS] {NAME}" in text
        assert "NAMESPACE" in text


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (
            ["upgrade", "sts"],
            ["--superuser", "--initdb-args", "--mode", "--output", "--yes", "--downtime", "--no-verify"],
        ),
        (["plan", "sts"], ["--superuser", "--initdb-args", "--mode", "--output", "--downtime"]),
        (
            ["upgrade", "docker"],
            ["--superuser", "--initdb-args", "--mode", "--output", "--yes", "--downtime", "--no-verify"],
        ),
        (["plan", "docker"], ["--superuser", "--initdb-args", "--mode", "--output"]),
        (["resume", "docker"], ["--accept", "--output"]),
        (["resume", "sts"], ["--accept", "--output", "--yes"]),
        (["render"], ["--superuser", "--initdb-args", "--mode", "--output"]),
    ],
)
def test_shared_option_names(args, names):
    text = _help(args)
    for name in names:
        assert name in text, f"{name} missing from `{' '.join(args)} --help`"


def test_plugin_usage_reads_kubectl_pgleap():
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", PLUGIN, "status", "sts"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2
    assert "Usage: kubectl pgleap status sts [OPTIONS] {NAME}" in proc.stderr, proc.stderr
    assert "Try 'kubectl pgleap status sts --help'" in proc.stderr


MAIN = "from toolkit.cli.app import main; main()"
CONTEXTS = "contexts: [{name: a, context: {cluster: c, user: u}}]\n"
CLUSTERS = (
    "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\n"
)


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    full.update(env, COLUMNS="200", NO_COLOR="1")
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args], capture_output=True, text=True, env=full, timeout=60
    )


def _error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 5, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("what to do: "), lines
    assert "Service host/port" not in proc.stderr and "incluster" not in proc.stderr.lower()
    return lines


def test_credentials_missing_kubeconfig_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    lines = _error_lines(_run(["status", "sts", "db", "-n", "x"], KUBECONFIG=str(missing)))
    assert lines[0] == f"error: kubeconfig file not found: {missing} (KUBECONFIG)"
    lines = _error_lines(_run(["status", "sts", "db", "-n", "x", "--kubeconfig", str(missing)]))
    assert lines[0] == f"error: kubeconfig file not found: {missing} (--kubeconfig)"
    lines = _error_lines(_run(["status", "sts", "db", "-n", "x"], HOME=str(tmp_path), KUBECONFIG=""))
    assert lines[0].startswith(f"error: kubeconfig file not found: {tmp_path}/.kube/config")
    assert "not running inside a cluster" in lines[0]


def test_credentials_without_current_context(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("apiVersion: v1\nkind: Config\n" + CONTEXTS + CLUSTERS)
    lines = _error_lines(_run(["status", "sts", "db", "-n", "x"], KUBECONFIG=str(cfg)))
    assert lines == [
        f"error: no current context: current-context is not set in {cfg}",
        "what to do: pass --context NAME, or run `kubectl config use-context NAME`",
    ]
    lines = _error_lines(_run(["status", "sts", "db", "-n", "x", "--context", "zz"], KUBECONFIG=str(cfg)))
    assert lines[0] == f'error: context "zz" does not exist in {cfg}'


def test_credentials_loaded_with_a_context(tmp_path, monkeypatch):
    from toolkit.kube.api import Kube

    cfg = tmp_path / "config"
    cfg.write_text("apiVersion: v1\nkind: Config\ncurrent-context: a\n" + CONTEXTS + CLUSTERS)
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    assert Kube.connect().core is not None  # no request yet: only the credentials are loaded
    assert Kube.connect(None, "a").core is not None


@pytest.mark.parametrize("command", [["upgrade", "sts", "db", "--yes"], ["plan", "sts", "db"]])
def test_unknown_downtime_is_a_usage_error_before_any_call(command):
    from tests.kube.test_cli_kube import build_app

    bad = runner.invoke(build_app(None), [*command, "--to", "x", "--downtime", "fast"])  # None: no cluster
    assert bad.exit_code == 2


def test_render_refuses_downtime_minimal_and_names_the_command_that_shows_it(tmp_path):
    """Offline render has no live pod to pin the prepare Job to: it says which command shows it."""
    from tests.kube.test_cli_kube import build_app

    manifest = tmp_path / "sts.yaml"
    manifest.write_text("kind: StatefulSet\n")
    result = runner.invoke(
        build_app(None), ["render", "-f", str(manifest), "--to", "x", "--downtime", "minimal"]
    )
    assert result.exception.exit_code == 3, result.output
    assert "--downtime minimal is not available on render" in result.exception.message
    assert "plan sts --downtime minimal" in result.exception.message


def test_commands_are_importable_functions(capsys, monkeypatch):
    """Issue 15: a command is a module-level function; `register` only wires it into Typer."""
    import json

    from tests.kube.harness import make_cluster
    from toolkit.cli import kube_deps, kube_sts

    c = make_cluster("official-plain")
    monkeypatch.setattr(kube_deps, "_deps", [kube_deps.Deps(connect=lambda kubeconfig, context: c.kube)])
    kube_sts.status_sts("gis", namespace="geo", output="json")
    data = json.loads(capsys.readouterr().out)
    assert (data["statefulset"], data["operation"], data["rollback_possible"]) == ("gis", None, False)
