"""The CLI's shared rules without Docker: usage errors (exit 2) before anything is asked, -v anywhere,
the rehearsal's rebuilt indexes summarised, plurals."""

from __future__ import annotations

import logging

import pytest
from rich.console import Console
from typer.testing import CliRunner

from toolkit.cli.app import app, verbose_first
from toolkit.core.report import plural, print_findings

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["upgrade", "docker", "--container", "db", "--to", "x", "--mode", "fast"],
        ["upgrade", "docker", "--container", "db", "--to", "x", "--downtime", "fast"],
        ["upgrade", "docker", "--volume", "v", "--to", "x", "--yes"],
        ["plan", "docker", "--volume", "v", "--to", "x"],
        ["status", "docker", "--container", "db", "-o", "table"],
        ["inspect", "docker", "--container", "db", "-o", "yml"],
        ["finalize", "docker", "--container", "db", "-o", "table"],
    ],
)
def test_usage_errors_exit_2_before_docker_is_asked(monkeypatch, args):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # asking Docker would be exit 5
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_verbose_after_the_subcommand():
    assert verbose_first(["plan", "docker", "-c", "db", "-v"]) == ["--verbose", "plan", "docker", "-c", "db"]
    assert verbose_first(["-v", "plan", "docker"]) == ["-v", "plan", "docker"]
    assert verbose_first(["plan", "docker"]) == ["plan", "docker"]
    assert verbose_first(["render", "--", "-v"]) == ["render", "--", "-v"]


def test_rebuilt_indexes_summarised_unless_verbose():
    result = {"verdict": "go", "collation_indexes": [f"db: public.i{n}" for n in range(91)]}
    quiet = Console(record=True, width=200)
    logging.getLogger().setLevel(logging.WARNING)
    print_findings(quiet, result)
    assert quiet.export_text().strip() == "91 collation-dependent indexes rebuilt (-v lists them)"
    loud = Console(record=True, width=200)
    logging.getLogger().setLevel(logging.INFO)
    try:
        print_findings(loud, result)
    finally:
        logging.getLogger().setLevel(logging.WARNING)
    assert len(loud.export_text().splitlines()) == 91


def test_plural():
    assert (plural(1, "table"), plural(2, "table"), plural(0, "index", "indexes")) == (
        "1 table",
        "2 tables",
        "0 indexes",
    )
