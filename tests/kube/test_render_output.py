"""`pgleap render`'s output contract: byte-identical for the same inputs, a header saying the order
and what is temporary, no run-state ConfigMap unless asked, `-o json` a List, scripts readable,
advice naming only flags render takes (or the live command's, in backticks)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.kube.conftest import FIXTURES
from tests.kube.harness import SCRIPTS
from tests.kube.test_cli_kube import build_app, runner
from toolkit.cli import kube as cli_kube

TO = "pgleap/postgis:18-3.x"
SCRIPT = "#!/bin/bash\nset -euo pipefail\nif true; then\n\techo 'tab-indented'  # shellcheck style\nfi\n"


@pytest.fixture(autouse=True)
def scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        cli_kube, "load_scripts", lambda folder=None, required=True: {**SCRIPTS, "upgrade.sh": SCRIPT}
    )


def _render(*args: str, fixture: str = "ordinals.yaml"):
    result = runner.invoke(build_app(), ["render", "-f", str(FIXTURES / fixture), "--to", TO, *args])
    assert result.exit_code == 0, result.output
    return result


def test_same_inputs_same_bytes_other_inputs_other_run_id():
    first, second = _render("--snapshot").stdout, _render("--snapshot").stdout
    assert first == second
    other = _render("--snapshot", "--mode", "copy").stdout
    run_id = re.compile(r"run id ([0-9a-f]{12})")
    assert run_id.search(first)[1] != run_id.search(other)[1]
    assert "pgleap-gis-release-1" in _render("--snapshot", "--run-id", "release-1").stdout
    bad = runner.invoke(
        build_app(), ["render", "-f", str(FIXTURES / "ordinals.yaml"), "--to", TO, "--run-id", "A/B"]
    )
    assert bad.exit_code == 2


def test_header_names_the_order_and_what_is_temporary():
    text = _render("--snapshot").stdout
    header = [line for line in text.splitlines() if line.startswith("# ")][:12]
    docs = [d for d in yaml.safe_load_all(text) if d]
    listed = [re.match(r"#\s+[1-9]\d*\. (\S+) (\S+)", line) for line in header]
    order = [(m[1], m[2]) for m in listed if m]
    assert order == [(d["kind"], d["metadata"]["name"]) for d in docs]  # the header lists the stream's order
    roles = {m[2]: line for m, line in zip(listed, header, strict=True) if m}
    assert "temporary" in roles["pgleap-gis-upgrade"] and "temporary" in roles["pgleap-gis-scripts"]
    assert "temporary" in roles["pgleap-gis-1-reseed"]
    assert "commit this one" in roles["gis"]
    assert any("Not included: pgleap's run-state ConfigMap pgleap-gis-state" in line for line in header)
    assert "pgleap-gis-state" not in [d["metadata"]["name"] for d in docs]


def test_with_state_includes_the_marked_state_configmap():
    text = _render("--with-state").stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert docs[0]["metadata"]["name"] == "pgleap-gis-state"
    assert "# pgleap's run state: written and updated by pgleap itself" in text
    assert "do not commit it" in text


def test_json_is_a_list_and_equals_the_yaml():
    doc = json.loads(_render("-o", "json").stdout)
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]) == ("v1", "List", {})
    assert doc["items"] == [d for d in yaml.safe_load_all(_render().stdout) if d]


def test_scripts_configmap_is_readable_and_exact():
    text = _render().stdout
    assert "  upgrade.sh: |\n    #!/bin/bash\n    set -euo pipefail\n" in text
    assert "\techo 'tab-indented'" in text  # a tab inside a block scalar: kept as it is
    cm = next(d for d in yaml.safe_load_all(text) if d and d["metadata"]["name"] == "pgleap-gis-scripts")
    assert cm["data"] == {**SCRIPTS, "upgrade.sh": SCRIPT}


@pytest.mark.parametrize("fixture", ["argo.yaml", "flux.yaml", "bitnami.yaml"])
def test_advice_names_only_flags_render_takes(fixture):
    to = "bitnamilegacy/postgresql:17.2.0-debian-12-r8" if "bitnami" in fixture else TO
    result = runner.invoke(build_app(), ["render", "-f", str(FIXTURES / fixture), "--to", to])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "rerun with --allow" not in result.stderr
    accepted = set(re.findall(r"--[a-z][a-z-]+", runner.invoke(build_app(), ["render", "--help"]).output))
    for line in result.stderr.splitlines():
        outside = re.sub(r"`[^`]*`", "", line)  # commands in backticks are other tools' or the live run's
        assert set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", outside)) <= accepted, line
    assert re.search(r"`pgleap upgrade sts \S+ --allow-", result.stderr)
