"""The switch of `--strategy logical`: the only write pause, the hand-over, and what follows it.

Before the pause what does not need it is prepared (reverse publication and slots, checkpoints,
the container that becomes NAME); in the pause writes are refused on the old server, the new
one catches up, the DDL check, sequences, large objects and the proof run, the reverse slots move
to the switch point; then the runtime hands NAME over and the pause ends. After it: the reverse
replication (rollback keeps every write made on the new side) and the standbys' re-seed.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import TYPE_CHECKING

from toolkit.core.report import Report
from toolkit.db import faults
from toolkit.db import logical as repl
from toolkit.db import logical_switch as switch
from toolkit.db.sql import Server
from toolkit.db.verify import compare, fingerprint
from toolkit.engine.state import RunState
from toolkit.errors import PgleapError, VerificationFailed

if TYPE_CHECKING:
    from toolkit.engine.logical import LogicalSide

logger = logging.getLogger(__name__)

# Recorded just before the hand-over starts: everything was proved in the pause; a run stopped from
# here on is finished (`resume`) or finished and then rolled back (`rollback`), never rebuilt.
HANDING_OVER = "handing-over"


def reseed_standbys(side, image: str, *, report: Report, state: RunState) -> list[dict]:
    """After the switch: each planned standby re-seeded from the new primary, once (recorded)."""
    infos = []
    for name in state.data["plan"].get("standbys", []):
        if name in state.data.get("standbys_reseeded", []):
            continue
        state.save(standbys_touched=sorted({*state.data.get("standbys_touched", []), name}))
        with report.phase(f"re-seed standby {name}", "pg_basebackup from the new primary") as ph:
            info = side.reseed_standby(name, image)
            ph.detail = f"{info['seconds']:.1f} s, lag {info['lag_bytes']} bytes"
        state.save(standbys_reseeded=[*state.data.get("standbys_reseeded", []), name])
        infos.append(info)
    return infos


def slots(plan_data: dict, prefix: str) -> list[str]:
    return [repl.sub_name(prefix, db) for db in plan_data["replicated"]]


def verify_sides(
    a: Server,
    b: Server,
    databases: list[str],
    what: str,
    *,
    hint: str = "nothing was switched: the serving side keeps serving",
    sequences: bool = True,
    snapshots=None,
) -> dict:
    with ThreadPoolExecutor(2) as pool:  # both servers read at once: this runs inside the write pause
        first = pool.submit(fingerprint, a, databases, snapshots=snapshots)
        second = pool.submit(fingerprint, b, databases)
        before, after = first.result(), second.result()
    if not sequences:  # after the switch: the new side's advance, the old side's stay (not replicated)
        before.sequences = {db: {} for db in before.sequences}
        after.sequences = {db: {} for db in after.sequences}
    result = compare(before, after, include_extension_tables=False)
    if not result.identical:
        raise VerificationFailed(
            f"{what}: the fingerprints differ: " + "; ".join(result.differences[:8]),
            hint,
        )
    return {"tables": sum(len(t) for t in after.tables.values()), "rows": after.total_rows(),
            "sequences": sum(len(s) for s in after.sequences.values())}  # fmt: skip


def nothing_switched(side: LogicalSide) -> str:
    return (
        f"nothing was switched: the serving side keeps serving; `{side.command('rollback')}` removes the copy"
    )


def _proof_text(proof: dict) -> str:
    return f"{proof['tables']} tables, {proof['rows']} rows, {proof['sequences']} sequences identical"


def switch_over(
    side, image, old: Server, new: Server, data: dict, *, report: Report, state: RunState, drain
) -> dict:
    """Prepare, pause, prove, move the reverse slots, hand NAME over; then serve (the pause ends)."""
    _prepare_switch(side, image, old, new, data, report=report)
    pause_start = time.monotonic()
    logger.info("write pause starts at monotonic %.3f", pause_start)
    report.down()
    try:
        proof = _in_pause(side, old, new, data, report=report, state=state, drain=drain)
    except BaseException:
        switch.resume_writes(old)  # the old server serves again, nothing was switched
        report.up()
        raise
    with report.phase("reverse slots", "moved to the switch point, before any client reaches the new server"):
        # the slot starts where the forward stream ends: rollback loses no write, gets none back twice
        try:
            _drop_forward(new, data)  # their slots on the old server too: nothing of it is needed after
            _reverse_slots_at_switch(new, data)
            faults.point("logical-reverse-slots")
        except BaseException:
            _forward_again(side, old, new, data)
            raise
    with report.phase("switch", "the container name and ports to the new cluster"):
        # read-only stays until the old server stops; the blue copy starts writable
        switch.resume_writes(old, reload=False)
        verify_after = not data.get("verify_in_pause", True)
        if verify_after:
            switch.read_only_from_start(new)
        state.save(
            phase=HANDING_OVER, verify_in_pause=not verify_after, proof=proof, pause_started=time.time()
        )
        side.hand_over(image)
        faults.point("logical-handed-over")
    return _serve(side, image, data, report=report, state=state, pause_start=pause_start)


def forward_connections(side, old: Server, dbs) -> dict[str, str]:
    """database -> the forward subscription's connection string: the old server at its address now."""
    old_ip = side.ip(side.name)
    return {db: repl.conninfo(old_ip, 5432, old.user, old.password, db) for db in dbs}


