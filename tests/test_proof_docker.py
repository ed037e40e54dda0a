"""The proof after extension updates: it must see what an extension update does to stored values.

PostGIS 3.6 widened TopoGeometry's id and the topology element domains from integer to
bigint without rewriting stored rows (FIELD-NOTES, correction of 2026-12-01). The seed has
TopoGeometry layers in two schemas and topoelement columns; these tests upgrade across that
change and read the values back field by field, and switch the repair off
(PGLEAP_TEST_SKIP_REPAIRS) to see each check fail.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.core.report import Report
from toolkit.db.canonical import table_hashes
from toolkit.docker.target import DockerTarget
from toolkit.engine import runner as engine
from toolkit.engine.state import RunState
from toolkit.errors import VerificationFailed

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TOPO_VALUES = [
    "SELECT id, (topo).topology_id, (topo).layer_id, (topo).id, (topo).type FROM city.streets ORDER BY 1",
    "SELECT id, (topo).topology_id, (topo).layer_id, (topo).id, (topo).type, "
    "topo_refs[1][1], topo_refs[2][1], first_ref[1], first_ref[2] FROM trails ORDER BY 1",
]


def topo_values(db) -> list[list[tuple]]:
    """Every TopoGeometry field and topology element, read through the catalog's types."""
    server = db.server()
    return [[tuple(int(v) for v in row) for row in server.query(db.superuser, q)] for q in TOPO_VALUES]


def _upgrade(runtime, db, image, **kwargs):
    target = DockerTarget(runtime, container=db.name)
    state = RunState(target.key)
    return target, state, engine.upgrade(target, image, report=Report(quiet=True), state=state, **kwargs)


def _resume(runtime, db, image, **kwargs):
    target = DockerTarget(runtime, saved=RunState(f"docker-{db.volume}").data["source"])
    return engine.upgrade(target, image, report=Report(quiet=True), state=RunState(target.key), **kwargs)


def test_canonical_fingerprint_sees_elements_that_text_output_hides(old_db_factory):
    """A catalog-only change of a domain's element type: `row::text` is unchanged, the values
    read through subscripts are not. The text-only hash misses it; the canonical one does not."""
    db = old_db_factory("13-3.1", seed_data=False)
    server = db.server()
    with server.connect(db.superuser) as conn:
        conn.execute("CREATE DOMAIN pairs AS integer[]")
        conn.execute("CREATE TABLE pairtab (id int PRIMARY KEY, p pairs)")
        conn.execute("INSERT INTO pairtab VALUES (1, '{1,3}'), (2, '{5,7}')")
        text_before = conn.execute("SELECT string_agg(t::text, ';' ORDER BY id) FROM pairtab t").fetchone()
        before = table_hashes(conn, only={"public.pairtab"})[0]
        # What PostGIS 3.6's update did to topoelement: the catalog says bigint[] now.
        conn.execute("UPDATE pg_type SET typbasetype = 'bigint[]'::regtype WHERE typname = 'pairs'")
        text_after = conn.execute("SELECT string_agg(t::text, ';' ORDER BY id) FROM pairtab t").fetchone()
        after = table_hashes(conn, only={"public.pairtab"})[0]
        assert conn.execute("SELECT p[1] FROM pairtab WHERE id = 1").fetchone()[0] != 1
    assert text_before == text_after  # text output cannot see it …
    assert before["public.pairtab"] != after["public.pairtab"]  # … the canonical form does


def test_verified_topology_trap_fails_without_repair_then_resume_repairs(runtime, image_names, old_db_factory,
                                                                         monkeypatch):  # fmt: skip
    """13 -> 18 (PostGIS 3.1 -> 3.7), default mode. Without the repair the check in the update's
    transaction names the column and exits 4 with that update rolled back; a resume repairs it
    and every value reads as it did on 13."""
    db = old_db_factory("13-3.1", rows=500)
    old_values = topo_values(db)
    monkeypatch.setenv("PGLEAP_TEST_SKIP_REPAIRS", "1")
    with pytest.raises(VerificationFailed, match=r"city\.streets\.topo") as failed:
        _upgrade(runtime, db, image_names["18-3.x"])
    assert failed.value.exit_code == 4
    monkeypatch.delenv("PGLEAP_TEST_SKIP_REPAIRS")
    result = _resume(runtime, db, image_names["18-3.x"])
    assert result["status"] == "upgraded"
    assert any("city.streets.topo" in r for r in result["trap_repairs"]), result["trap_repairs"]
    assert any("trails.first_ref" in r for r in result["trap_repairs"]), result["trap_repairs"]
    assert result["fingerprint_after_extensions"]["identical"]
    assert topo_values(db) == old_values
    # The expression index dropped around upstream's repair is back.
    assert db.server().query(db.superuser, "SELECT 1 FROM pg_indexes WHERE indexname = 'streets_lower_name'")


