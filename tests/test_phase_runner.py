"""The one phase runner (toolkit/engine/phases.py) through both of its stores, without Docker.

The same step table runs against the Docker side's run-state file (FileStore, in tmp_path) and
the Kubernetes side's state ConfigMap (ConfigMapStore, on the recording API fake): a crash in a
step, or after a recorded phase (PGLEAP_FAIL), is resumed by running the table again, which
skips what either store says is done; both stores record the same phases in the same order.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.kube.fake_api import FakeKubernetesApi
from tests.kube.harness import SCRIPTS, make_cluster
from toolkit.engine.phases import FileStore, PhaseStore, run_phases
from toolkit.engine.state import RunState
from toolkit.errors import PgleapError
from toolkit.kube import objects
from toolkit.kube.api import Kube
from toolkit.kube.model import ROLLBACK_PHASES
from toolkit.kube.phase_store import ConfigMapStore

PHASES = ("collected", "stopped", "upgraded", "started", "done")
NS, STS = "geo", "gis"


class Crash(Exception):
    """pgleap dies inside a step (nothing after it is recorded)."""


class Steps:
    """A step per phase that records its call; `crash_in` names a step that dies once."""

    def __init__(self, crash_in: str = "") -> None:
        self.calls: list[str] = []
        self.crash_in = crash_in

    def table(self) -> list[tuple[str, Callable[[], None]]]:
        return [(phase, lambda phase=phase: self.run(phase)) for phase in PHASES]

    def run(self, phase: str) -> None:
        self.calls.append(phase)
        if phase == self.crash_in:
            self.crash_in = ""
            raise Crash(phase)


class FileSide:
    """The Docker side: the run-state file, read afresh by each run as `pgleap resume` does."""

    def __init__(self, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PGLEAP_STATE_DIR", str(tmp_path))

    def store(self) -> PhaseStore:
        return FileStore(RunState("vol"))

    def recorded(self) -> list[str]:
        return RunState("vol").data.get("done_phases", [])


class ConfigMapSide:
    """The Kubernetes side: the state ConfigMap on the API fake, its phase read back by each run."""

    def __init__(self) -> None:
        self.fake = FakeKubernetesApi()
        self.kube = Kube(
            core=self.fake, apps=self.fake, batch=self.fake, policy=self.fake, custom=self.fake,
            sleep=lambda s: None, clock=lambda: 0.0,
        )  # fmt: skip
        self.fake.seed_for_test(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": objects.state_cm_name(STS), "namespace": NS},
                "data": {"operation": "upgrade", "phase": "recorded"},
            }
        )

    def data(self) -> dict[str, str]:
        return self.fake.get_for_test("ConfigMap", NS, objects.state_cm_name(STS))["data"]

    def store(self) -> PhaseStore:
        return ConfigMapStore(self.kube, NS, STS, "upgrade", ("recorded", *PHASES), self.data()["phase"])

    def recorded(self) -> list[str]:
        """Every phase written to the ConfigMap, in order (from the API calls)."""
        return [
            c.detail["patch"]["data"]["phase"]
            for c in self.fake.calls
            if c.verb == "patch" and c.resource == "configmaps"
        ]


@pytest.fixture
def sides(tmp_path, monkeypatch):
    return {"file": FileSide(tmp_path, monkeypatch), "configmap": ConfigMapSide()}


def test_a_crash_in_a_step_is_resumed_at_that_step_on_both_stores(sides):
    seen = {}
    for kind, side in sides.items():
        steps = Steps(crash_in="upgraded")
        with pytest.raises(Crash):
            run_phases(steps.table(), side.store())
        assert side.recorded() == ["collected", "stopped"], kind
        assert run_phases(steps.table(), side.store()) == ["upgraded", "started", "done"]
        assert steps.calls == ["collected", "stopped", "upgraded", "upgraded", "started", "done"], kind
        assert run_phases(steps.table(), side.store()) == [], kind  # all done: a rerun runs nothing
        seen[kind] = side.recorded()
    assert seen["file"] == seen["configmap"] == list(PHASES)


def test_an_injected_failure_after_a_phase_leaves_it_recorded_on_both_stores(sides, monkeypatch):
    for kind, side in sides.items():
        steps = Steps()
        monkeypatch.setenv("PGLEAP_FAIL", "after-stopped")  # db/faults.py: as if pgleap died there
        with pytest.raises(PgleapError, match="injected failure at after-stopped"):
            run_phases(steps.table(), side.store())
        monkeypatch.delenv("PGLEAP_FAIL")
        assert side.recorded() == ["collected", "stopped"], kind
        run_phases(steps.table(), side.store())
        assert steps.calls == list(PHASES), kind  # "stopped" is not run again


@pytest.mark.parametrize("kind", ["file", "configmap"])
def test_the_checkpoint_runs_after_the_phase_is_recorded_and_seconds_are_reported(sides, kind):
    side = sides[kind]
    store, ticks, seconds = side.store(), iter(range(100)), {}

    def stop(phase: str) -> None:
        if phase == "upgraded":
            assert store.done("upgraded")  # recorded before the stop point
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_phases(
            Steps().table(), store, checkpoint=stop, clock=lambda: float(next(ticks)),
            seconds=lambda phase, s: seconds.__setitem__(phase, s),
        )  # fmt: skip
    assert side.recorded() == ["collected", "stopped", "upgraded"]
    assert seconds == {"collected": 1.0, "stopped": 1.0, "upgraded": 1.0}


def test_step_results_go_into_the_state_file_and_are_refused_by_the_configmap(sides):
    table = [("upgraded", lambda: {"upgrade_results": {"pg_upgrade_seconds": "3"}})]
    run_phases(table, sides["file"].store())
    assert RunState("vol").data["upgrade_results"] == {"pg_upgrade_seconds": "3"}
    assert RunState("vol").data["phase"] == "upgraded"
    with pytest.raises(TypeError, match="records no step results"):
        run_phases(table, sides["configmap"].store())


def test_the_configmap_keeps_the_keys_earlier_versions_wrote_and_read(sides):
    side = sides["configmap"]
    run_phases(Steps().table()[:1], side.store())
    assert set(side.data()) == {"operation", "phase", "updated"}
    assert side.data()["phase"] == "collected" and side.data()["operation"] == "upgrade"
    with pytest.raises(ValueError):  # a phase the operation does not have is a bug, not "not done"
        ConfigMapStore(side.kube, NS, STS, "upgrade", ("recorded", *PHASES), "rolled-back")


def test_a_kubernetes_upgrade_fails_at_an_injected_point_and_restores_itself(monkeypatch):
    """The Kubernetes runtime now has Docker's fault points: PGLEAP_FAIL=after-stopped fails right
    after the stop is recorded; the automatic restore then puts the old StatefulSet back."""
    c = make_cluster("official-plain")
    monkeypatch.setenv("PGLEAP_FAIL", "after-stopped")
    with pytest.raises(PgleapError, match="injected failure at after-stopped") as exc:
        c.runtime.upgrade(c.namespace, c.name, "pgleap/postgis:17-3.5", scripts=SCRIPTS, post_upgrade=c.hook)
    assert "serves again on its old image (automatic restore)" in exc.value.message
    phases = [
        x.detail["patch"]["data"]["phase"]
        for x in c.fake.calls
        if x.verb == "patch" and x.resource == "configmaps" and "phase" in x.detail["patch"].get("data", {})
    ]
    assert phases == ["retention", "prepared", "replicas-stopped", "stopped", *ROLLBACK_PHASES]
    assert c.sts()["spec"]["replicas"] == 1 and c.image() == "pgleap/postgis:13-3.1"
