"""Docker's rollback, automatic restore and finalize as phase tables (engine/undo.py), without Docker.

Each is stopped after every one of its phases (PGLEAP_FAIL=after-<phase>, as if pgleap died
there) and run again: the rerun goes on after the last recorded phase (nothing before it runs
twice, the rollback is not decided or asked again), the upgrade's recorded phases are untouched
while it is under way, and everything else is refused until it is done. The fake Target and the
SQL recorders are tests/test_engine_phases.py's; the same paths on real containers:
tests/faults/test_rollback_docker.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.test_engine_phases import FakeTarget, sql_steps  # noqa: F401 (a fixture)
from tests.test_plan import plan as make_plan
from toolkit.core.report import Report
from toolkit.engine import runner, undo
from toolkit.engine.state import RunState
from toolkit.errors import PgleapError, Refused

STOPPED_AT_UPGRADED = ["planned", "collected", "stopped", "upgraded"]
ROLLBACK_PHASES = ["rollback-started", "stopped-new", "restored-data", "restored-replica:sb"]
FINALIZE_PHASES = ["finalize-started", "finalized-data", "finalized-replica:sb", "cleaned-up"]


class WithStandby(FakeTarget):
    """The fake with one standby, `sb`, whose restore and finalize are recorded calls."""

    def find_replicas(self):
        return ["sb"]

    def reseed_replica(self, plan, name):
        self._call(f"reseed {name}")
        return {"name": name, "lag_bytes": 0, "seconds": 0.1}

    def restore_replica(self, plan, name):
        self._call(f"restore_replica {name}")

    def finalize_replica(self, plan, name):
        self._call(f"finalize_replica {name}")


@pytest.fixture
def plan(monkeypatch):
    """plan_upgrade returns a fixed copy-mode plan (it reads a live cluster over SQL)."""
    fixed = replace(make_plan(mode="copy"), source_image="img:13")
    new = type("New", (), {"bindir": "/usr/lib/postgresql/17/bin"})()
    monkeypatch.setattr(runner, "plan_upgrade", lambda *a, **k: (fixed, new))
    return fixed


def _upgrade(target, **kw) -> dict:
    return runner.upgrade(
        target, "img:17", verify_data=False, report=Report(quiet=True), state=RunState("fake"), **kw
    )


def _rollback(target, **kw) -> dict:
    return undo.rollback(target, report=Report(quiet=True), state=RunState("fake"), **kw)


def _finalize(target) -> dict:
    return undo.finalize(target, report=Report(quiet=True), state=RunState("fake"))


def _stopped_after_pg_upgrade(monkeypatch) -> None:
    """An upgrade that failed after pg_upgrade, before the new cluster ever ran: rollback is open."""
    monkeypatch.setenv("PGLEAP_FAIL", "after-upgraded")
    with pytest.raises(PgleapError, match="injected failure at after-upgraded"):
        _upgrade(WithStandby())
    monkeypatch.delenv("PGLEAP_FAIL")
    assert RunState("fake").data["done_phases"] == STOPPED_AT_UPGRADED


def _never_asked() -> None:
    raise AssertionError("a rollback under way was asked again")


@pytest.mark.parametrize("stop", ROLLBACK_PHASES)
def test_a_rollback_stopped_after_a_phase_goes_on_after_it(plan, sql_steps, monkeypatch, stop):  # noqa: F811
    _stopped_after_pg_upgrade(monkeypatch)
    first = WithStandby()
    monkeypatch.setenv("PGLEAP_FAIL", f"after-{stop}")
    with pytest.raises(PgleapError, match=f"injected failure at after-{stop}"):
        _rollback(first, ask=lambda: None)
    monkeypatch.delenv("PGLEAP_FAIL")
    state = RunState("fake").data
    assert state["done_phases"] == STOPPED_AT_UPGRADED and state["phase"] == "upgraded"  # the upgrade's stay
    assert state["rollback"]["done_phases"] == ROLLBACK_PHASES[: ROLLBACK_PHASES.index(stop) + 1]
    assert undo.under_way(RunState("fake")) == ("rollback", stop)
    with pytest.raises(Refused, match="a rollback of fake is under way"):  # nothing else meanwhile
        _upgrade(WithStandby())
    with pytest.raises(PgleapError, match="not complete"):
        _finalize(WithStandby())

    again = WithStandby()
    result = _rollback(again, ask=_never_asked)  # decided when it started
    assert result["status"] == "rolled-back"
    left = ROLLBACK_PHASES[ROLLBACK_PHASES.index(stop) + 1 :]
    steps = {
        "stopped-new": "stop_new",
        "restored-data": "restore_source",
        "restored-replica:sb": "restore_replica sb",
    }
    assert again.calls == [steps[p] for p in left]  # no rollback-check, nothing done twice
    assert first.calls + again.calls == [
        "upgrade.sh rollback-check", "stop_new", "restore_source", "restore_replica sb",
    ]  # fmt: skip
    assert RunState("fake").data["last_operation"]["operation"] == "rolled-back"
    assert "rollback" not in RunState("fake").data and "done_phases" not in RunState("fake").data


def test_a_rollback_killed_inside_a_step_runs_that_step_again_only(plan, sql_steps, monkeypatch):  # noqa: F811
    _stopped_after_pg_upgrade(monkeypatch)
    with pytest.raises(PgleapError, match="fake failure in restore_source"):
        _rollback(WithStandby(fail_on="restore_source"))
    assert RunState("fake").data["rollback"]["done_phases"] == ["rollback-started", "stopped-new"]
    again = WithStandby()
    assert _rollback(again)["status"] == "rolled-back"
    assert again.calls == ["restore_source", "restore_replica sb"]


def test_an_automatic_restore_stopped_half_way_is_finished_by_rollback(plan, sql_steps, monkeypatch):  # noqa: F811
    _stopped_after_pg_upgrade(monkeypatch)
    target = WithStandby()
    target.serving = None  # stopped by the upgrade
    monkeypatch.setenv("PGLEAP_FAIL", "after-stopped-new")
    with pytest.raises(PgleapError, match="injected failure"):
        undo.auto_restore(target, report=Report(quiet=True), state=RunState("fake"))
    monkeypatch.delenv("PGLEAP_FAIL")
    assert undo.auto_restore(target, report=Report(quiet=True), state=RunState("fake")) is None  # not twice
    again = WithStandby()
    assert _rollback(again, ask=_never_asked)["status"] == "restored"
    assert again.calls == ["restore_source", "restore_replica sb"]


@pytest.mark.parametrize("stop", FINALIZE_PHASES)
def test_a_finalize_stopped_after_a_phase_goes_on_after_it(plan, sql_steps, monkeypatch, stop):  # noqa: F811
    assert _upgrade(WithStandby())["status"] == "upgraded"
    upgraded = RunState("fake").data["done_phases"]
    first = WithStandby()
    monkeypatch.setenv("PGLEAP_FAIL", f"after-{stop}")
    with pytest.raises(PgleapError, match=f"injected failure at after-{stop}"):
        _finalize(first)
    monkeypatch.delenv("PGLEAP_FAIL")
    state = RunState("fake").data
    assert state["done_phases"] == upgraded and state["phase"] == "done"  # the upgrade's stay
    assert state["finalize"]["done_phases"] == FINALIZE_PHASES[: FINALIZE_PHASES.index(stop) + 1]
    with pytest.raises(Refused, match="a finalize of fake is under way"):  # the old cluster is going
        _rollback(WithStandby(), confirm=lambda loss: True)
    with pytest.raises(Refused, match="a finalize of fake is under way"):
        _upgrade(WithStandby())

    again = WithStandby()
    assert _finalize(again)["status"] == "finalized"
    steps = {
        "finalized-data": "upgrade.sh finalize",
        "finalized-replica:sb": "finalize_replica sb",
        "cleaned-up": "cleanup",
    }
    assert again.calls == [steps[p] for p in FINALIZE_PHASES[FINALIZE_PHASES.index(stop) + 1 :]]
    assert RunState("fake").data == {"last_operation": RunState("fake").data["last_operation"]}
    assert RunState("fake").data["last_operation"]["operation"] == "finalized"


def test_a_state_file_written_before_the_rollback_key_rolls_back_and_finalizes(plan, sql_steps):  # noqa: F811
    """The documents earlier versions wrote (no `rollback`/`finalize` key) still work."""
    older = {
        "target_image": "img:17", "plan": plan.to_dict(), "new_bindir": "/usr/lib/postgresql/17/bin",
        "source": {"container": "db"}, "replicas": [], "verify_data": False, "downtime": "verified",
        "known_invalid_indexes": [], "phase": "upgraded", "done_phases": STOPPED_AT_UPGRADED, "down_since": 1.0,
    }  # fmt: skip
    RunState("fake").path.write_text(json.dumps(older))
    assert undo.under_way(RunState("fake")) is None
    target = FakeTarget()
    assert _rollback(target)["status"] == "rolled-back"
    assert target.calls == ["upgrade.sh rollback-check", "stop_new", "restore_source"]

    done = {
        **older,
        "phase": "done",
        "done_phases": [*STOPPED_AT_UPGRADED, "post_upgraded", "started", "done"],
    }
    RunState("fake").path.write_text(json.dumps(done))
    target = FakeTarget()
    assert _finalize(target)["status"] == "finalized"
    assert target.calls == ["upgrade.sh finalize", "cleanup"]
