"""Rollback and finalize of `--strategy logical`: back to the old cluster with every write made on
the new one (the reverse subscription, sequences and large objects), or keep the new cluster and
remove the replication and the old cluster. The upgrade's phases are in toolkit/engine/logical.py."""

from __future__ import annotations

import time

from toolkit.core.report import Report
from toolkit.db import faults
from toolkit.db import logical as repl
from toolkit.db import logical_switch as switch
from toolkit.engine import logical
from toolkit.engine.logical import LogicalSide
from toolkit.engine.logical_pause import HANDING_OVER, nothing_switched, reverse, slots, verify_sides
from toolkit.engine.state import RunState
from toolkit.errors import PgleapError, Refused


def rollback(side: LogicalSide, *, report: Report, state: RunState) -> dict:
    """Back to the old cluster: before the switch nothing served from the new one; after it, the
    new cluster's writes are already on the old one (reverse subscription), sequences follow."""
    data = state.data["plan"]
    phase = state.phase
    if phase == HANDING_OVER:  # everything was proved: finish the hand-over, then go back from it
        with report.phase("hand-over", "finishing the one an interrupted run began, to go back from it"):
            side.hand_over(state.data["target_image"])
        state.save(phase="switched")
    if phase in logical.BEFORE_SWITCH:
        with report.phase("rollback", "remove the new copy; the old server never stopped"):
            old = side.server(side.name, "old server")
            logical.discard_copy(side, old, data)
            switch.resume_writes(old)
        state.clear()
        return {"strategy": "logical", "rolled_back": True, "from_phase": phase}
    if state.phase != "switched":
        raise PgleapError(f"nothing to roll back (phase {phase})")
    dbs = data["databases"]
    pause_start = time.monotonic()
    new = side.server(side.name, "new server")
    with report.phase("pause writes", "on the new server"):
        switch.pause_writes(new)
    try:
        blue = side.start_blue()
        with report.phase("catch up", "the old server replays the new server's last writes"):
            reverse(side, data)
            switch.wait_caught_up(new, slots(data, "rev"), 120, subscriber=blue)
            switch.copy_sequences(new, blue, dbs)
            for db in dbs:  # large objects written on the new cluster: not in the reverse replication
                switch.copy_large_objects(new, blue, db)
        with report.phase("verify", "fingerprints of new and old"):
            proof = verify_sides(new, blue, dbs, "before the rollback", hint=nothing_switched(side))
        faults.point("logical-rollback-verified")  # the new server paused, the old one caught up
    except BaseException:
        switch.resume_writes(new)
        raise
    with report.phase("hand back", "the container name and ports to the old cluster"):
        for db in data["replicated"]:
            repl.drop_subscription(blue, db, repl.sub_name("rev", db))
            repl.drop_publication(new, db, repl.REVERSE_PUBLICATION)
        side.hand_back()
        old = side.server(side.name, "old server")
        for db in data["replicated"]:
            repl.drop_publication(old, db)
        side.remove_next()
    pause = time.monotonic() - pause_start
    for name in state.data.get("standbys_touched", []):  # re-seeded (or begun): old data and container back
        with report.phase(f"restore standby {name}", "its old container and data, following the old primary"):
            side.restore_standby(name, state.data["target_image"])
    state.clear()
    return {"strategy": "logical", "rolled_back": True, "from_phase": phase, "pause_seconds": round(pause, 3),
            "proof": proof}  # fmt: skip


def finalize(side: LogicalSide, *, report: Report, state: RunState) -> dict:
    """Keep the new cluster: the reverse replication, its slots and publication, the old cluster's
    containers and its volume go."""
    data = state.data["plan"]
    if state.phase != "switched":
        raise Refused(
            f"finalize needs a switched upgrade (this one is at {state.phase!r})",
            f"run the upgrade to its end first, or `{side.command('rollback')}`",
        )
    new = side.server(side.name, "new server")
    with report.phase("finalize", "reverse replication, slots, publications, old cluster"):
        blue = side.start_blue()
        for db in data["replicated"]:
            repl.drop_subscription(blue, db, repl.sub_name("rev", db))
            repl.drop_slot(new, repl.sub_name("rev", db))
            repl.drop_publication(new, db, repl.REVERSE_PUBLICATION)
            repl.drop_publication(new, db)
        faults.point("logical-finalizing")  # replication gone, the old cluster not yet removed
        side.remove_old()
        for name in state.data.get("standbys_touched", []):  # the standbys' old data aside goes too
            side.finalize_standby(name, state.data["target_image"])
        if state.data.get("standbys_touched"):
            side.remove_standby_scratch()
    state.clear()
    return {"strategy": "logical", "finalized": True}
