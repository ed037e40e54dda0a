"""Shared by the logical strategy's fault tests (test_logical_kill_docker.py: pgleap killed;
test_logical_container_kill_docker.py: a container killed): the run, and the two end states.

  (a) old: the container runs the OLD image, takes writes, fingerprint identical to the one before,
      no copy and no replication object left;
  (b) new: the container runs the NEW image, takes writes, fingerprint identical (extension-owned
      tables apart: PostGIS fills them itself).
"""

from __future__ import annotations

import json

from tests.faults.conftest import SOURCE, TARGET
from tests.faults.harness import fault_env, kill_pgleap_at, start
from toolkit.db import verify


def upgrade_args(db, image_names, verify_after: bool) -> list[str]:
    args = ["upgrade", "docker", "-c", db.name, "--to", image_names[TARGET], "--strategy", "logical",
            "--restart-for-wal-level", "--replica-identity-full", "-y", "-o", "json"]  # fmt: skip
    return [*args, "--verify-after"] if verify_after else args


def kill_at(runtime, db, image_names, tmp_path, point: str, verify_after: bool) -> None:
    run = start(*upgrade_args(db, image_names, verify_after), env=fault_env(point, tmp_path))
    kill_pgleap_at(runtime, run, f"docker-{db.volume}", point)


def ok(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def writable(server) -> bool:
    return server.query("postgres", "SHOW default_transaction_read_only")[0][0] == "off"


def replication_objects(server) -> list:
    """Slots and publications: none may be left once a run is rolled back or finalized."""
    found = server.query("postgres", "SELECT slot_name FROM pg_replication_slots")
    for name in server.databases():
        found += server.query(name, "SELECT pubname FROM pg_publication")
        found += server.query(name, "SELECT subname FROM pg_subscription WHERE subdbid = "
                                    "(SELECT oid FROM pg_database WHERE datname = current_database())")  # fmt: skip
    return found


def assert_old(runtime, db, image_names, before) -> None:
    container = runtime.docker.containers.get(db.name)
    assert container.status == "running"
    assert container.attrs["Config"]["Image"] == image_names[SOURCE]
    server = db.server()
    comparison = verify.compare(before, verify.fingerprint(server))
    assert comparison.identical, comparison.differences
    assert writable(server), "the old server was left read-only"
    assert replication_objects(server) == []
    for suffix in ("-pgleap-next", "-pgleap-old", "-pgleap-blue", "-pgleap-green"):
        assert not runtime.exists(db.name + suffix), suffix


def assert_new(runtime, db, image_names, before, result) -> None:
    assert result["phase"] == "switched", result
    assert_new_serving(runtime, db, image_names, before)


def assert_new_serving(runtime, db, image_names, before) -> None:
    assert runtime.docker.containers.get(db.name).attrs["Config"]["Image"] == image_names[TARGET]
    server = db.server()
    assert server.query("postgres", "SHOW server_version_num")[0][0].startswith("17")
    comparison = verify.compare(before, verify.fingerprint(server), include_extension_tables=False)
    assert comparison.identical, comparison.differences
    assert writable(server), "the new server was left read-only"