def _forward_again(side, old: Server, new: Server, data: dict) -> None:
    """A failure after the forward subscriptions were dropped, before the hand-over: the old server took
    no write since (paused), so subscriptions made again from its current position lose nothing, and it
    serves again, the copy following as before. If the new server cannot take them, the old one stays
    read-only (a copy that misses writes could never be switched to): `resume` finishes from there."""
    try:
        for db, info in forward_connections(side, old, data["replicated"]).items():
            repl.create_subscription(
                new, db, repl.sub_name("fwd", db), info, repl.PUBLICATION, copy_data=False
            )
    except Exception as error:  # the caller's error is the one reported
        logger.warning("forward subscriptions not made again (%s): the old server stays read-only", error)
        return
    switch.resume_writes(old)


def _in_pause(side, old: Server, new: Server, data: dict, *, report: Report, state: RunState, drain) -> dict:
    """Writes refused on the old server until the new one holds the same: returns the proof (empty
    with `--verify-after`, which proves only the sequences here). A raise leaves nothing switched."""
    dbs = data["databases"]
    with report.phase("pause writes", "new sessions read-only, open ones ended") as ph:
        ended = switch.pause_writes(old, drain=drain)
        logger.info("writes refused from monotonic %.3f", time.monotonic())
        ph.detail = f"{ended} session(s) ended"
    faults.point("logical-paused")
    with ThreadPoolExecutor(1) as pool:  # the catalog is read while the new server catches up
        catalog = pool.submit(repl.catalog_hash, old, dbs)
        with report.phase("catch up", "the new server replays the last writes"):
            switch.wait_caught_up(old, slots(data, "fwd"), 120, subscriber=new)
        with report.phase("DDL check", "catalog hash against the one taken at build"):
            if catalog.result() != state.data.get("catalog"):
                raise PgleapError(
                    "the schema changed on the old server during the migration (DDL); the switch is aborted",
                    f"the old server serves again; `{side.command('rollback')}` removes the new copy, then "
                    "upgrade again",
                )
    _carry(old, new, data, report=report)
    if not data.get("verify_in_pause", True):
        with report.phase("verify sequences", "old and new, during the pause (no table rows read)"):
            _verify_sequences(old, new, dbs)
        return {}
    with report.phase("verify", "fingerprints of old and new, during the pause") as ph:
        proof = verify_sides(old, new, dbs, "before the switch", hint=nothing_switched(side))
        ph.detail = _proof_text(proof)
    return proof


