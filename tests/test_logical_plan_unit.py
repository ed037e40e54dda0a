"""The plan of `--strategy logical` (toolkit/core/logical_plan.py): what it refuses, what it carries how."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.core.logical_plan import LogicalFacts, plan_logical
from toolkit.db import logical as repl
from toolkit.db import logical_switch as switch
from toolkit.db.sql import Server
from toolkit.engine.logical_pause import HANDING_OVER
from toolkit.engine.state import RunState
from toolkit.errors import PgleapError, VerificationFailed

FACTS = LogicalFacts(
    server_major=13,
    wal_level="logical",
    max_replication_slots=10,
    max_wal_senders=10,
    slots_in_use=0,
    senders_in_use=0,
    databases=["gis", "analytics", "postgres"],
    tables={"gis": ["public.places", "public.tracks_2024"], "analytics": ["public.regions"], "postgres": []},
    no_identity={"gis": [], "analytics": [], "postgres": []},
    unlogged={"gis": ["public.cache"]},
    matviews={"gis": ["public.place_counts"]},
    large_objects={"gis": 0, "analytics": 0, "postgres": 0},
    extension_config={"gis": ["public.spatial_ref_sys", "topology.layer", "topology.topology"]},
)


def _plan(facts=FACTS, **options):
    return plan_logical(facts, source="db", target_image="pgleap/postgis:17-3.5", target_major=17, **options)


def _checks(plan) -> set[str]:
    return {r.check for r in plan.refusals}


def test_a_ready_cluster_is_not_refused_and_says_how_each_kind_is_carried():
    plan = _plan()
    assert plan.refusals == []
    assert plan.subscriptions == 2  # databases without tables get no subscription
    assert set(plan.replicated) == {"gis", "analytics"}
    how = {(c["what"], c["database"]): c["how"] for c in plan.carried}
    assert "write pause" in how[("unlogged tables", "gis")]
    assert "refreshed" in how[("materialized views", "gis")]
    assert "not published" in how[("extension-owned tables", "gis")]
    assert "write pause" in how[("sequences", "*")]
    assert plan.to_dict()["strategy"] == "logical"


def test_standbys_are_listed_in_the_plan_with_how_they_are_carried():
    assert _plan().standbys == [] and "standbys" not in {c["what"] for c in _plan().carried}
    plan = _plan(standbys=["db-standby"])
    assert plan.refusals == [] and plan.to_dict()["standbys"] == ["db-standby"]
    item = next(c for c in plan.carried if c["what"] == "standbys")
    assert item["objects"] == ["db-standby"] and "re-seeded from the new primary" in item["how"]


def test_standbys_are_reseeded_after_the_switch_once_and_a_resume_does_only_the_rest(monkeypatch, tmp_path):
    from toolkit.core.report import Report
    from toolkit.engine import logical as engine
    from toolkit.errors import Refused

    calls: list[str] = []
    result, state = _switch(monkeypatch, tmp_path, calls, verify_after=False, standbys=("sb1", "sb2"))
    assert calls.index("hand over") < calls.index("reseed sb1") < calls.index("reseed sb2")
    assert [s["replica"] for s in result["standbys"]] == ["sb1", "sb2"]
    assert state.data["standbys_reseeded"] == ["sb1", "sb2"] == state.data["standbys_touched"]
    state.save(standbys_reseeded=["sb1"], target_image="img")  # as if stopped in the second re-seed
    calls.clear()
    resumed = engine.upgrade(_Side(calls), "img", report=Report(quiet=True), state=state)
    assert calls == ["reseed sb2"] and [s["replica"] for s in resumed["standbys"]] == ["sb2"]
    with pytest.raises(Refused, match="already switched"):  # nothing left: a switched run
        engine.upgrade(_Side(calls), "img", report=Report(quiet=True), state=state)


def test_wal_level_is_refused_unless_the_restart_is_allowed():
    facts = dataclasses.replace(FACTS, wal_level="replica")
    assert _checks(_plan(facts)) == {"wal_level"}
    plan = _plan(facts, restart_for_wal_level=True)
    assert plan.refusals == [] and plan.restart_for_wal_level


def test_tables_without_identity_are_listed_then_refused_or_made_full_with_consent():
    facts = dataclasses.replace(FACTS, no_identity={"gis": ["public.notes"], "analytics": []})
    refused = _plan(facts)
    assert _checks(refused) == {"replica_identity"}
    assert "gis: public.notes" in refused.refusals[0].message
    assert "--replica-identity-full" in refused.refusals[0].hint
    consented = _plan(facts, replica_identity_full=True)
    assert consented.refusals == [] and consented.identity_full == {"gis": ["public.notes"]}


def test_too_few_slots_or_senders_are_refused_with_the_number_needed():
    facts = dataclasses.replace(FACTS, max_replication_slots=4, slots_in_use=1)
    plan = _plan(facts)
    assert _checks(plan) == {"slots"}
    assert "need 4" in plan.refusals[0].message and "at least 5" in plan.refusals[0].hint


def test_large_objects_are_carried_in_the_pause_and_a_same_or_older_major_is_refused():
    plan = _plan(dataclasses.replace(FACTS, large_objects={"gis": 3}))
    assert not plan.refusals
    large = [c for c in plan.carried if c["what"] == "large objects"]
    assert [(c["database"], c["objects"]) for c in large] == [("gis", ["3 object(s)"])]
    assert "write pause" in large[0]["how"]
    assert _checks(plan_logical(FACTS, source="db", target_image="x", target_major=13)) == {"major"}


def test_md5_password_roles_are_refused_by_name_with_the_rehash():
    """The new image's pg_hba.conf asks for scram-sha-256: a role carried with an md5 hash could not
    log in after the switch. The plan names them and says how to re-hash on the old server."""
    plan = _plan(dataclasses.replace(FACTS, md5_roles=["app", "report"]))
    assert _checks(plan) == {"md5_passwords"}
    assert "app, report" in plan.refusals[0].message
    assert "password_encryption = 'scram-sha-256'" in plan.refusals[0].hint
    assert "ALTER ROLE" in plan.refusals[0].hint
    # read from pg_authid: login roles only, pgleap's own superuser gets the environment's password
    assert "left(rolpassword, 3) = 'md5'" in repl.MD5_ROLES and "rolcanlogin" in repl.MD5_ROLES
    assert "current_user" in repl.MD5_ROLES


def test_publications_list_tables_never_all_tables():
    """FOR ALL TABLES would publish spatial_ref_sys, which the new PostGIS already fills (a duplicate
    key in the initial copy): the queries keep extension-owned tables out."""
    assert "deptype = 'e'" in repl.TABLES and "NOT EXISTS" in repl.TABLES
    assert "relpersistence = 'p'" in repl.TABLES  # unlogged tables are copied in the pause instead


def test_conninfo_quotes_values():
    info = repl.conninfo("10.0.0.2", 5432, "gis", "pa ss'w\\d", "my db")
    assert "password='pa ss\\'w\\\\d'" in info and "dbname='my db'" in info


@pytest.mark.parametrize("value", ["bogus", "LOGICAL"])
def test_an_unknown_strategy_is_a_usage_error(value):
    result = CliRunner().invoke(app, ["upgrade", "docker", "-c", "db", "--to", "x", "--strategy", value])
    assert result.exit_code == 2
    assert "--strategy" in result.output


@pytest.mark.parametrize(
    "flag", ["--verify-after", "--restart-for-wal-level", "--replica-identity-full", "--sync-timeout=3600"]
)
def test_logical_flags_without_the_logical_strategy_are_a_usage_error(flag):
    """Not silently ignored by an in-place upgrade (checked before any Docker call)."""
    result = CliRunner().invoke(app, ["upgrade", "docker", "-c", "db", "--to", "x", flag])
    assert result.exit_code == 2
    assert "only with --strategy logical" in result.output and flag.split("=")[0] in result.output


@pytest.mark.parametrize(("given", "passed"), [([], None), (["--sync-timeout", "7200"], 7200.0)])
def test_sync_timeout_reaches_the_engine(monkeypatch, given, passed):
    """--sync-timeout is the engine's sync_timeout; without it the engine's default (900 s) holds."""
    from toolkit.cli import logical
    from toolkit.engine import logical as engine

    seen: dict = {}
    monkeypatch.setattr(logical, "_side", lambda container: (object(), "docker-unit"))
    monkeypatch.setattr(engine, "upgrade", lambda side, to, **kw: seen.update(kw) or {"phase": "switched"})
    args = ["upgrade", "docker", "-c", "db", "--to", "x", "--strategy", "logical", "-y", *given]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen.get("sync_timeout") == passed


def test_sync_timeout_must_be_positive():
    args = ["upgrade", "docker", "-c", "db", "--to", "x", "--strategy", "logical", "--sync-timeout", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--sync-timeout" in result.output


def test_logical_needs_a_container_not_a_bare_volume():
    result = CliRunner().invoke(
        app, ["upgrade", "docker", "--volume", "v", "--from", "x", "--to", "y", "--strategy", "logical"]
    )
    assert result.exit_code == 2
    assert "--container" in result.output


class _Side:
    """The runtime side of the switch, recording what happens in which order (no containers)."""

    name, next_name, blue_name = "db", "db-pgleap-next", "db-pgleap-blue"

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def server(self, name: str, label: str):
        return Server("127.0.0.1", 1, "gis", "x", label=name)

    def ip(self, name: str) -> str:
        return "10.0.0.9"

    def command(self, verb: str) -> str:
        return f"pgleap {verb} docker -c {self.name}"

    def prepare_hand_over(self, image: str) -> None:
        self.calls.append("prepare hand over")

    def hand_over(self, image: str) -> None:
        self.calls.append("hand over")

    def after_hand_over(self) -> None:
        self.calls.append("after hand over")

    def start_blue(self):
        self.calls.append("start blue")
        return self.server(self.blue_name, "blue")

    def reseed_standby(self, name: str, image: str) -> dict:
        self.calls.append(f"reseed {name}")
        return {"replica": name, "slot": "s", "seconds": 1.0, "lag_bytes": 0}


def _switch(
    monkeypatch,
    tmp_path,
    calls: list[str],
    *,
    verify_after: bool,
    verify_fails: bool = False,
    seqs=None,
    standbys=(),
):
    from toolkit.core.report import Report
    from toolkit.engine import logical_pause as pause
    from toolkit.engine.state import RunState

    monkeypatch.setenv("PGLEAP_STATE_DIR", str(tmp_path))
    for name in (
        "read_only_from_start",
        "pause_writes",
        "wait_caught_up",
        "copy_sequences",
        "copy_large_objects",
        "copy_rows",
        "refresh_matviews",
        "drop_subscription",
        "create_publication",
        "create_slot",
        "advance_slots",
        "checkpoint",
        "current_lsn",
        "resume_writes",
        "create_subscription",
    ):
        module = switch if hasattr(switch, name) else repl
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: calls.append(_n) or 0)  # fmt: skip
    monkeypatch.setattr(repl, "catalog_hash", lambda *a: "h")
    values = iter(seqs or [{"gis: public.s": (5, True)}] * 2)
    monkeypatch.setattr(
        switch, "sequence_values", lambda server, dbs: calls.append("sequences") or next(values)
    )

    @contextlib.contextmanager
    def exported(server, dbs):
        calls.append(f"export snapshots on {server.label}")
        try:
            yield {"gis": "00000003-1"}
        finally:
            calls.append("snapshots released")

    monkeypatch.setattr(switch, "exported_snapshots", exported)

    def verify(a, b, dbs, what, hint="", sequences=True, snapshots=None):
        at = f" at {snapshots['gis']}" if snapshots else ""
        calls.append(
            f"verify {what} on {a.label}{at}/{b.label}" + ("" if sequences else " without sequences")
        )
        if verify_fails:
            raise VerificationFailed("differ")
        return {"tables": 1, "rows": 1, "sequences": 1}

    monkeypatch.setattr(pause, "verify_sides", verify)
    monkeypatch.setattr(pause.time, "sleep", lambda s: None)
    data = _plan(verify_after=verify_after, standbys=standbys).to_dict()
    state = RunState("docker-unit")
    state.save(strategy="logical", phase="synced", plan=data, catalog="h")
    side = _Side(calls)
    old, new = side.server("db", "old"), side.server(side.next_name, "new")
    return pause.switch_over(
        side, "img", old, new, data, report=Report(quiet=True), state=state, drain=0
    ), state


def test_verify_in_the_pause_by_default_then_hand_over(monkeypatch, tmp_path):
    calls: list[str] = []
    _switch(monkeypatch, tmp_path, calls, verify_after=False)
    assert calls.index("verify before the switch on db/db-pgleap-next") < calls.index("hand over")
    assert not [c for c in calls if "after the switch" in c]


def test_verify_after_moves_the_proof_behind_the_switch_and_the_reverse_replication(monkeypatch, tmp_path):
    calls: list[str] = []
    result, state = _switch(monkeypatch, tmp_path, calls, verify_after=True)
    verify = calls.index("verify after the switch on db at 00000003-1/db-pgleap-blue without sequences")
    assert calls.index("sequences") < calls.index("hand over")  # the cheap half stays in the pause
    # the new server starts read-only; its snapshots are taken before it takes writes
    assert (
        calls.index("read_only_from_start") < calls.index("hand over") < calls.index("export snapshots on db")
    )
    pause_end = len(calls) - calls[::-1].index("resume_writes") - 1
    assert calls.index("export snapshots on db") < pause_end
    # what the hand-over leaves for later (Docker: leaving pgleap's network) is out of the pause
    assert pause_end < calls.index("after hand over") < calls.index("start blue")
    # the old cluster is read before its reverse subscription applies anything, and follows after
    assert (
        calls.index("start blue")
        < verify
        < calls.index("create_subscription")
        < calls.index("snapshots released")
    )
    assert not [c for c in calls if "before the switch" in c]  # the pause reads no rows
    assert result["proof"]["rows"] == 1 and state.data["proof"]["rows"] == 1


def test_a_difference_after_the_switch_is_exit_4_with_the_old_cluster_still_following(monkeypatch, tmp_path):
    calls: list[str] = []
    with pytest.raises(VerificationFailed) as failed:
        _switch(monkeypatch, tmp_path, calls, verify_after=True, verify_fails=True)
    assert failed.value.exit_code == 4 and "rollback docker -c db" in failed.value.hint
    verify = calls.index("verify after the switch on db at 00000003-1/db-pgleap-blue without sequences")
    assert verify < calls.index("create_subscription")  # the old cluster follows although the proof failed
    state = RunState("docker-unit")
    assert state.phase == "switched"  # rollback takes every write back; nothing dropped the reverse side
    assert "drop_subscription" not in calls[calls.index("start blue") :]
    assert calls[-1] == "snapshots released"


def test_verify_after_still_checks_the_sequences_in_the_pause(monkeypatch, tmp_path):
    """After the switch the new side's sequences advance and the old side's do not (logical replication
    does not carry them): they are proved in the pause, where reading them costs no table scan."""
    calls: list[str] = []
    differ = [{"gis: public.s": (5, True)}, {"gis: public.s": (1, False)}]
    with pytest.raises(VerificationFailed) as failed:
        _switch(monkeypatch, tmp_path, calls, verify_after=True, seqs=differ)
    assert failed.value.exit_code == 4 and "gis: public.s" in failed.value.message
    assert "hand over" not in calls and calls[-1] == "resume_writes"  # the old server serves again


def test_the_proof_after_the_switch_leaves_sequences_out_but_not_rows(monkeypatch):
    """The new side's sequences advance with its writes; the old side's are not replicated."""
    from toolkit.db.verify import Fingerprint
    from toolkit.engine import logical_pause as pause

    def fp(rows: int, seq: int) -> Fingerprint:
        return Fingerprint(
            tables={"gis": {"public.t": (rows, "h")}, "analytics": {}},
            extension_tables={"gis": {}, "analytics": {}},
            sequences={"gis": {"public.t_id_seq": (seq, True)}, "analytics": {}},
        )

    sides = {"new": (3, 9), "old": (3, 3)}  # read afresh each time, as the real one
    monkeypatch.setattr(pause, "fingerprint", lambda server, dbs, snapshots=None: fp(*sides[server.label]))
    new, old = Server("h", 1, "u", "p", label="new"), Server("h", 1, "u", "p", label="old")
    assert pause.verify_sides(new, old, ["gis", "analytics"], "after", sequences=False)["rows"] == 3
    with pytest.raises(VerificationFailed, match="sequence"):
        pause.verify_sides(new, old, ["gis", "analytics"], "in the pause")
    sides["new"] = (4, 9)
    with pytest.raises(VerificationFailed, match=r"public\.t "):
        pause.verify_sides(new, old, ["gis", "analytics"], "after", sequences=False)


def test_a_failure_at_the_paused_point_resumes_writes_on_the_old_server(monkeypatch, tmp_path):
    monkeypatch.setenv("PGLEAP_FAIL", "logical-paused")
    calls: list[str] = []
    with pytest.raises(PgleapError, match="logical-paused"):
        _switch(monkeypatch, tmp_path, calls, verify_after=False)
    assert calls[-1] == "resume_writes" and "hand over" not in calls


def test_a_run_stopped_after_the_hand_over_is_finished_with_the_snapshots_before_writes(
    monkeypatch, tmp_path
):
    """The gap of the first version: stopped between the hand-over and the snapshot export, the new
    server stayed read-only. Recorded as handing-over, the next run finishes the hand-over, exports
    the snapshots, then lets writes in, and records the switch."""
    from toolkit.core.report import Report
    from toolkit.engine import logical as engine

    monkeypatch.setenv("PGLEAP_FAIL", "logical-handed-over")
    calls: list[str] = []
    with pytest.raises(PgleapError, match="logical-handed-over"):
        _switch(monkeypatch, tmp_path, calls, verify_after=True)
    state = RunState("docker-unit")
    assert state.phase == HANDING_OVER and state.data["verify_in_pause"] is False
    monkeypatch.delenv("PGLEAP_FAIL")
    calls.clear()
    state.save(target_image="img")
    result = engine.upgrade(_Side(calls), "ignored", report=Report(quiet=True), state=state)
    assert calls.index("hand over") < calls.index("export snapshots on db") < calls.index("resume_writes")
    assert result["phase"] == "switched" and RunState("docker-unit").phase == "switched"
    assert "create_subscription" in calls  # the reverse replication started


def test_reverse_slots_are_made_before_the_pause_and_moved_to_the_switch_point_in_it(monkeypatch, tmp_path):
    """The reverse publication and slots cost nothing in the pause; the slots' move to the switch point
    comes after the forward subscription is gone and before the new server reaches any client."""
    calls: list[str] = []
    _switch(monkeypatch, tmp_path, calls, verify_after=True)
    paused = calls.index("pause_writes")
    assert (
        calls.index("create_publication") < calls.index("create_slot") < calls.index("advance_slots") < paused
    )
    moved = len(calls) - calls[::-1].index("advance_slots") - 1
    assert paused < calls.index("wait_caught_up") < calls.index("drop_subscription") < moved
    assert moved < calls.index("checkpoint", moved) < calls.index("hand over")
    assert "create_publication" not in calls[paused:]
    assert calls.index("prepare hand over") < paused  # the container that becomes NAME, made ahead
