"""The rollback decision's pure parts: upgrade.sh's verdict lines and what a copy rollback says it drops."""

from __future__ import annotations

import time

from toolkit.engine.state import RunState
from toolkit.engine.undo import Verdict, _served_clients, loss_summary


def test_verdict_from_rollback_check_output():
    out = (
        "PGLEAP new_ran=yes\nPGLEAP switch_checkpoint=0/A0000D8\nPGLEAP now_checkpoint=0/B1788B0\n"
        "PGLEAP new_state=in production\nPGLEAP refused=the new cluster has been started (state: in production)\n"
    )
    v = Verdict.from_output(out)
    assert v.new_ran and v.new_state == "in production"
    assert v.refusal.startswith("the new cluster has been started")
    assert Verdict.from_output("PGLEAP new_ran=no\n") == Verdict("", False, "", "", "")


def test_loss_summary_names_the_time_and_both_checkpoints(tmp_path, monkeypatch):
    state = RunState("unit")
    state.data = {"done_phases": ["planned", "started"], "switched_at": time.time() - 600}
    text = loss_summary(Verdict("", True, "0/A0000D8", "0/B1788B0", "shut down"), state)
    assert "served clients for 10 min" in text
    assert "0/A0000D8 (after pg_upgrade) -> 0/B1788B0" in text
    assert _served_clients(state)
    state.data = {"done_phases": ["planned", "collected", "stopped", "upgraded", "verified"]}
    assert not _served_clients(state)  # only pgleap's own temporary server wrote to it
