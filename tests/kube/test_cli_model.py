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
        (["upgrade", "sts"], ["--superuser", "--initdb-args", "--mode", "--output", "--yes"]),
        (["upgrade", "docker"], ["--mode", "--output", "--yes", "--downtime", "--no-verify"]),
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