def _carry(old: Server, new: Server, data: dict, *, report: Report) -> None:
    """What logical replication does not carry: sequences, large objects, unlogged tables, matviews."""
    dbs = data["databases"]
    with ThreadPoolExecutor(1) as pool:  # independent of each other: both at once, in the pause
        objects = pool.submit(lambda: sum(switch.copy_large_objects(old, new, db) for db in dbs))
        with report.phase("sequences", "set from the old server") as ph:
            ph.detail = f"{switch.copy_sequences(old, new, dbs)} sequence(s)"
        with report.phase("large objects", "copied from the old server (not replicated), beside") as ph:
            ph.detail = f"{objects.result()} object(s)"
    for item in data["carried"]:
        if item["what"] == "unlogged tables":
            with report.phase("unlogged tables", item["database"]):
                for name in item["objects"]:
                    repl.copy_rows(old, new, item["database"], name, replace=True)
        if item["what"] == "materialized views":
            with report.phase("materialized views", item["database"]):
                switch.refresh_matviews(new, item["database"], item["objects"])


def _verify_sequences(old: Server, new: Server, dbs: list[str]) -> None:
    with ThreadPoolExecutor(2) as pool:  # both servers at once
        reads = [pool.submit(switch.sequence_values, server, dbs) for server in (old, new)]
        old_seq, new_seq = (read.result() for read in reads)
    # the old side's sequences: one the new extension version adds is not a difference
    if wrong := [k for k in sorted(old_seq) if new_seq.get(k) != old_seq[k]]:
        raise VerificationFailed(
            f"before the switch: the sequences differ: {', '.join(wrong[:8])}",
            "nothing was switched: the old server serves again; run the upgrade again",
        )


def _prepare_switch(side, image: str, old: Server, new: Server, data: dict, *, report: Report) -> None:
    """Before the pause, what does not need it: the reverse publication (it captures nothing without
    a slot), the reverse slots (they decode from now, and are moved to the switch point in the pause),
    a checkpoint on both servers (their shutdown in the hand-over is then short), and, where the
    runtime can, the container that becomes NAME created (not started)."""
    with report.phase("prepare switch", "reverse publication and slots, checkpoints, the new container"):
        for db, tables in data["replicated"].items():
            repl.create_publication(new, db, tables, repl.REVERSE_PUBLICATION)
            repl.create_slot(new, db, repl.sub_name("rev", db))
        # the slots' decoding in the pause starts from here, whenever they were made
        switch.advance_slots(new, _reverse_slots(data), switch.current_lsn(new))
        with ThreadPoolExecutor(2) as pool:
            for done in [pool.submit(switch.checkpoint, old), pool.submit(switch.checkpoint, new)]:
                done.result()
        side.prepare_hand_over(image)


def _reverse_slots(data: dict) -> dict[str, str]:
    return {db: repl.sub_name("rev", db) for db in data["replicated"]}


def _drop_forward(new: Server, data: dict) -> None:
    """In the pause, everything caught up and proved: the forward subscriptions go, with their slots
    on the old server (DROP SUBSCRIPTION reaches it: it must still run)."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:  # one database's drop does not wait for another's
        list(
            pool.map(lambda db: repl.drop_subscription(new, db, repl.sub_name("fwd", db)), data["replicated"])
        )
    logger.info("forward subscriptions dropped %.3f s", time.monotonic() - t0)


def _reverse_slots_at_switch(new: Server, data: dict) -> None:
    """In the pause, the forward subscriptions dropped: each reverse slot is moved to the new server's
    WAL position: what it would send from there on is what clients write on the new server; what the
    forward stream applied before is behind it, never sent back. The slot positions are made durable
    (CHECKPOINT) before the hand-over, as a new slot's would be."""
    t1 = time.monotonic()
    slots = _reverse_slots(data)
    for db, slot in slots.items():
        repl.create_slot(new, db, slot)  # made at prepare, unless a resumed run lost the new container
    switch.advance_slots(new, slots, switch.current_lsn(new))
    t2 = time.monotonic()
    switch.checkpoint(new)
    logger.info("reverse slots: advanced %.3f s, checkpoint %.3f s", t2 - t1, time.monotonic() - t2)


