"""The upgrade's `--sync-timeout` is recorded with the plan, and a resumed run waits that long (not the
900 s default); a state recorded before the field existed loads and means the default."""

from __future__ import annotations

import pytest

from toolkit.core.report import Report
from toolkit.engine import logical as engine
from toolkit.engine.state import RunState


class _Side:
    """Only what engine.upgrade touches before the sync (the sync and the switch are replaced)."""

    name = next_name = "db"

    def server(self, name, label):
        return object()

    def next_running(self) -> bool:
        return True


class _Plan:
    refusals: tuple = ()

    def to_dict(self) -> dict:
        return {"databases": ["app"], "replicated": {"app": []}, "carried": [], "standbys": []}


@pytest.fixture
def seen(monkeypatch) -> dict:
    seen: dict = {}
    monkeypatch.setattr(engine, "_sync", lambda *a, timeout, **kw: seen.update(timeout=timeout))
    monkeypatch.setattr(engine, "switch_over", lambda *a, **kw: {"phase": "switched"})
    monkeypatch.setattr(engine, "_follow_old", lambda *a: None)  # the servers are not real here
    return seen


def _built(tmp_path, **recorded) -> RunState:
    state = RunState("docker-unit-sync")
    state.save(strategy="logical", phase="built", plan=_Plan().to_dict(), target_image="new", **recorded)
    return state


@pytest.mark.parametrize(("recorded", "given", "waited"), [
    ({"sync_timeout": 7200.0}, None, 7200.0),  # resume: the upgrade's choice
    ({}, None, 900.0),  # a state written before the field was recorded: the default
    ({"sync_timeout": 7200.0}, 60.0, 60.0),  # given again: it wins
])  # fmt: skip
def test_a_resumed_sync_waits_the_recorded_timeout(tmp_path, seen, recorded, given, waited):
    state = _built(tmp_path, **recorded)
    engine.upgrade(
        _Side(), "new", report=Report(quiet=True), state=RunState(state.path.stem), sync_timeout=given
    )
    assert seen["timeout"] == waited


@pytest.mark.parametrize(("given", "recorded"), [(7200.0, 7200.0), (None, 900.0)])
def test_the_upgrade_records_its_sync_timeout(tmp_path, monkeypatch, seen, given, recorded):
    """Recorded at preflight, in the state both runtimes keep (Docker's file, Kubernetes' ConfigMap)."""
    monkeypatch.setattr(engine, "plan", lambda side, image, **options: _Plan())
    monkeypatch.setattr(
        engine, "_build", lambda side, image, old, data, *, report, state: state.save(phase="built")
    )
    side = _Side()
    side.describe = lambda: {}
    state = RunState("docker-unit-sync")
    engine.upgrade(side, "new", report=Report(quiet=True), state=state, sync_timeout=given)
    assert RunState("docker-unit-sync").data["sync_timeout"] == recorded
    assert seen["timeout"] == recorded


@pytest.mark.parametrize(("given", "passed"), [([], None), (["--sync-timeout", "60"], 60.0)])
def test_resume_docker_passes_a_sync_timeout_given_again(monkeypatch, given, passed):
    """`pgleap resume docker --sync-timeout N` overrides the recorded one; without it the engine reads
    the recorded one (None reaches it)."""
    from typer.testing import CliRunner

    from toolkit.cli import logical
    from toolkit.cli.app import app

    class _Stopped:
        def start_stopped(self) -> bool:
            return False

    RunState("docker-unit").save(strategy="logical", phase="built", target_image="new")
    seen: dict = {}
    monkeypatch.setattr(logical, "recorded", lambda container: True)
    monkeypatch.setattr(logical, "_side", lambda container: (_Stopped(), "docker-unit"))
    monkeypatch.setattr(engine, "upgrade", lambda side, to, **kw: seen.update(kw) or {"phase": "switched"})
    result = CliRunner().invoke(app, ["resume", "docker", "-c", "db", *given])
    assert result.exit_code == 0, result.output
    assert seen["sync_timeout"] == passed


def test_resume_sync_timeout_over_an_in_place_run_is_a_usage_error(monkeypatch):
    from typer.testing import CliRunner

    from toolkit.cli import logical
    from toolkit.cli.app import app

    monkeypatch.setattr(logical, "recorded", lambda container: False)
    result = CliRunner().invoke(app, ["resume", "docker", "-c", "db", "--sync-timeout", "60"])
    assert result.exit_code == 2 and "only with --strategy logical" in result.output


@pytest.mark.parametrize(("recorded", "given", "in_pause"), [
    (False, None, False),  # upgraded with --verify-after, resumed without a choice (Kubernetes): kept
    (True, None, True),
    (False, False, True),  # the upgrade command run again without the flag: this run's choice
])  # fmt: skip
def test_a_resume_keeps_the_recorded_verify_after(monkeypatch, seen, recorded, given, in_pause):
    switched: dict = {}
    monkeypatch.setattr(
        engine, "switch_over", lambda side, image, old, new, data, **kw: switched.update(data)
    )
    state = RunState("docker-unit-va")
    state.save(strategy="logical", phase="synced", plan=_Plan().to_dict(), target_image="new",
               verify_in_pause=recorded)  # fmt: skip
    engine.upgrade(_Side(), "new", report=Report(quiet=True), state=state, verify_after=given)
    assert switched["verify_in_pause"] is in_pause
