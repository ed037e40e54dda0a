"""`pgleap rehearse docker` against a running database: production keeps running, the clone is upgraded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolkit.db import verify
from toolkit.db.sql import Server
from toolkit.errors import EXIT_REFUSED

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def pgleap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, timeout=900
    )


def test_rehearsal_needs_replication_access_then_upgrades_a_clone(runtime, image_names, old_db_factory):
    db = old_db_factory("15-3.3", rows=300)
    container = runtime.docker.containers.get(db.name)
    started_at = container.attrs["State"]["StartedAt"]
    before = db.fingerprint()
    args = ["rehearse", "docker", "--container", db.name, "--to", image_names["17-3.5"], "-o", "json"]

    # The official images have no `host replication` line: no-go, with the line to add.
    proc = pgleap(*args)
    assert proc.returncode == EXIT_REFUSED, proc.stderr
    result = json.loads(proc.stdout)
    assert result["verdict"] == "no-go"
    assert "host replication" in result["reason"] and "pg_reload_conf" in result["what_to_do"]

    container.exec_run(
        ["bash", "-c", 'echo "host replication all samenet scram-sha-256" >> "$PGDATA/pg_hba.conf"'],
        user="postgres",
    )
    with db.server().connect() as conn:
        conn.execute("SELECT pg_reload_conf()")

    proc = pgleap(*args, "--keep")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    kept = result["kept"]
    try:
        assert result["verdict"] == "go"
        assert result["fingerprint"]["before"] == result["fingerprint"]["after"]
        assert all(row["ok"] for row in result["health"])
        names = {p["name"] for p in result["phases"]}
        assert {"clone (pg_basebackup)", "pg_upgrade --link", "update extensions"} <= names
        assert result["predicted_downtime_seconds"] > 0
        postgis = next(e for e in result["extensions"] if e["extension"] == "postgis")
        assert postgis["before"].startswith("3.3") and postgis["after"].startswith("3.5")
        assert any("places_name_libc" in i for i in result["collation_indexes"])  # glibc 2.36 -> 2.41
        # production: untouched, never restarted
        container.reload()
        assert container.status == "running" and container.attrs["State"]["StartedAt"] == started_at
        assert container.attrs["Config"]["Image"] == image_names["15-3.3"]
        assert verify.compare(before, db.fingerprint()).identical
        # the clone: PostgreSQL 17 on a port, same data
        clone = Server("127.0.0.1", int(kept["port"]), db.superuser, db.password, label="clone")
        clone.wait_ready(30)
        with clone.connect(db.superuser) as conn:
            assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("17")
        assert verify.compare(before, verify.fingerprint(clone), include_extension_tables=False).identical
    finally:
        runtime.remove(kept["container"])
        runtime.remove_volume(kept["volume"])