def finish_hand_over(side, image: str, *, report: Report, state: RunState) -> dict:
    """A run stopped inside the switch after the proof: finish the hand-over (it checks what is done),
    then go on as the run would have. With `--verify-after` the new server still starts read-only,
    so its snapshots are exported before its first client write, as in an uninterrupted run."""
    data = {**state.data["plan"], "verify_in_pause": state.data.get("verify_in_pause", True)}
    report.down()
    with report.phase("hand-over", "finishing the one an interrupted run began"):
        side.hand_over(image)
    started = time.monotonic() - max(0.0, time.time() - state.data.get("pause_started", time.time()))
    return _serve(side, image, data, report=report, state=state, pause_start=started)


def _serve(side, image: str, data: dict, *, report: Report, state: RunState, pause_start: float) -> dict:
    """After the hand-over: the pause ends (with `--verify-after` once the new server's snapshots are
    exported), the run is recorded as switched, the reverse replication starts."""
    dbs = data["databases"]
    verify_after = not data.get("verify_in_pause", True)
    proof: dict = state.data.get("proof") or {}
    held, snapshots, serving = ExitStack(), {}, None
    if verify_after:  # the new side as it was at the switch, before its first client write
        serving = side.server(side.name, "new server")
        snapshots = held.enter_context(switch.exported_snapshots(serving, dbs))
        switch.resume_writes(serving)
    pause = time.monotonic() - pause_start
    logger.info("write pause ends at monotonic %.3f", time.monotonic())
    report.up()
    state.save(phase="switched", pause_seconds=round(pause, 3), proof=proof, switched=time.time())
    faults.point("logical-switched")
    side.after_hand_over()  # out of the pause: what the hand-over left for later (Docker: its network)
    with held:
        if verify_after:
            proof = _reverse_verified(side, data, serving, snapshots, report=report)
            state.save(proof=proof)
        else:
            with report.phase(
                "reverse replication", "new -> old, so that rollback keeps the writes made after"
            ):
                reverse(side, data)
    standbys = reseed_standbys(side, image, report=report, state=state)
    report.result(f"write pause {pause:.2f} s; `{side.command('rollback')}` goes back with every "
                  f"write, `{side.command('finalize')}` removes the old cluster")  # fmt: skip
    return {"strategy": "logical", "phase": "switched", "pause_seconds": round(pause, 3), "proof": proof,
            "container": side.name, "target_image": image, "standbys": standbys,
            "phases": [{"name": p.name, "seconds": round(p.seconds, 3)} for p in report.phases]}  # fmt: skip


def _reverse_verified(side, data: dict, serving: Server, snapshots: dict, *, report: Report) -> dict:
    """`--verify-after`: the old cluster, before its reverse subscription applies anything, against the
    new one read at the snapshots exported before its first client write: both are the state at the
    switch. The reverse subscription starts whatever the result (its slot has kept every write since),
    so a difference is exit 4 with the old cluster following: rollback loses nothing."""
    with report.phase("start old cluster", "for the reverse replication (not yet following)"):
        blue = side.start_blue()
    failed: VerificationFailed | None = None
    proof: dict = {}
    with report.phase("verify after the switch", "new (at the switch) and old, while clients write") as ph:
        try:
            proof = verify_sides(serving, blue, data["databases"], "after the switch", sequences=False,
                            snapshots=snapshots)  # fmt: skip
            ph.detail = _proof_text(proof)
        except VerificationFailed as error:
            failed = error
    with report.phase("reverse replication", "new -> old, so that rollback keeps the writes made after"):
        reverse(side, data, blue)
    if failed:
        raise VerificationFailed(
            failed.message,
            "the new cluster serves and the old one receives every write through the reverse replication: "
            f"`{side.command('rollback')}` goes back losing nothing",
        ) from failed
    return proof


def reverse(side, data: dict, blue: Server | None = None) -> None:
    blue = blue or side.start_blue()
    new_ip = side.ip(side.name)
    for db in data["replicated"]:
        info = repl.conninfo(new_ip, 5432, blue.user, blue.password, db)
        name = repl.sub_name("rev", db)
        repl.create_subscription(blue, db, name, info, repl.REVERSE_PUBLICATION, copy_data=False, slot=name)
