"""A primary with a real streaming standby: after the upgrade the standby streams from the new primary."""

from __future__ import annotations

import secrets
import time
import uuid

import pytest

from toolkit.core.report import Report
from toolkit.db import verify
from toolkit.db.sql import Server
from toolkit.docker import images
from toolkit.docker.target import DockerTarget
from toolkit.engine import runner as engine
from toolkit.engine import undo
from toolkit.engine.state import RunState

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPLICATION_HBA = '#!/bin/bash\necho "host replication all all md5" >> "$PGDATA/pg_hba.conf"\n'


@pytest.fixture
def pair(runtime, image_names, tmp_path, request):
    """(primary, standby) containers on a user network, the standby made by pg_basebackup -R."""
    tag = request.param
    rt, image = runtime, image_names[tag]
    suffix = uuid.uuid4().hex[:6]
    net = rt.docker.networks.create(f"pgleap-test-net-{suffix}")
    primary, standby = f"pgleap-test-primary-{suffix}", f"pgleap-test-standby-{suffix}"
    password = secrets.token_urlsafe(12)
    hba = tmp_path / "90_replication.sh"
    hba.write_text(REPLICATION_HBA)
    hba.chmod(0o755)
    mount = images.spec_for(tag).volume_dir
    env = {"POSTGRES_USER": "gis", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "gis"}
    created = [primary, standby, f"{primary}-pgleap-old", f"{standby}-pgleap-old"]
    volumes = [primary, standby]
    try:
        for v in volumes:
            rt.docker.volumes.create(v)
        rt.docker.containers.run(
            image, name=primary, detach=True, environment=env, network=net.name,
            volumes={primary: {"bind": mount, "mode": "rw"},
                     str(hba): {"bind": "/docker-entrypoint-initdb.d/90_replication.sh", "mode": "ro"}},
        )  # fmt: skip
        rt.wait_accepting(primary, "gis", password, timeout=180)
        from toolkit.db.seed import seed

        seed(rt.live_server(rt.source_container(primary)), "gis", rows=400, polygons=40)
        rt.docker.containers.run(
            image, ["bash", "-c", f"pg_basebackup -h {primary} -U gis -D {mount}/standby -R -X stream -c fast && "
                                  f"mv {mount}/standby/* {mount}/ && rmdir {mount}/standby && chmod 0700 {mount}"],
            entrypoint=[], user="postgres", environment={"PGPASSWORD": password}, network=net.name,
            volumes={standby: {"bind": mount, "mode": "rw"}}, remove=True,
        )  # fmt: skip
        rt.docker.containers.run(
            image, name=standby, detach=True, environment=env, network=net.name,
            volumes={standby: {"bind": mount, "mode": "rw"}},
        )  # fmt: skip
        rt.wait_accepting(standby, "gis", password, timeout=120)
        yield rt, primary, standby, password
    finally:
        for name in created:
            rt.remove(name)
        for v in volumes:
            rt.remove_volume(v)
        rt.remove_volume(f"pgleap-old-binaries-{primary}")
        net.remove()


def _server(rt, name, password) -> Server:
    c = rt.docker.containers.get(name)
    ip = next(n["IPAddress"] for n in c.attrs["NetworkSettings"]["Networks"].values() if n["IPAddress"])
    return Server(ip, 5432, "gis", password, label=name)


@pytest.mark.parametrize(("pair", "to_tag"), [("15-3.3", "17-3.5"), ("13-3.1", "18-3.x")], indirect=["pair"])
def test_standby_is_reseeded_and_streams_from_the_new_primary(pair, image_names, to_tag):
    rt, primary, standby, password = pair
    assert _server(rt, standby, password).query("gis", "SELECT pg_is_in_recovery()") == [(True,)]
    target = DockerTarget(rt, container=primary)
    state = RunState(target.key)
    result = engine.upgrade(target, image_names[to_tag], report=Report(quiet=True), state=state)
    assert result["replicas_planned"] == [standby]  # found through pg_stat_replication
    assert result["status"] == "upgraded"
    info = result["replicas"][0]
    assert info["replica"] == standby

    # The standby runs the new image, in recovery, streaming from the new primary.
    assert rt.docker.containers.get(standby).attrs["Config"]["Image"] == image_names[to_tag]
    new_primary, new_standby = _server(rt, primary, password), _server(rt, standby, password)
    assert new_standby.query("gis", "SELECT pg_is_in_recovery()") == [(True,)]
    rows = new_primary.query("postgres", "SELECT state FROM pg_stat_replication")
    assert rows == [("streaming",)]
    major = images.spec_for(to_tag).pg
    assert int(new_standby.query("gis", "SHOW server_version_num")[0][0]) // 10000 == major

    # A row written on the primary appears on the standby.
    marker = uuid.uuid4().hex
    with new_primary.connect("gis") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS replica_probe (v text)")
        conn.execute("INSERT INTO replica_probe VALUES (%s)", (marker,))
    deadline = time.monotonic() + 30
    while new_standby.query("gis", "SELECT count(*) FROM pg_class WHERE relname = 'replica_probe'")[0][0] == 0 or \
            new_standby.query("gis", "SELECT count(*) FROM replica_probe WHERE v = %s", (marker,))[0][0] == 0:  # fmt: skip
        assert time.monotonic() < deadline, "the row never reached the standby"
        time.sleep(0.2)
    assert verify.compare(verify.fingerprint(new_primary), verify.fingerprint(new_standby)).identical

    # finalize removes both old containers and the old data on both volumes.
    undo.finalize(target, report=Report(quiet=True), state=RunState(target.key))
    assert not rt.exists(f"{standby}-pgleap-old") and not rt.exists(f"{primary}-pgleap-old")
