"""Every command of both runtimes with `-o json` and `-o yaml`: stdout holds only data that parses
(or nothing, when the command fails: the error goes to stderr as one `error:` + one `what to do:`).

Kubernetes runs on the recording fake; Docker runs without an engine (DOCKER_HOST points nowhere),
so each Docker command ends in its refusal path. The command list comes from the app itself: a
new command without a case here fails `test_every_command_has_a_case`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.kube.harness import SCRIPTS, make_cluster
from tests.kube.test_cli_kube import build_app
from tests.kube.test_rehearsal import Hooks, tick
from toolkit.cli import kube as cli_kube
from toolkit.cli.app import app

runner = CliRunner()
FORMATS = ("json", "yaml")
C, TO = ["--container", "pgleap-no-such-container"], ["--to", "pgleap/postgis:17-3.5"]
STS = ["sts", "gis", "-n", "geo"]

# (verb, runtime) → arguments; a Docker command needs no engine to reach its refusal.
DOCKER = {
    ("inspect", "docker"): C,
    ("plan", "docker"): [*C, *TO],
    ("upgrade", "docker"): [*C, *TO, "--yes"],
    ("status", "docker"): C,
    ("resume", "docker"): C,
    ("rollback", "docker"): [*C, "--yes"],
    ("finalize", "docker"): [*C, "--yes"],
    ("cleanup", "docker"): [*C, "--yes"],
    ("rehearse", "docker"): [*C, *TO],
    ("rehearse", "dump"): ["{dump}", "--from", "pgleap/postgis:15-3.3", *TO],
}
# (verb, runtime) → (setup, arguments): setup prepares the fake cluster.
KUBE = {
    ("inspect", "sts"): ("fresh", STS),
    ("plan", "sts"): ("fresh", [*STS, *TO]),
    ("upgrade", "sts"): ("fresh", [*STS, *TO, "--yes"]),
    ("status", "sts"): ("upgraded", STS),
    ("resume", "sts"): ("rolled-back", [*STS, "--yes"]),
    ("rollback", "sts"): ("failed", [*STS, "--yes"]),
    ("finalize", "sts"): ("upgraded", [*STS, "--yes"]),
    ("cleanup", "sts"): ("rolled-back", [*STS, "--yes"]),
    ("rehearse", "sts"): ("fresh", [*STS, *TO]),
    ("render", None): ("fresh", ["-f", "tests/kube/fixtures/official-plain.yaml", *TO]),
}
NO_OUTPUT_OPTION = {("demo", None), ("images", "build")}  # demo prints a story; build is slow
OTHER = {("images", "list"): []}


def _commands() -> set[tuple[str, str | None]]:
    found = {(c.name, None) for c in app.registered_commands}
    for group in app.registered_groups:
        found |= {(group.name, c.name) for c in group.typer_instance.registered_commands}
    return found


def test_every_command_has_a_case():
    assert _commands() == set(DOCKER) | set(KUBE) | NO_OUTPUT_OPTION | set(OTHER)


def _parse(text: str, fmt: str):
    if fmt == "json":
        return json.loads(text)
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    return docs[0] if len(docs) == 1 else docs


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("command", sorted(DOCKER), ids=" ".join)
def test_docker_commands_print_data_or_only_an_error(command, fmt, tmp_path: Path):
    dump = tmp_path / "db.sql"
    dump.write_text("select 1;\n")
    args = [a.replace("{dump}", str(dump)) for a in DOCKER[command]]
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock", "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-c", "from toolkit.cli.app import main; main()", *command, *args, "-o", fmt],
        capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 5, (proc.returncode, proc.stderr)  # the engine does not answer
    if proc.stdout:  # a rehearsal's verdict is data even when it is no-go: whole, and parsable
        verdict = _parse(proc.stdout, fmt)
        assert (verdict["verdict"], verdict["exit_code"]) == ("no-go", 5), verdict
        return
    lines = proc.stderr.strip().splitlines()
    assert lines[-2].startswith("error: ") and lines[-1].startswith("what to do: "), lines


@pytest.mark.parametrize("fmt", FORMATS)
def test_images_list(fmt):
    result = runner.invoke(app, ["images", "list", "-o", fmt])
    assert result.exit_code == 0, result.output
    rows = _parse(result.stdout, fmt)
    assert rows and all(isinstance(r["postgresql"], int) for r in rows)


def _cluster(setup: str):
    c = make_cluster("official-plain")
    tick(c)
    app_ = build_app(c, hook=c.hook, rehearsal_hooks=lambda: Hooks().bundle())
    sts = STS
    if setup == "upgraded":
        assert runner.invoke(app_, ["upgrade", *sts, *TO, "--yes"]).exit_code == 0
    elif setup in ("failed", "rolled-back"):
        c.fake.job_results["pgleap-gis-upgrade"] = "Failed"
        runner.invoke(app_, ["upgrade", *sts, *TO, "--yes", "--no-auto-restore"])
        c.fake.job_results.pop("pgleap-gis-upgrade")
        if setup == "rolled-back":
            assert runner.invoke(app_, ["rollback", *sts, "--yes"]).exit_code == 0
    return c, app_


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("command", sorted(KUBE, key=str), ids=lambda c: " ".join(x for x in c if x))
def test_kube_commands_print_parsable_data(command, fmt, monkeypatch):
    monkeypatch.setattr(cli_kube, "load_scripts", lambda folder=None, required=True: dict(SCRIPTS))
    setup, args = KUBE[command]
    _, app_ = _cluster(setup)
    result = runner.invoke(app_, [command[0], *args, "-o", fmt])  # args start with `sts` (or render's)
    assert result.exit_code == 0, result.output
    data = _parse(result.stdout, fmt)
    assert data, result.stdout
    if command == ("render", None) and fmt == "json":
        assert data["kind"] == "List"
    if command[0] in ("upgrade", "resume", "rollback", "finalize", "cleanup"):
        assert isinstance(data, dict) and data["operation"] and data["phase"]
