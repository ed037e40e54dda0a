"""One progress model for both runtimes (issue 15): Docker's `Report` and Kubernetes' `Outcome`
record phases, downtime and notes in `toolkit.core.progress.Progress`, so a phase row in
`-o json` has one shape whichever runtime wrote it. Fast: no container, no cluster."""

from __future__ import annotations

import pytest

from toolkit.core.progress import Phase, Progress
from toolkit.core.report import Report
from toolkit.kube.model import Outcome


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_docker_and_kubernetes_phases_come_from_one_model() -> None:
    clock = Clock()
    report = Report(quiet=True, clock=clock)
    out = Outcome("upgrade", "recorded", clock=clock)
    assert isinstance(report, Progress) and isinstance(out, Progress)

    with report.phase("recorded", "state written"):
        clock.now += 0.25
    report.down()
    with report.phase("stopped", "container stopped"):
        clock.now += 1.5
    report.up()
    with out.timed("recorded", "state written"):
        clock.now += 0.25
    with out.timed("stopped", "container stopped"):  # an upgrade phase between stop and start
        clock.now += 1.5

    rows = [
        {"name": "recorded", "seconds": 0.25, "detail": "state written", "in_downtime": False},
        {"name": "stopped", "seconds": 1.5, "detail": "container stopped", "in_downtime": True},
    ]
    assert report.to_dict()["phases"] == rows
    assert out.as_dict()["phases"] == rows
    assert out.as_dict()["seconds"] == {"recorded": 0.25, "stopped": 1.5}  # the old key, from the same phases


def test_a_runner_that_only_counts_seconds_fills_the_phases() -> None:
    """Kubernetes' phase loop writes `out.seconds[phase] = …`: that is a phase of the model."""
    out = Outcome("upgrade", "recorded", notes=["a warning"])
    out.seconds["upgraded"] = 2.0
    out.seconds["verified"] = 0.5
    out.seconds["upgraded"] = 3.0  # timed anew (a resumed step), not a second row
    assert [(p.name, p.seconds, p.in_downtime) for p in out.phases] == [
        ("upgraded", 3.0, True),
        ("verified", 0.5, False),
    ]
    data = out.as_dict()
    assert data["seconds"] == {"upgraded": 3.0, "verified": 0.5} and type(data["seconds"]) is dict
    assert data["notes"] == ["a warning"]
    rollback = Outcome("rollback", "rollback-started")
    rollback.seconds["stopped-new"] = 1.0
    assert rollback.phases == [Phase("stopped-new", 1.0, "", False)]


def test_a_failed_phase_is_kept_only_when_asked() -> None:
    """Docker's report shows finished phases; the rehearsal's no-go report shows how far it came."""
    report, rehearsal = Report(quiet=True), Progress()
    with pytest.raises(RuntimeError), report.phase("upgraded"):
        raise RuntimeError("pg_upgrade failed")
    with pytest.raises(RuntimeError), rehearsal.timed("clone", keep_failed=True):
        raise RuntimeError("Job failed")
    assert report.phases == [] and [p.name for p in rehearsal.phases] == ["clone"]
