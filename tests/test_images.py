"""The test images keep the official postgis/postgis contract (issue: real PostGIS test images).

Each image is started through testcontainers exactly as a user would start
postgis/postgis, then checked from outside over TCP with the password.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from testcontainers.core.container import DockerContainer

from toolkit.docker import images

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MATRIX = images.load_matrix()


def _connect(container: DockerContainer, password: str, dbname: str, user: str, timeout: float = 120):
    host, port = container.get_container_host_ip(), int(container.get_exposed_port(5432))
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            return psycopg.connect(
                host=host, port=port, user=user, password=password, dbname=dbname, autocommit=True
            )
        except psycopg.OperationalError as exc:
            last = exc
            time.sleep(0.3)
    raise AssertionError(f"no connection within {timeout} s: {last}")


@pytest.fixture(params=MATRIX, ids=[s.tag for s in MATRIX], scope="module")
def started(request, image_names, tmp_path_factory, docker_client):
    spec = request.param
    initdir = tmp_path_factory.mktemp(f"init-{spec.tag}")
    marker = initdir / "20_marker.sql"
    marker.write_text(
        "CREATE TABLE init_marker (ran_at timestamptz DEFAULT now()); INSERT INTO init_marker DEFAULT VALUES;\n"
    )
    marker.chmod(0o644)
    password = "s3cret-" + spec.tag
    container = (
        DockerContainer(image_names[spec.tag])
        .with_env("POSTGRES_PASSWORD", password)
        .with_env("POSTGRES_USER", "gis")
        .with_env("POSTGRES_DB", "gisdb")
        .with_exposed_ports(5432)
        .with_volume_mapping(str(marker), "/docker-entrypoint-initdb.d/20_marker.sql", "ro")
    )
    container.start()
    try:
        yield spec, container, password
    finally:
        container.stop()


def test_postgis_versions(started):
    spec, container, password = started
    with _connect(container, password, "gisdb", "gis") as conn:
        full = conn.execute("SELECT postgis_full_version()").fetchone()[0]
        version = conn.execute("SHOW server_version_num").fetchone()[0]
    assert int(version) // 10000 == spec.pg
    assert f'PGSQL="{spec.pg}0"' in full
    if spec.postgis != "3.x":
        assert f'POSTGIS="{spec.postgis}.' in full
    else:
        assert 'POSTGIS="3.' in full
    assert "need upgrade" not in full


def test_template_postgis_and_extensions(started):
    spec, container, password = started
    with _connect(container, password, "template_postgis", "gis") as conn:
        exts = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
    assert {"postgis", "postgis_topology", "fuzzystrmatch", "postgis_tiger_geocoder"} <= exts
    with _connect(container, password, "postgres", "gis") as conn:
        is_template = conn.execute(
            "SELECT datistemplate FROM pg_database WHERE datname = 'template_postgis'"
        ).fetchone()
    assert is_template == (True,)


def test_transform_raster_and_gist(started):
    spec, container, password = started
    with _connect(container, password, "gisdb", "gis") as conn:
        x, y = conn.execute(
            "SELECT ST_X(p), ST_Y(p) FROM ST_Transform(ST_SetSRID(ST_MakePoint(10, 50), 4326), 3857) AS p"
        ).fetchone()
        assert round(x) == 1113195 and round(y) == 6446276
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis_raster")
        value = conn.execute(
            "SELECT ST_Value(ST_AsRaster(ST_Buffer(ST_MakePoint(0, 0), 5), 10, 10, '8BUI', 7, 0), 5, 5)"
        ).fetchone()[0]
        assert value == 7
        conn.execute("DROP TABLE IF EXISTS pts")
        conn.execute(
            "CREATE TABLE pts AS SELECT g AS id, ST_SetSRID(ST_MakePoint(g % 1000, g / 1000), 4326) AS geom "
            "FROM generate_series(1, 50000) AS g"
        )
        conn.execute("CREATE INDEX pts_geom ON pts USING gist (geom)")
        conn.execute("ANALYZE pts")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT id FROM pts WHERE geom && ST_MakeEnvelope(1, 1, 3, 3, 4326)"
            )
        )
    assert "pts_geom" in plan, plan


def test_utf8_and_locale(started):
    spec, container, password = started
    with _connect(container, password, "gisdb", "gis") as conn:
        encoding, collate = conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database WHERE datname = 'gisdb'"
        ).fetchone()
        superuser = conn.execute("SELECT rolname FROM pg_authid WHERE oid = 10").fetchone()[0]
    assert encoding == "UTF8"
    assert collate.lower().replace("-", "") == "en_us.utf8"
    assert superuser == "gis"  # a non-default POSTGRES_USER is the bootstrap superuser


def test_wrong_password_is_rejected(started):
    spec, container, password = started
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=container.get_container_host_ip(), port=int(container.get_exposed_port(5432)),
            user="gis", password="wrong", dbname="gisdb", connect_timeout=5,
        )  # fmt: skip


def test_initdb_d_runs_once_and_stop_is_clean(started, docker_client):
    spec, container, password = started
    wrapped = container.get_wrapped_container()
    wrapped.stop(timeout=30)
    pgdata = spec.pgdata
    control = docker_client.containers.run(
        wrapped.image.id, ["pg_controldata", pgdata], entrypoint=[], user="postgres",
        volumes_from=[wrapped.id], remove=True,
    ).decode()  # fmt: skip
    assert "Database cluster state:               shut down" in control
    wrapped.start()
    wrapped.reload()
    # After a restart on the same data, the init script did not run again.
    host_port = wrapped.attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"]
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = psycopg.connect(
                host="localhost", port=int(host_port), user="gis", password=password, dbname="gisdb"
            )
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    with conn:
        assert conn.execute("SELECT count(*) FROM init_marker").fetchone()[0] == 1
