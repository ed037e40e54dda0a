"""The CI recipes of docs/ci.md: each YAML parses, has the shape its platform needs, and every
pgleap command in them is one the CLI accepts (options parsed by the real command)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main
import yaml

from tests.kube.validation import validate_strict
from toolkit.cli.app import app

DOC = Path(__file__).resolve().parent.parent / "docs" / "ci.md"
TOP = {"rehearse", "upgrade", "plan", "resume", "rollback", "finalize", "status", "images"}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def _recipes() -> dict[str, dict]:
    docs = [yaml.safe_load(b) for b in _blocks("yaml")]
    return {
        "github": next(d for d in docs if "jobs" in d),
        "gitlab": next(d for d in docs if "pgleap-upgrade-gate" in d),
        "cronjob": next(d for d in docs if d.get("kind") == "CronJob"),
    }


def pgleap_args(command: str) -> list[str]:
    """The arguments given to pgleap in a shell line (after `pgleap` or the pgleap image)."""
    tokens = shlex.split(command.replace("\\\n", " "))
    start = next(i for i, t in enumerate(tokens) if t in TOP)
    args = tokens[start:]
    args[-1] = args[-1].rstrip(")")
    return args


def parse(args: list[str]) -> None:
    """Resolve the subcommand and parse its options with the real command (nothing runs)."""
    cmd = typer.main.get_command(app)
    while hasattr(cmd, "commands") and args and args[0] in cmd.commands:
        cmd, args = cmd.commands[args[0]], args[1:]
    assert not hasattr(cmd, "commands"), f"no such pgleap command: {args}"
    cmd.make_context("pgleap", list(args))  # raises on an unknown option or a missing one


def _commands() -> list[list[str]]:
    r = _recipes()
    lines = [s["run"] for s in r["github"]["jobs"]["pgleap"]["steps"] if "pgleap" in s.get("run", "").lower()]
    lines += [s for s in r["gitlab"]["pgleap-upgrade-gate"]["script"] if "rehearse" in s]
    lines += [line for b in _blocks("bash") for line in b.split("\n\n") if "rehearse" in line]
    out = [pgleap_args(line) for line in lines if "rehearse" in line]
    (container,) = r["cronjob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    out.append(container["args"])
    return out


def test_every_pgleap_command_in_the_recipes_parses():
    commands = _commands()
    assert len(commands) >= 5
    for args in commands:
        parse(args)


def test_parse_rejects_what_the_cli_rejects():
    with pytest.raises(Exception, match="No such option"):
        parse(["rehearse", "dump", "x.sql", "--from", "a", "--to", "b", "--no-such-flag"])
    with pytest.raises(AssertionError):
        parse(["rehearse", "nothing"])


def test_github_and_gitlab_recipes_have_their_platform_shape():
    r = _recipes()
    gh = r["github"]
    trigger = gh.get("on", gh.get(True))  # YAML 1.1 reads the key `on` as true
    assert trigger["pull_request"]["paths"]
    assert any("upload-artifact" in s.get("uses", "") for s in gh["jobs"]["pgleap"]["steps"])
    gl = r["gitlab"]["pgleap-upgrade-gate"]
    assert gl["services"] and gl["variables"]["DOCKER_HOST"].startswith("tcp://")
    assert gl["artifacts"]["reports"]["junit"] == "pgleap.xml"


def test_nightly_cronjob_is_valid_and_uses_the_role():
    cron = _recipes()["cronjob"]
    assert validate_strict(cron)
    rbac = list(yaml.safe_load_all((DOC.parent.parent / "manifests" / "rbac.yaml").read_text()))
    account = next(o for o in rbac if o and o["kind"] == "ServiceAccount")["metadata"]["name"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account
    assert pod["securityContext"]["runAsNonRoot"] is True
