"""Preflight on a real server: what pg_upgrade would fail on is refused while the database still
serves (exit 3, every object named, nothing stopped), and what only pg_upgrade can see is
reported with its real error.

One 13 container hosts every bad object (postfix operators exist only before 14): aclitem in a
table and behind a domain, a postfix operator, a polymorphic aggregate on array_append, a
user encoding conversion, an inheritance child with a generated column its parent lacks, and a
C function whose library the running container has but the image lacks.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from toolkit.docker.refs import VolumeRef
from toolkit.errors import EXIT_FAILED, EXIT_REFUSED

pytestmark = pytest.mark.docker

GENERATED_CHILD = (
    "CREATE TABLE gtest_normal (a int, b int)",
    "CREATE TABLE gtest_normal_child (a int, b int GENERATED ALWAYS AS (a * 2) STORED) INHERITS (gtest_normal)",
    "INSERT INTO gtest_normal_child (a) VALUES (2)",
)
BAD_OBJECTS = (
    "CREATE TABLE acl_holder (id int, perms aclitem)",
    "INSERT INTO acl_holder VALUES (1, 'gis=r/gis')",
    "CREATE DOMAIN acl_domain AS aclitem[]",
    "CREATE TABLE acl_wrapped (id int, perms acl_domain)",
    "CREATE FUNCTION fact(bigint) RETURNS numeric LANGUAGE sql AS 'SELECT 1::numeric'",
    "CREATE OPERATOR !!! (LEFTARG = bigint, PROCEDURE = fact)",
    "CREATE AGGREGATE array_accum (anyelement) (sfunc = array_append, stype = anyarray, initcond = '{}')",
    "CREATE CONVERSION my_latin1 FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8",
    *GENERATED_CHILD,
    # The running container gets a library its image lacks (issue 13, run 1: regress.so).
    "CREATE FUNCTION normal_rand_x(int, float8, float8) RETURNS SETOF float8 "
    "AS '$libdir/pgleap_missing', 'normal_rand' LANGUAGE c",
)


def pgleap(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **(env or {})},
    )


def _run(db, statements) -> None:
    with db.server().connect(db.superuser) as conn:
        for statement in statements:
            conn.execute(statement)


def _started_at(runtime, name: str) -> tuple[bool, str]:
    c = runtime.docker.containers.get(name)
    return c.attrs["State"]["Running"], c.attrs["State"]["StartedAt"]


def _has_pgleap_dir(runtime, volume: str) -> bool:
    out = runtime.docker.containers.run(
        "debian:bookworm", ["bash", "-c", "if test -e /v/.pgleap; then echo yes; else echo no; fi"],
        volumes={volume: {"bind": "/v", "mode": "ro"}}, remove=True,
    )  # fmt: skip
    return "yes" in out.decode()


@pytest.fixture
def bad_13(runtime, old_db_factory):
    db = old_db_factory("13-3.1", seed_data=False)
    lib = "/usr/lib/postgresql/13/lib"
    c = runtime.docker.containers.get(db.name)
    code, out = c.exec_run(["cp", f"{lib}/tablefunc.so", f"{lib}/pgleap_missing.so"], user="root")
    assert code == 0, out
    _run(db, BAD_OBJECTS)
    return db


def test_preflight_refuses_before_the_stop_naming_every_object(runtime, image_names, bad_13):
    db = bad_13
    target = image_names["17-3.5"]
    before = _started_at(runtime, db.name)

    planned = pgleap("plan", "docker", "--container", db.name, "--to", target)
    proc = pgleap("upgrade", "docker", "--container", db.name, "--to", target, "--yes")

    for p in (planned, proc):
        text = " ".join(p.stderr.split())
        assert p.returncode == EXIT_REFUSED, p.stderr
        assert "Traceback" not in p.stderr
        assert "nothing was stopped" in text
        for name in (
            "public.acl_holder.perms",  # aclitem
            "public.acl_wrapped.perms",  # domain over aclitem[]
            "public.!!! (bigint, NONE)",  # postfix operator
            "aggregate array_accum(anyelement)",  # polymorphic aggregate on array_append
            "public.my_latin1",  # encoding conversion
            "public.gtest_normal_child.b (generated in the child only; parent public.gtest_normal)",
            "$libdir/pgleap_missing (used by gis: function normal_rand_x(integer,double precision,double precision))",
            "libraries missing from the old image",
            "libraries missing from the new image",
        ):
            assert name in text, (name, p.stderr)
        assert "DROP OPERATOR" in text and "what to do" in text
    # Nothing stopped, nothing written: the same postmaster serves, no pgleap folder, no scratch volume.
    assert _started_at(runtime, db.name) == before == (True, before[1])
    assert not _has_pgleap_dir(runtime, db.volume)
    assert not [v for v in runtime.docker.volumes.list() if v.name == f"pgleap-old-binaries-{db.volume}"]
    assert db.server().query(db.superuser, "SELECT count(*) FROM acl_holder") == [(1,)]

    # A stopped volume: the same checks run on pgleap's temporary old server (the image's files).
    runtime.stop_container(db.name)
    proc = pgleap("plan", "docker", "--volume", db.volume, "--from", image_names["13-3.1"], "--to", target)
    text = " ".join(proc.stderr.split())
    assert proc.returncode == EXIT_REFUSED, proc.stderr
    assert "public.gtest_normal_child.b" in text and "libraries missing from the old image" in text
    # (the temporary server itself writes its own start/stop, as for every plan of a stopped volume)
    assert not _has_pgleap_dir(runtime, db.volume)
    data = runtime.probe_data(image_names["13-3.1"], VolumeRef("volume", db.volume), "")
    assert data.cleanly_shut_down and data.pg_version == 13


def test_pg_upgrade_failure_reports_the_real_error(runtime, image_names, old_db_factory):
    """With the preflight check switched off (test-only), pg_upgrade meets the generated-column
    child in its schema restore: the message carries PostgreSQL's error, the table, the log."""
    db = old_db_factory("13-3.1", seed_data=False)
    _run(db, GENERATED_CHILD)
    skip = {"PGLEAP_TEST_SKIP_PREFLIGHT": "generated column differs between parent and inheritance child"}
    proc = pgleap(
        "upgrade", "docker", "--container", db.name, "--to", image_names["17-3.5"], "--yes", env=skip
    )
    text = " ".join(proc.stderr.split())
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert 'ERROR: column "b" in child table must not be a generated column' in text, proc.stderr
    assert "gtest_normal_child" in text
    assert "full log: .pgleap/failed-new-" in text and "on the data volume" in text
    assert "pgleap rehearse" in text
    assert "Traceback" not in proc.stderr
