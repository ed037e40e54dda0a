"""The engine's phase logic against a fake Target, without Docker: order, resume, refusals, the way back.

The fake records every call the engine makes and answers as a runtime would (upgrade.sh's
`PGLEAP key=value` lines); the SQL steps (post-upgrade, health checks) are replaced by
recorders, since what is tested here is which phase runs when, not what a phase does to data.
The same phases against real containers: tests/test_engine_docker.py.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import pytest

from tests.test_plan import data as data_facts
from tests.test_plan import plan as make_plan
from toolkit.core.report import Report
from toolkit.db import postupgrade, verify
from toolkit.engine import runner, undo
from toolkit.engine.state import RunState
from toolkit.engine.target import Target
from toolkit.errors import PgleapError, Refused

UPGRADE_PHASES = ["planned", "collected", "stopped", "upgraded", "post_upgraded", "started", "done"]


class FakeTarget:
    """One database that serves until stopped; `fail_on` names a call that raises instead."""

    key = "fake"
    source_image = "img:13"

    def __init__(self, *, fail_on: str = "", clean_stop: bool = True) -> None:
        self.calls: list[str] = []
        self.fail_on, self.clean_stop = fail_on, clean_stop
        self.serving: str | None = "old"
        self.new_ran = False

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_on:
            raise PgleapError(f"fake failure in {name}")

    # inspect
    def probe_image(self, image):
        raise AssertionError("plan_upgrade is replaced in these tests")

    def probe_data(self):
        self.calls.append("probe_data")
        state = "shut down" if self.clean_stop or self.serving else "in production"
        return data_facts(13, state=state)

    def layout(self, target_image):
        raise AssertionError("plan_upgrade is replaced in these tests")

    def live_server(self):
        return None

    def running_users(self):
        return []

    def check_writable(self, data):
        pass

    @contextmanager
    def old_server(self, old, data, superuser):
        self._call("old_server")
        yield object()

    def describe(self):
        return {"container": "db"}

    def command(self, verb):
        return f"pgleap {verb} fake"

    def volume_path(self, path):
        return path

    def stopped_by_run(self):
        return self.serving is None

    def supports_minimal_downtime(self):
        return True

    # act
    def reap_leftovers(self):
        return []

    def collect(self, plan):
        self._call("collect")

    def run_action(self, plan, action, *, check=True):
        self._call(f"upgrade.sh {action}")
        if action == "upgrade":
            return "PGLEAP pg_upgrade_seconds=1\n"
        if action == "rollback-check":  # upgrade.sh's rule: the new cluster ran in link mode: no way back
            refused = "PGLEAP refused=the new cluster has been started\n" if self.new_ran else ""
            return f"PGLEAP new_ran={'yes' if self.new_ran else 'no'}\n{refused}"
        return ""

    def stop_source(self):
        self._call("stop_source")
        self.serving = None

    def start_source(self):
        self._call("start_source")
        self.serving = "old"

    @contextmanager
    def new_server(self, plan, bindir):
        self._call("new_server")
        self.new_ran = True
        yield object()

    def analyze(self, server, plan):
        return "vacuumdb"

    def precreate_new(self, plan):
        self._call("precreate_new")

    def start_new(self, plan):
        self._call("start_new")
        self.serving = "new"

    def serving_server(self, plan):
        return object()

    def analyze_serving(self, plan):
        return "vacuumdb"

    def stop_new(self, plan):
        self._call("stop_new")

    def restore_source(self, plan):
        self._call("restore_source")
        self.serving = "old"
        return ""

    def cleanup_scratch(self):
        self._call("cleanup_scratch")

    def cleanup(self, plan):
        self._call("cleanup")

    def find_replicas(self):
        return []

    def reseed_replica(self, plan, name):
        raise AssertionError("no standbys here")

    def restore_replica(self, plan, name):
        raise AssertionError("no standbys here")

    def finalize_replica(self, plan, name):
        raise AssertionError("no standbys here")


@pytest.fixture
def sql_steps(monkeypatch):
    """The SQL steps as recorders: the list of what ran, in order."""
    ran: list[str] = []

    def post(server, **kw):
        ran.append("post-upgrade")
        return {}

    def health(server, report, **kw):
        ran.append("health")

    monkeypatch.setattr(postupgrade, "run", post)
    monkeypatch.setattr(verify, "run_health_checks", health)
    return ran


@pytest.fixture
def planned(monkeypatch):
    """plan_upgrade (which reads a live cluster over SQL) returns a fixed plan; `mode` picks it."""

    def use(mode: str = "link"):
        plan = replace(make_plan(mode="copy" if mode == "copy" else "link"), source_image="img:13")
        new = type("New", (), {"bindir": "/usr/lib/postgresql/17/bin"})()
        monkeypatch.setattr(runner, "plan_upgrade", lambda *a, **k: (plan, new))
        return plan

    return use


def _upgrade(target: Target, **kw) -> dict:
    kw.setdefault("verify_data", False)  # fingerprints read every table over SQL
    return runner.upgrade(target, "img:17", report=Report(quiet=True), state=RunState("fake"), **kw)


def test_the_fake_is_a_complete_target():
    """The fake implements every method of the protocol, so the engine cannot call one it lacks."""
    wanted = {n for n in dir(Target) if not n.startswith("_")}
    assert wanted <= set(dir(FakeTarget)), wanted - set(dir(FakeTarget))


def test_phases_run_in_order_and_are_recorded(planned, sql_steps):
    planned("link")
    target = FakeTarget()
    result = _upgrade(target)
    assert result["status"] == "upgraded"
    assert target.calls == [
        "collect", "stop_source", "probe_data", "upgrade.sh upgrade", "new_server", "start_new",
    ]  # fmt: skip
    assert sql_steps == ["post-upgrade", "health"]
    assert RunState("fake").data["done_phases"] == UPGRADE_PHASES
    assert result["point_of_no_return"].startswith("the first start of the new cluster")


def test_a_resume_starts_at_the_first_phase_not_done(planned, sql_steps, monkeypatch):
    planned("copy")
    first = FakeTarget()
    monkeypatch.setenv("PGLEAP_FAIL", "after-upgraded")  # db/faults.py: as if pgleap died there
    with pytest.raises(PgleapError, match="injected failure at after-upgraded"):
        _upgrade(first)
    monkeypatch.delenv("PGLEAP_FAIL")
    assert RunState("fake").data["done_phases"] == ["planned", "collected", "stopped", "upgraded"]
    again = FakeTarget()
    again.serving = None  # still stopped by the first run
    assert _upgrade(again)["status"] == "upgraded"
    assert again.calls == ["new_server", "start_new"]  # nothing before pg_upgrade's end runs twice
    assert RunState("fake").data["done_phases"] == UPGRADE_PHASES
    assert _upgrade(FakeTarget())["status"] == "already-done"


def test_a_refusal_before_the_stop_changes_nothing(planned, sql_steps):
    planned("link")
    target = FakeTarget()

    def refuse(plan):
        raise Refused("not confirmed")

    with pytest.raises(Refused, match="not confirmed"):
        _upgrade(target, confirm=refuse)
    assert target.calls == [] and target.serving == "old" and sql_steps == []
    assert RunState("fake").data == {}  # nothing recorded: the next run plans afresh
    assert _upgrade(FakeTarget(), dry_run=True)["status"] == "dry-run"
    assert RunState("fake").data == {}


def test_an_unclean_stop_starts_the_old_database_again_and_refuses(planned, sql_steps):
    planned("link")
    target = FakeTarget(clean_stop=False)
    with pytest.raises(Refused, match="did not shut down cleanly"):
        _upgrade(target)
    assert target.calls == ["collect", "stop_source", "probe_data", "start_source"]
    assert target.serving == "old"
    assert RunState("fake").data["done_phases"] == ["planned", "collected"]


def test_a_failure_before_the_point_of_no_return_is_restored(planned, sql_steps):
    planned("link")
    target = FakeTarget(fail_on="upgrade.sh upgrade")
    state = RunState("fake")
    with pytest.raises(PgleapError, match="fake failure"):
        runner.upgrade(target, "img:17", verify_data=False, report=Report(quiet=True), state=state)
    target.calls.clear()
    restored = undo.auto_restore(target, report=Report(quiet=True), state=state)
    assert restored is not None and restored["status"] == "restored"
    assert target.calls == ["upgrade.sh rollback-check", "stop_new", "restore_source"]
    assert target.serving == "old"
    assert RunState("fake").data["last_operation"]["operation"] == "restored"


def test_a_failure_after_the_point_of_no_return_is_left_for_resume(planned, sql_steps, monkeypatch):
    planned("link")
    target = FakeTarget()

    def broken(server, **kw):
        raise PgleapError("post-upgrade failed")

    monkeypatch.setattr(postupgrade, "run", broken)
    state = RunState("fake")
    with pytest.raises(PgleapError, match="post-upgrade failed"):
        runner.upgrade(target, "img:17", verify_data=False, report=Report(quiet=True), state=state)
    target.calls.clear()
    assert undo.auto_restore(target, report=Report(quiet=True), state=state) is None
    assert target.calls == ["upgrade.sh rollback-check"]  # asked, then nothing touched
    assert "restore_source" not in target.calls and target.serving is None
    assert RunState("fake").data["phase"] == "upgraded"  # `pgleap resume` goes on from here


def test_minimal_downtime_keeps_only_pg_upgrade_and_the_start_in_the_window(planned, sql_steps):
    planned("link")
    target = FakeTarget()
    assert _upgrade(target, downtime="minimal")["status"] == "upgraded"
    assert target.calls == [
        "collect", "upgrade.sh prepare", "precreate_new", "stop_source", "upgrade.sh upgrade", "start_new",
    ]  # fmt: skip
    assert sql_steps == ["post-upgrade", "health"]  # on the serving database, after the start
    done = RunState("fake").data["done_phases"]
    assert done == [
        "planned",
        "collected",
        "prepared",
        "stopped",
        "upgraded",
        "started",
        "post_upgraded",
        "done",
    ]


def test_minimal_downtime_is_refused_for_a_target_that_cannot_restart(planned, sql_steps, monkeypatch):
    planned("link")
    target = FakeTarget()
    monkeypatch.setattr(target, "supports_minimal_downtime", lambda: False)
    with pytest.raises(Refused, match="needs a container"):
        _upgrade(target, downtime="minimal")
    assert target.calls == [] and RunState("fake").data == {}
