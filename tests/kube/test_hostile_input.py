"""Hostile and malformed StatefulSets through `pgleap render`: every field pgleap reads from the
StatefulSet either refuses with one message or renders as plain data (never a new key), and bad
input to `render` is an `error:` + `what to do:` with exit 2 or 3, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.conftest import load_docs
from tests.kube.test_cli_kube import build_app, runner
from toolkit.errors import PgleapError

TARGET = "pgleap/postgis:17-3.5"
# A value that, inserted raw into a YAML template, adds keys to the Job's pod spec.
INJECT = 'x"\n      hostPID: true\n      serviceAccountName: admin\n      y: "'
INT_INJECT = "999\n      hostPID: true\n      serviceAccountName: admin"


def _pod(sts: dict[str, Any]) -> dict[str, Any]:
    return sts["spec"]["template"]["spec"]


def _pg(sts: dict[str, Any]) -> dict[str, Any]:
    return _pod(sts)["containers"][0]


def _env(sts: dict[str, Any], name: str, value: Any) -> None:
    env = _pg(sts)["env"]
    env[:] = [e for e in env if e["name"] != name] + [{"name": name, "value": value}]


# Every field of the StatefulSet that pgleap reads and that reaches a rendered object.
HOSTILE: dict[str, Callable[[dict[str, Any]], None]] = {
    "fsGroup": lambda s: _pod(s).setdefault("securityContext", {}).update(fsGroup=INT_INJECT),
    "runAsUser": lambda s: _pod(s).setdefault("securityContext", {}).update(runAsUser=INT_INJECT),
    "runAsGroup": lambda s: _pod(s).setdefault("securityContext", {}).update(runAsGroup=INT_INJECT),
    "container runAsUser": lambda s: _pg(s).setdefault("securityContext", {}).update(runAsUser="999"),
    "fsGroup true": lambda s: _pod(s).setdefault("securityContext", {}).update(fsGroup=True),
    "fsGroupChangePolicy": lambda s: (
        _pod(s).setdefault("securityContext", {}).update(fsGroupChangePolicy=INJECT)
    ),
    "nodeSelector": lambda s: _pod(s).update(nodeSelector={"zone": INJECT}),
    "tolerations": lambda s: _pod(s).update(tolerations=[{"key": INJECT, "operator": "Exists"}]),
    "imagePullSecrets": lambda s: _pod(s).update(imagePullSecrets=[{"name": INJECT}]),
    "priorityClassName": lambda s: _pod(s).update(priorityClassName=INJECT),
    "affinity": lambda s: _pod(s).update(
        affinity={
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "podAffinityTerm": {"topologyKey": INJECT}}
                ]
            }
        }
    ),
    "resources": lambda s: _pg(s).update(resources={"limits": {"memory": INJECT}}),
    "POSTGRES_USER": lambda s: _env(s, "POSTGRES_USER", INJECT),
    "POSTGRES_DB": lambda s: _env(s, "POSTGRES_DB", INJECT),
    "PGDATA": lambda s: _env(s, "PGDATA", "/var/lib/postgresql/data/$(id)"),
    "PGDATA newline": lambda s: _env(s, "PGDATA", "/var/lib/postgresql/data\nhostPID: true"),
    "mountPath": lambda s: _pg(s)["volumeMounts"][0].update(mountPath="/var/lib/postgresql/data`id`"),
    "subPath": lambda s: _pg(s)["volumeMounts"][0].update(subPath=INJECT),
    "claim name": lambda s: (
        s["spec"]["volumeClaimTemplates"][0]["metadata"].update(name=INJECT),
        _pg(s)["volumeMounts"][0].update(name=INJECT),
    ),
    "container name": lambda s: _pg(s).update(name=INJECT),
    "image": lambda s: _pg(s).update(image="pgleap/postgis:13-3.1" + INJECT),
    "name": lambda s: s["metadata"].update(name="gis\nspec: {replicas: 5}"),
    "namespace": lambda s: s["metadata"].update(namespace="geo\nspec: {replicas: 5}"),
    "labels": lambda s: s["spec"]["template"]["metadata"]["labels"].update(extra=INJECT),
    "annotations": lambda s: s["metadata"].update(annotations={"note": INJECT}),
    "terminationGracePeriodSeconds": lambda s: _pod(s).update(terminationGracePeriodSeconds="60"),
}


def _write(tmp_path: Path, change: Callable[[dict[str, Any]], None] | None = None) -> Path:
    docs = load_docs("official-plain")
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    if change:
        change(sts)
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump_all(docs, allow_unicode=True))
    return path


def _render(args: list[str], input: str | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, message) as `toolkit.cli.app.main` would report it."""
    result = runner.invoke(build_app(), ["render", *args], input=input)
    exc = result.exception
    if isinstance(exc, PgleapError):
        return exc.exit_code, result.stdout, f"error: {exc.message}\nwhat to do: {exc.hint}"
    assert exc is None or isinstance(exc, SystemExit), f"traceback: {exc!r}"
    return result.exit_code, result.stdout, result.output


def _keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


