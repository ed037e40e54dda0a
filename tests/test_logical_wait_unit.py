"""The initial-copy wait stops as soon as the old server (the publisher) is gone: the subscription
would retry it for ever and pgleap wait out the whole sync timeout (found by the container-kill tier,
tests/faults/test_logical_container_kill_docker.py, where it waited 900 s)."""

from __future__ import annotations

import pytest

from toolkit.db import logical_switch as switch
from toolkit.errors import PgleapError


class _Copying:
    """A subscriber whose one table never becomes ready (its publisher is dead)."""

    def query(self, db, statement, params=()):
        return [(1,)]


class _Dead:
    label = "old server"

    def query(self, db, statement, params=()):
        raise PgleapError(f"cannot connect to database {db!r} on the {self.label}: connection refused")


class _Clock:
    def __init__(self, monkeypatch) -> None:
        self.now = 0.0
        monkeypatch.setattr(switch.time, "monotonic", lambda: self.now)

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_dead_publisher_ends_the_wait_within_seconds(monkeypatch):
    clock = _Clock(monkeypatch)
    with pytest.raises(PgleapError) as raised:
        switch.wait_synced(_Copying(), ["app"], 900, clock.sleep, publisher=_Dead())
    assert clock.now < 5, clock.now
    assert "the initial copy stopped" in raised.value.message and "resume" in raised.value.hint


def test_without_a_publisher_the_timeout_still_bounds_the_wait(monkeypatch):
    clock = _Clock(monkeypatch)
    with pytest.raises(PgleapError, match="did not finish within 30 s"):
        switch.wait_synced(_Copying(), ["app"], 30, clock.sleep)