def test_proof_after_extensions_fails_when_repair_and_its_check_are_off(runtime, image_names, old_db_factory,
                                                                        monkeypatch):  # fmt: skip
    """15 -> 18 (PostGIS 3.3 -> 3.7), default mode, repair and in-transaction check both off: the
    full comparison after the extension updates must catch the corruption by itself (exit 4,
    nothing opened to clients); `resume --accept fingerprint` is the way forward that starts
    the upgraded database after the operator has read the differences."""
    db = old_db_factory("15-3.3", rows=500)
    monkeypatch.setenv("PGLEAP_TEST_SKIP_REPAIRS", "all")
    with pytest.raises(
        VerificationFailed, match=r"user data reads differently.*(city\.streets|public\.trails)"
    ):
        _upgrade(runtime, db, image_names["18-3.x"])
    assert runtime.docker.containers.get(db.name).status != "running"  # not opened to clients
    monkeypatch.delenv("PGLEAP_TEST_SKIP_REPAIRS")
    cli = CliRunner().invoke(app, ["resume", "docker", "--container", db.name, "--accept", "bogus"])
    assert cli.exit_code == 2
    cli = CliRunner().invoke(app, ["resume", "docker", "--container", db.name, "--accept", "fingerprint",
                                   "-o", "json"])  # fmt: skip
    assert cli.exit_code == 0, cli.output
    container = runtime.docker.containers.get(db.name)
    assert container.status == "running"
    assert container.attrs["Config"]["Image"] == image_names["18-3.x"]
    assert '"accepted"' in cli.output and '"fingerprint"' in cli.output


@pytest.mark.parametrize("old", ["13-3.1", "15-3.3"])
def test_minimal_downtime_topology_trap(runtime, image_names, old_db_factory, monkeypatch, old):
    """--downtime minimal to 18: the trap's columns are hashed before the update and after the
    repair in one transaction. Without the repair: exit 4 with the database serving and every
    value still reading right (the update was rolled back); a resume repairs. A pre-existing
    invalid index is reported as such, not counted against the upgrade."""
    db = old_db_factory(old, rows=500)
    with db.server().connect(db.superuser) as conn:
        # Invalid until every partition's index is attached; pg_dump (so pg_upgrade) keeps it so.
        # (An invalid index left by a failed CREATE INDEX CONCURRENTLY is not carried at all.)
        conn.execute("CREATE INDEX tracks_t_only ON ONLY tracks (t)")
    old_values = topo_values(db)
    monkeypatch.setenv("PGLEAP_TEST_SKIP_REPAIRS", "1")
    with pytest.raises(VerificationFailed, match=r"city\.streets\.topo"):
        _upgrade(runtime, db, image_names["18-3.x"], downtime="minimal")
    assert runtime.docker.containers.get(db.name).status == "running"
    assert topo_values(db) == old_values  # rolled back: still the old extension, values right
    monkeypatch.delenv("PGLEAP_TEST_SKIP_REPAIRS")
    result = _resume(runtime, db, image_names["18-3.x"])
    assert result["status"] == "upgraded"
    assert topo_values(db) == old_values
    health = {row["check"]: row for row in result["health"]}
    invalid = health[f"{db.superuser}: no new invalid indexes"]
    assert (
        invalid["ok"]
        and "already invalid before: " in invalid["detail"]
        and "tracks_t_only" in invalid["detail"]
    )
    assert all(row["ok"] for row in result["health"]), result["health"]
