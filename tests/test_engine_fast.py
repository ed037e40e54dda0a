"""`--downtime minimal` end to end on Docker: only stop, pg_upgrade and restart inside the window.

Select these with `-m minimal_downtime`. Each test seeds a small old database,
runs the engine with downtime="minimal" and checks the world from outside: the
container runs the new image, PostGIS is the target's, the data is the same as
before (fingerprints taken by the test, not by pgleap), the health checks pass,
and the phases that ran while the database was down are exactly the three.
"""

from __future__ import annotations

import pytest

from toolkit.core.report import Report
from toolkit.db import verify
from toolkit.docker import images
from toolkit.docker.target import DockerTarget
from toolkit.engine import runner as engine
from toolkit.engine import undo
from toolkit.engine.state import RunState
from toolkit.errors import PgleapError, Refused

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.minimal_downtime]

IN_WINDOW = {"stop the database", "start the upgraded database"}


def _minimal(runtime, db, to_image: str, **kwargs):
    target = DockerTarget(runtime, container=db.name)
    state = RunState(target.key)
    result = engine.upgrade(
        target, to_image, downtime="minimal", report=Report(quiet=True), state=state, **kwargs
    )
    return target, state, result


def _assert_serving_and_same(runtime, db, to_tag, image_names, before, result):
    spec = images.spec_for(to_tag)
    assert result["status"] == "upgraded"
    assert result["downtime_mode"] == "minimal"
    assert "fingerprint" not in result  # minimal mode takes none; the test compares itself
    assert runtime.docker.containers.get(db.name).attrs["Config"]["Image"] == image_names[to_tag]
    with db.server().connect(db.superuser) as conn:
        assert int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000 == spec.pg
        assert "need upgrade" not in conn.execute("SELECT postgis_full_version()").fetchone()[0]
        assert conn.execute("SHOW data_directory").fetchone()[0] == spec.pgdata
    comparison = verify.compare(before, db.fingerprint(), include_extension_tables=False)
    assert comparison.identical, comparison.differences
    assert result["health"] and all(r["ok"] for r in result["health"]), result["health"]
    down = {p["name"] for p in result["phases"] if p["in_downtime"]}
    assert down - IN_WINDOW == {f"pg_upgrade --{result['plan']['mode']}"}
    assert result["downtime_seconds"] > 0
    phases = [p["name"] for p in result["phases"]]
    assert phases.index("prepare new cluster") < phases.index("stop the database")
    for after in ("update extensions", "statistics", "health checks"):
        assert phases.index(after) > phases.index("start the upgraded database")


def test_link_13_to_17_minimal(runtime, image_names, old_db_factory):
    db = old_db_factory("13-3.1", rows=2000)
    before = db.fingerprint()
    target, state, result = _minimal(runtime, db, image_names["17-3.5"])
    _assert_serving_and_same(runtime, db, "17-3.5", image_names, before, result)
    assert result["point_of_no_return"].startswith(
        "the first start of the new cluster"
    )  # said as on verified
    assert result["estimated_downtime_seconds"] < result["plan"]["estimated_downtime_seconds"]  # minimal's
    assert result["reindexed"]  # glibc 2.31 -> 2.41: text indexes rebuilt, concurrently, afterwards
    again = engine.upgrade(target, image_names["17-3.5"], report=Report(quiet=True), state=state)
    assert again["status"] == "already-done"
    undo.finalize(target, report=Report(quiet=True), state=state)
    assert not runtime.exists(f"{db.name}-pgleap-old")


def test_copy_15_to_17_minimal(runtime, image_names, old_db_factory):
    db = old_db_factory("15-3.3", rows=2000)
    before = db.fingerprint()
    _, _, result = _minimal(runtime, db, image_names["17-3.5"], mode="copy")
    _assert_serving_and_same(runtime, db, "17-3.5", image_names, before, result)
    assert "point_of_no_return" not in result  # copy: the old cluster stays until finalize


def test_resume_after_pg_upgrade_keeps_minimal(runtime, image_names, old_db_factory, monkeypatch):
    db = old_db_factory("13-3.1", rows=500)
    before = db.fingerprint()
    monkeypatch.setenv("PGLEAP_FAIL", "after-upgraded")
    with pytest.raises(PgleapError, match="injected"):
        _minimal(runtime, db, image_names["17-3.5"])
    monkeypatch.delenv("PGLEAP_FAIL")
    target = DockerTarget(runtime, saved=RunState(f"docker-{db.volume}").data["source"])
    state = RunState(target.key)
    assert state.data["downtime"] == "minimal"
    result = engine.upgrade(target, image_names["17-3.5"], report=Report(quiet=True), state=state)
    assert result["status"] == "upgraded"
    assert result["downtime_mode"] == "minimal"
    assert verify.compare(before, db.fingerprint(), include_extension_tables=False).identical


def test_bare_volume_is_refused_before_anything_changes(runtime, image_names, old_db_factory):
    db = old_db_factory("13-3.1", seed_data=False)
    runtime.stop_container(db.name)
    target = DockerTarget(runtime, volume=db.volume, source_image=image_names["13-3.1"])
    with pytest.raises(Refused, match="needs a container"):
        engine.upgrade(
            target,
            image_names["17-3.5"],
            downtime="minimal",
            report=Report(quiet=True),
            state=RunState(target.key),
        )
    assert not RunState(target.key).data