def _strings(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return {s for v in obj.values() for s in _strings(v)}
    if isinstance(obj, list):
        return {s for v in obj for s in _strings(v)}
    return {obj} if isinstance(obj, str) else set()


@pytest.mark.parametrize("field", sorted(HOSTILE))
def test_hostile_value_refuses_or_stays_data(field: str, tmp_path: Path) -> None:
    code, out, message = _render(["-f", str(_write(tmp_path, HOSTILE[field])), "--to", TARGET])
    if code != 0:
        assert code == 3, message
        assert "error:" in message and "what to do:" in message
        return
    docs = list(yaml.safe_load_all(out))
    assert {"hostPID", "serviceAccountName"}.isdisjoint(_keys(docs)), field
    job = next(d for d in docs if d["kind"] == "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert all(isinstance(pod["securityContext"].get(k, 0), int) for k in ("runAsUser", "fsGroup"))
    assert not out.startswith("#") or "\n" not in out.splitlines()[0]
    if field in ("fsGroupChangePolicy", "nodeSelector", "tolerations", "priorityClassName", "resources"):
        assert INJECT in _strings(job), f"{field}: the value did not reach the Job intact"


def test_integer_fields_refuse_strings(tmp_path: Path) -> None:
    """The finding itself: a YAML-carrying fsGroup is refused, naming the field."""
    code, _, message = _render(["-f", str(_write(tmp_path, HOSTILE["fsGroup"])), "--to", TARGET])
    assert code == 3 and "spec.template.spec.securityContext.fsGroup must be an integer" in message


def test_non_bmp_characters_render_as_valid_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, lambda s: _env(s, "POSTGRES_USER", "gis😀"))
    code, out, message = _render(["-f", str(path), "--to", TARGET])
    assert code == 0, message
    job = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Job")
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGLEAP_SUPERUSER"] == "gis😀"


@pytest.mark.parametrize(
    "value", ["gis😀", "a\x85b\u2028c\u2029d\x7fe\x9f", 'q"\\\n\t', ["\U0001d53e", {"k": "ü"}]]
)
def test_tojson_is_yaml(value: Any) -> None:
    from toolkit.kube.render import yaml_json

    assert yaml.safe_load(f"v: {yaml_json(value)}") == {"v": value}


def _sts_text(change: Callable[[dict[str, Any]], None]) -> str:
    docs = load_docs("official-plain")
    change(next(d for d in docs if d["kind"] == "StatefulSet"))
    return yaml.safe_dump_all(docs)


BAD_INPUTS: dict[str, tuple[list[str], str | None, int]] = {
    "missing file": (["-f", "/nonexistent/pgleap.yaml"], None, 2),
    "a directory": (["-f", "/"], None, 2),
    "-o text": (["-f", "-", "-o", "text"], "FILE", 2),
    "namespace with newline": (["-f", "-", "-n", "geo\nspec: {replicas: 5}\nx"], "FILE", 2),
    "--sts not a name": (["-f", "-", "--sts", "Gis!"], "FILE", 2),
    "metadata null": (["-f", "-"], "kind: StatefulSet\nmetadata: null\n", 3),
    "spec null": (["-f", "-"], _sts_text(lambda s: s.update(spec=None)), 3),
    "containers a string": (["-f", "-"], _sts_text(lambda s: _pod(s).update(containers="x")), 3),
    "replicas a string": (["-f", "-"], _sts_text(lambda s: s["spec"].update(replicas="1")), 3),
    "no image": (["-f", "-"], _sts_text(lambda s: _pg(s).pop("image")), 3),
    "mount without name": (["-f", "-"], _sts_text(lambda s: _pg(s)["volumeMounts"][0].pop("name")), 3),
    "integer PGDATA": (["-f", "-"], _sts_text(lambda s: _env(s, "PGDATA", 5)), 3),
    "env a mapping": (["-f", "-"], _sts_text(lambda s: _pg(s).update(env={"PGDATA": "/x"})), 3),
    "List with bad items": (["-f", "-"], "kind: List\nitems: x\n", 3),
    "namespace in file": (["-f", "-"], _sts_text(lambda s: s["metadata"].update(namespace="Geo")), 3),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_render_bad_input_is_one_message(case: str, tmp_path: Path) -> None:
    args, text, want = BAD_INPUTS[case]
    if text == "FILE":
        text = yaml.safe_dump_all(load_docs("official-plain"))
    if case == "a directory":
        args = ["-f", str(tmp_path)]
    code, out, message = _render([*args, "--to", TARGET], input=text)
    assert code == want, message
    assert out == "" or code == 2


def test_main_prints_error_and_hint_without_traceback(tmp_path: Path) -> None:
    """Through the console entry point: one `error:` and one `what to do:` line, exit 2."""
    code = "import sys; from toolkit.cli.app import main; sys.argv[0] = 'pgleap'; main()"
    folder = tmp_path / "gis[" / "old]"  # user text with rich markup in it: `…/gis[/old]`
    folder.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-c", code, "render", "-f", str(folder), "--to", TARGET],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"error: cannot read {folder}: Is a directory", lines
    assert lines[1].startswith("what to do:") and len(lines) == 2, lines
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("path", ["/data/$(id)", "/data/`id`", "/data/a\nb", "/data/${HOME}"])
def test_shell_characters_in_pgdata_refused_before_any_change(path: str, tmp_path: Path) -> None:
    """pg_upgrade runs its commands through a shell: such a PGDATA would run a command."""
    code, out, message = _render(
        ["-f", str(_write(tmp_path, lambda s: _env(s, "PGDATA", path))), "--to", TARGET]
    )
    assert code == 3 and "PGDATA" in message and out == "", message


def test_markup_in_user_text_is_printed_as_is(tmp_path: Path) -> None:
    """An annotation like `created by terraform [/modules/db]` is text, not rich markup."""
    note = "created by terraform [/modules/db] [bold]x"
    path = _write(tmp_path, lambda s: s["metadata"].update(annotations={"note": note}))
    result = runner.invoke(build_app(), ["render", "-f", str(path), "--to", TARGET])
    assert result.exit_code == 0, result.output
    assert f"note={note}" in result.output
