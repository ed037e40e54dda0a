"""`--strategy logical` end to end on real containers: a writer runs through the migration and the
switch; every acknowledged write arrives exactly once, the fingerprints match, rollback brings back
the writes made on the new side, finalize leaves no replication object behind.

The writer is a load test: it talks only to the port published on 127.0.0.1, a few hundred writes
a second at most, and stops by itself after a bounded count and time.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field

import pytest
from docker.errors import NotFound
from typer.testing import CliRunner

from devtools.writer import Writer
from devtools.writer import start as start_writer
from devtools.writer import stop as stop_writer
from toolkit.cli.app import app
from toolkit.db.logical_switch import wait_caught_up
from toolkit.db.sql import Server
from toolkit.errors import PgleapError

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EXTRA = [
    "CREATE TABLE notes (body text)",  # no primary key: refused, or REPLICA IDENTITY FULL with consent
    "INSERT INTO notes SELECT 'note ' || g FROM generate_series(1, 50) g",
    "CREATE TABLE writes (id bigserial PRIMARY KEY, n int UNIQUE NOT NULL, side text)",  # sequence-fed
    "CREATE UNLOGGED TABLE cache (k int PRIMARY KEY, v text)",
    "INSERT INTO cache SELECT g, 'v' || g FROM generate_series(1, 20) g",
    # a large object (not replicated: copied in the write pause), owned by a role other than the superuser
    "CREATE ROLE docs",
    "ALTER LARGE OBJECT 424242 OWNER TO docs",
    "CREATE ROLE readers",
    "GRANT SELECT ON LARGE OBJECT 424242 TO readers",  # its privileges are carried too
]
LARGE = "SELECT lo_from_bytea(424242, convert_to(repeat('pgleap large object ', 800), 'UTF8'))"
LARGE_OBJECTS = (
    "SELECT oid::bigint, pg_get_userbyid(lomowner), md5(lo_get(oid)), lomacl::text FROM pg_largeobject_metadata "
    "ORDER BY 1"
)


@dataclass
class Old:
    rt: object
    name: str
    volume: str
    image: str
    user: str
    password: str = field(repr=False)
    port: int = 0

    def local(self) -> Server:
        return Server("127.0.0.1", self.port, self.user, self.password, label="published port")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(rt, image: str, tag: str, *, wal_logical: bool) -> Old:
    from toolkit.db.seed import seed
    from toolkit.docker import images

    name = volume = f"pgleap-test-logical-{tag.split('-')[0]}-{uuid.uuid4().hex[:6]}"
    password = secrets.token_urlsafe(12)
    rt.docker.volumes.create(volume)
    c = rt.docker.containers.run(
        image, name=name, detach=True, command=["postgres", "-c", "wal_level=logical"] if wal_logical else None,
        environment={"POSTGRES_USER": "gis", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "gis"},
        volumes={volume: {"bind": images.spec_for(tag).volume_dir, "mode": "rw"}},
        ports={"5432/tcp": ("127.0.0.1", _free_port())},  # fixed, as users publish it
    )  # fmt: skip
    rt.wait_accepting(name, "gis", password, timeout=180)
    c.reload()
    port = int(c.attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"])
    old = Old(rt, name, volume, image, "gis", password, port)
    seed(old.local(), "gis", rows=2000, polygons=200)
    with old.local().connect("gis") as conn:
        for statement in [LARGE, *EXTRA]:
            conn.execute(statement)
    return old


@pytest.fixture
def logical_old(runtime, image_names):
    made: list[Old] = []

    def make(tag: str, **kwargs) -> Old:
        old = _start(runtime, image_names[tag], tag, **kwargs)
        made.append(old)
        return old

    yield make
    for old in made:
        for suffix in ("", "-pgleap-next", "-pgleap-old", "-pgleap-blue", "-pgleap-green"):
            runtime.remove(old.name + suffix)
        runtime.remove_volume(old.volume)
        runtime.remove_volume(old.volume + "-pgleap-next")
        with suppress(NotFound):  # with published ports: pgleap's network
            runtime.docker.networks.get(old.name + "-pgleap-net").remove()


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _ok(result) -> dict:
    exc = result.exception
    if exc is not None and not isinstance(exc, PgleapError | SystemExit):
        import traceback

        traceback.print_exception(exc)
    assert result.exit_code == 0, f"{result.output}\n{exc}" if isinstance(exc, PgleapError) else result.output
    return json.loads(result.stdout[result.stdout.index("{") :])


def _phases(out: dict) -> str:
    return ", ".join(f"{p['name']} {p['seconds']:.2f}" for p in out["phases"])


def _code(result) -> int:
    """The exit code `pgleap` would give: toolkit.cli.app.main maps PgleapError to its code."""
    if isinstance(result.exception, PgleapError):
        return result.exception.exit_code
    return result.exit_code


def _writer(old: Old) -> tuple[Writer, threading.Thread]:
    writer = Writer(old.port, old.user, old.password)
    return writer, start_writer(writer)


def _stop(writer: Writer, thread: threading.Thread) -> None:
    stop_writer(writer, thread)


def _assert_all_acked(server: Server, writer: Writer) -> None:
    acked = dict(writer.acked)  # before the query: a write acknowledged after its snapshot is not in it
    rows = server.query("gis", "SELECT n, count(*) FROM writes GROUP BY n")
    present = {n: c for n, c in rows}
    missing = [n for n in acked if n not in present]
    assert not missing, (
        f"{len(missing)} acknowledged writes missing, e.g. {missing[:5]} acked by "
        f"{[writer.sides.get(n) for n in missing[:5]]} at {[round(writer.acked[n], 3) for n in missing[:5]]}"
    )
    assert all(c == 1 for c in present.values())


def _replication_objects(server: Server) -> list:
    found = server.query("postgres", "SELECT slot_name FROM pg_replication_slots")
    for db in ("gis", "analytics"):
        found += server.query(db, "SELECT pubname FROM pg_publication")
        found += server.query(db, "SELECT subname FROM pg_subscription")
    return found


def _window(caplog, writer: Writer, old_major: str) -> str:
    """The writer's gap at the switch, against pgleap's own log of its pause. Once pgleap says writes
    are refused, the old server may acknowledge none; the new one may take writes before pgleap has
    logged the end (the hand-over is done once the new server accepts)."""

    def last(words: str) -> float:
        stamps = [float(r.getMessage().rsplit(" ", 1)[1]) for r in caplog.records if words in r.getMessage()]
        assert stamps, f"the engine did not log {words!r}"
        return stamps[-1]

    start, refused, end = last("write pause starts"), last("writes refused"), last("write pause ends")
    on_old = {n: t for n, t in writer.acked.items() if writer.sides[n].startswith(old_major)}
    leaked = [n for n, t in on_old.items() if refused < t <= end]
    assert not leaked, f"the old server acknowledged writes after the pause took hold: {leaked[:5]}"
    before = max((t for t in on_old.values() if t <= refused), default=start)
    after = min((t for n, t in writer.acked.items() if t > before and n not in on_old), default=end)
    return (
        f"writer's gap at the switch {after - before:.2f} s (its last write on the old server "
        f"{before - start:+.2f} s from the pause's start, the first on the new one {after - end:+.2f} s from its end)"
    )


def _standby(rt, old: Old, tag: str, request) -> str:
    """A streaming standby of the old primary (pg_basebackup -R), as users run one; removed after."""
    from toolkit.docker import images

    name = f"{old.name}-standby"
    mount = images.spec_for(tag).volume_dir

    def cleanup() -> None:
        for container in (name, f"{name}-pgleap-old"):
            rt.remove(container)
        for volume in (name, f"pgleap-standby-{old.volume}"):
            rt.remove_volume(volume)

    request.addfinalizer(cleanup)
    rt.exec_in(
        old.name, ["bash", "-c", 'echo "host replication all all md5" >> "$PGDATA/pg_hba.conf"'], "postgres"
    )
    old.local().query("postgres", "SELECT pg_reload_conf()")
    ip = rt.docker.containers.get(old.name).attrs["NetworkSettings"]["IPAddress"]
    rt.docker.volumes.create(name)
    rt.docker.containers.run(
        old.image, ["bash", "-c", f"pg_basebackup -h {ip} -U gis -D {mount}/standby -R -X stream -c fast && "
                                  f"mv {mount}/standby/* {mount}/ && rmdir {mount}/standby && chmod 0700 {mount}"],
        entrypoint=[], user="postgres", environment={"PGPASSWORD": old.password},
        volumes={name: {"bind": mount, "mode": "rw"}}, remove=True,
    )  # fmt: skip
    rt.docker.containers.run(
        old.image, name=name, detach=True, volumes={name: {"bind": mount, "mode": "rw"}},
        environment={"POSTGRES_USER": "gis", "POSTGRES_PASSWORD": old.password, "POSTGRES_DB": "gis"},
    )  # fmt: skip
    rt.wait_accepting(name, "gis", old.password, timeout=120)
    return name


def _ip_server(rt, name: str, old: Old) -> Server:
    ip = rt.docker.containers.get(name).attrs["NetworkSettings"]["IPAddress"]
    return Server(ip, 5432, old.user, old.password, label=name)


def test_logical_13_to_17_with_writes_then_rollback(
    runtime, image_names, logical_old, monkeypatch, capsys, caplog, request
):
    """Refusals (md5 roles included), a switch aborted by a failed proof (the sequences not carried:
    exit 4) and one by DDL, each leaving the old server serving; then the switch under writes, the
    standby re-seeded from the new primary, and the rollback with the writes made on the new side."""
    caplog.set_level(logging.INFO, logger="toolkit.engine.logical")
    caplog.set_level(logging.INFO, logger="toolkit.engine.logical_pause")  # the pause's own log
    started = time.monotonic()
    old = _start_and_check_refusals(runtime, image_names, logical_old)
    t_standby = time.monotonic()
    standby = _standby(runtime, old, "13-3.1", request)
    t_standby = time.monotonic() - t_standby
    large_before = old.local().query("gis", LARGE_OBJECTS)
    assert [(r[0], r[1]) for r in large_before] == [(424242, "docs")]
    writer, thread = _writer(old)
    args = ["upgrade", "docker", "-c", old.name, "--to", image_names["17-3.5"], "--strategy", "logical",
            "--restart-for-wal-level", "--replica-identity-full", "-y", "-o", "json"]  # fmt: skip
    _aborted_switches(runtime, old, args, image_names["13-3.1"], monkeypatch)
    result = _cli(*args, "--verify-after")  # the rows are compared after the switch, under writes
    out = _ok(result)
    names = [p["name"] for p in out["phases"]]
    assert "verify" not in names and names.index("verify after the switch") > names.index("switch")
    assert out["proof"]["rows"] > 2000, out["proof"]
    time.sleep(2.0)  # writes on the new cluster, to be carried back by the rollback
    new_image = runtime.docker.containers.get(old.name).attrs["Config"]["Image"]
    assert new_image == image_names["17-3.5"]
    assert old.local().query("gis", "SHOW server_version_num")[0][0].startswith("17")
    after_switch = [n for n, t in writer.acked.items() if t > time.monotonic() - 1.5]
    assert after_switch, "the writer made no writes on the new cluster"
    gis = old.local().query("gis", "SELECT count(*) FROM pg_indexes WHERE indexdef ~ 'USING gist'")[0][0]
    assert gis >= 3  # points, polygons, partitioned parent's GiST survive the schema copy
    _assert_all_acked(old.local(), writer)
    assert old.local().query("gis", "SELECT count(*) FROM cache")[0][0] == 20  # unlogged: copied in the pause
    assert old.local().query("gis", LARGE_OBJECTS) == large_before  # copied in the pause, with its owner
    with old.local().connect("gis") as conn:  # one written on the new cluster: the rollback carries it back
        conn.execute("SELECT lo_from_bytea(515151, 'written on the new cluster')")
    app_login = Server("127.0.0.1", old.port, "app", "app-secret", label="app")  # re-hashed role logs in
    assert app_login.query("gis", "SELECT current_user")[0][0] == "app"
    # the standby: found at preflight, re-seeded from the new primary, streaming from it on the new image
    assert [s["replica"] for s in out["standbys"]] == [standby], out["standbys"]
    assert runtime.docker.containers.get(standby).attrs["Config"]["Image"] == image_names["17-3.5"]
    streaming = old.local().query(
        "postgres", "SELECT r.state FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid "
        "WHERE s.slot_name = %s", (out["standbys"][0]["slot"],),
    )  # fmt: skip
    assert streaming == [("streaming",)], streaming
    replica = _ip_server(runtime, standby, old)
    assert replica.query("gis", "SELECT pg_is_in_recovery()") == [(True,)]
    assert replica.query("gis", "SHOW server_version_num")[0][0].startswith("17")
    assert replica.query("gis", "SELECT count(*) FROM writes WHERE left(side, 2) = '13'")[0][0] > 0

    rollback = _cli("rollback", "docker", "-c", old.name, "-y", "-o", "json")
    _stop(writer, thread)
    back = _ok(rollback)
    assert runtime.docker.containers.get(old.name).attrs["Config"]["Image"] == image_names["13-3.1"]
    assert old.local().query("gis", "SHOW server_version_num")[0][0].startswith("13")
    _assert_all_acked(old.local(), writer)  # every write made on the new cluster is on the old one
    sides = dict(old.local().query("gis", "SELECT left(side, 2), count(*) FROM writes GROUP BY 1"))
    assert sides.get("17", 0) > 0, sides
    with old.local().connect("gis") as conn:  # the sequence came back too: no duplicate key
        conn.execute("INSERT INTO writes (n, side) VALUES (-1, 'after rollback')")
    assert _replication_objects(old.local()) == []
    assert not runtime.exists(old.name + "-pgleap-next")
    assert runtime.docker.containers.get(standby).attrs["Config"]["Image"] == image_names["13-3.1"]
    assert _ip_server(runtime, standby, old).query("gis", "SELECT pg_is_in_recovery()") == [(True,)]
    large_after = old.local().query("gis", LARGE_OBJECTS)
    assert large_after[0] == large_before[0] and [r[0] for r in large_after] == [424242, 515151], large_after
    window = _window(caplog, writer, "13")
    with capsys.disabled():
        print(f"\n[logical 13->17] pgleap's write pause {out['pause_seconds']:.2f} s; {window}; "
              f"longest gap of the run {max(writer.gaps()):.2f} s (the wal_level restart or the rollback); "
              f"{len(writer.acked)} writes acked, {writer.errors} retries; rollback pause {back['pause_seconds']:.2f} s;"
              f" test {time.monotonic() - started:.0f} s (standby set-up {t_standby:.0f} s)\n  phases: {_phases(out)}")  # fmt: skip


def test_logical_reverse_slot_starts_at_the_switch(runtime, image_names, logical_old, capsys):
    """The reverse slots are made before the pause and moved to the switch point in it: the old cluster
    (following the new one) gets every write made on the new side after the switch, and none of the
    rows the forward stream applied before it (they would come back twice: `dupes` has no key)."""
    started = time.monotonic()
    old = logical_old("13-3.1", wal_logical=True)
    with old.local().connect("gis") as conn:
        conn.execute(
            "CREATE TABLE dupes (id bigserial, n int, side text)"
        )  # no key: a row sent back is a copy
    writer = Writer(old.port, old.user, old.password, table="dupes", notes=False)
    thread = start_writer(writer)
    out = _ok(_cli("upgrade", "docker", "-c", old.name, "--to", image_names["17-3.5"], "--strategy", "logical",
                   "--replica-identity-full", "-y", "-o", "json"))  # fmt: skip
    time.sleep(2.0)  # writes on the new cluster, after the switch
    _stop(writer, thread)
    new = old.local()
    slots = [r[0] for r in new.query("postgres", "SELECT slot_name FROM pg_replication_slots "
                                     "WHERE starts_with(slot_name, 'pgleap_rev_')")]  # fmt: skip
    assert slots, "no reverse slot on the new cluster"
    wait_caught_up(new, slots, 60)
    blue = _ip_server(runtime, f"{old.name}-pgleap-blue", old)
    rows = dict(blue.query("gis", "SELECT n, count(*) FROM dupes GROUP BY n"))
    twice = sorted(n for n, c in rows.items() if c > 1)
    assert not twice, f"{len(twice)} rows came back from the new cluster twice, e.g. n = {twice[:5]}"
    missing = sorted(set(writer.acked) - set(rows))
    assert not missing, (
        f"{len(missing)} acknowledged writes missing on the old cluster, e.g. {missing[:5]} acked by "
        f"{[writer.sides.get(n) for n in missing[:5]]}"
    )
    on_new = [n for n, side in writer.sides.items() if side.startswith("17") and n in writer.acked]
    assert on_new, "the writer made no writes on the new cluster"
    with capsys.disabled():
        print(f"\n[logical reverse slot] pgleap's write pause {out['pause_seconds']:.2f} s, writer's longest gap "
              f"{max(writer.gaps()):.2f} s; {len(on_new)} of {len(writer.acked)} writes on the new side, each once "
              f"on the old one; test {time.monotonic() - started:.0f} s\n  phases: {_phases(out)}")  # fmt: skip


def _aborted_switches(runtime, old: Old, args: list[str], old_image: str, monkeypatch) -> None:
    """Skipping the large-object copy or the sequence sync must fail the proof (exit 4) with the old
    server serving again;
    DDL made during the migration aborts the switch; both leave the synchronised copy for the next run."""
    from toolkit.db import logical_switch as switch

    with monkeypatch.context() as patched:  # the mutation: the large objects are not carried (first:
        patched.setattr(switch, "copy_large_objects", lambda *a, **k: 0)  # a later switch copies them)
        no_large = _cli(*args)
    assert _code(no_large) == 4 and "pg_largeobject" in str(no_large.exception), no_large.output
    with monkeypatch.context() as patched:  # the mutation: the sequences are not carried
        patched.setattr(switch, "copy_sequences", lambda *a, **k: 0)
        broken = _cli(*args)
    assert _code(broken) == 4, broken.output
    assert "sequence" in str(broken.exception)
    status = _ok(_cli("status", "docker", "-c", old.name, "-o", "json"))
    assert (status["strategy"], status["phase"]) == ("logical", "synced"), status
    inplace = _cli(*[a for a in args if a not in ("--strategy", "logical", "--restart-for-wal-level",
                                                  "--replica-identity-full", "-o", "json")])  # fmt: skip
    assert _code(inplace) == 3 and "logical upgrade is recorded" in str(inplace.exception)
    assert runtime.docker.containers.get(old.name).attrs["Config"]["Image"] == old_image
    with old.local().connect("gis") as conn:  # the old server takes writes again
        conn.execute("INSERT INTO notes VALUES ('after the aborted switch')")
        conn.execute("CREATE INDEX notes_body ON notes (body)")  # DDL during the migration
    ddl = _cli(*args)
    assert _code(ddl) == 1 and "schema changed" in str(ddl.exception), ddl.output
    assert runtime.docker.containers.get(old.name).attrs["Config"]["Image"] == old_image
    with old.local().connect("gis") as conn:  # the schema as it was when the copy was built
        conn.execute("DROP INDEX notes_body")


def _start_and_check_refusals(runtime, image_names, logical_old) -> Old:
    old = logical_old("13-3.1", wal_logical=False)
    with old.local().connect("gis") as conn:  # PostgreSQL 13 stores md5 by default
        conn.execute("CREATE ROLE app LOGIN PASSWORD 'app-secret'")
    dry = _cli("upgrade", "docker", "-c", old.name, "--to", image_names["17-3.5"], "--strategy", "logical",
               "--dry-run", "-o", "json")  # fmt: skip
    plan = _ok(dry)["plan"]
    checks = {r["check"] for r in plan["refusals"]}
    assert checks == {"wal_level", "replica_identity", "md5_passwords"}, plan["refusals"]
    md5 = next(r for r in plan["refusals"] if r["check"] == "md5_passwords")
    assert "app" in md5["message"] and "gis" not in md5["message"]  # gis: the environment's password
    refused = next(r for r in plan["refusals"] if r["check"] == "replica_identity")
    assert "public.notes" in refused["message"] and "public.sightings_north" in refused["message"]
    assert "public.spatial_ref_sys" not in plan["replicated"]["gis"]  # extension-owned: not published
    hows = {(c["what"], c["database"]) for c in plan["carried"]}
    assert ("unlogged tables", "gis") in hows and ("materialized views", "gis") in hows
    assert ("large objects", "gis") in hows
    refused = _cli(
        "upgrade", "docker", "-c", old.name, "--to", image_names["17-3.5"], "--strategy", "logical", "-y"
    )
    assert _code(refused) == 3, refused.output
    assert runtime.docker.containers.get(old.name).attrs["Config"]["Image"] == image_names["13-3.1"]
    with old.local().connect("gis") as conn:  # the fix the refusal names: re-hash on the old server
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute("ALTER ROLE app PASSWORD 'app-secret'")
    return old


def test_logical_15_to_18_broken_sequence_sync_fails_then_resume_and_finalize(
    runtime, image_names, logical_old, monkeypatch, capsys, caplog
):
    """A build interrupted after a subscription was made is built again by the next run. Skipping
    the sequence sync must fail the proof (exit 4) with the old server serving again;
    DDL made during the migration aborts the switch; the upgrade run again goes on from the
    synchronised copy, switches, and finalize cleans up."""
    from toolkit.db import logical as repl
    from toolkit.db import logical_switch as switch

    caplog.set_level(logging.INFO, logger="toolkit.engine.logical")
    caplog.set_level(logging.INFO, logger="toolkit.engine.logical_pause")  # the pause's own log
    started = time.monotonic()
    old = logical_old("15-3.3", wal_logical=True)
    writer, thread = _writer(old)
    args = ["upgrade", "docker", "-c", old.name, "--to", image_names["18-3.x"], "--strategy", "logical",
            "--replica-identity-full", "-y", "-o", "json"]  # fmt: skip
    real_subscribe = repl.create_subscription

    def subscribe_then_die(*args, **kwargs):
        real_subscribe(*args, **kwargs)
        raise PgleapError("killed in the build, after a subscription was made")

    with monkeypatch.context() as patched:  # an interrupted build: the next run builds again
        patched.setattr(repl, "create_subscription", subscribe_then_die)
        assert _code(_cli(*args)) == 1
    with monkeypatch.context() as patched:  # the mutation: the sequences are not carried
        patched.setattr(switch, "copy_sequences", lambda *a, **k: 0)
        broken = _cli(*args)
    assert _code(broken) == 4, broken.output
    assert "sequence" in str(broken.exception)
    status = _ok(_cli("status", "docker", "-c", old.name, "-o", "json"))
    assert (status["strategy"], status["phase"]) == ("logical", "synced"), status
    inplace = _cli("upgrade", "docker", "-c", old.name, "--to", image_names["18-3.x"], "-y")
    assert _code(inplace) == 3 and "logical upgrade is recorded" in str(inplace.exception)
    before = len(writer.acked)
    time.sleep(1.0)
    assert len(writer.acked) > before, "the old server does not take writes again after the aborted switch"
    assert runtime.docker.containers.get(old.name).attrs["Config"]["Image"] == image_names["15-3.3"]

    with old.local().connect("gis") as conn:  # DDL during the migration: the switch is aborted
        conn.execute("CREATE INDEX notes_body ON notes (body)")
    ddl = _cli(*args)
    assert _code(ddl) == 1 and "schema changed" in str(ddl.exception), ddl.output
    assert runtime.docker.containers.get(old.name).attrs["Config"]["Image"] == image_names["15-3.3"]
    with old.local().connect("gis") as conn:  # the schema as it was when the copy was built
        conn.execute("DROP INDEX notes_body")

    result = _cli(*args)
    out = _ok(result)
    time.sleep(1.0)
    _stop(writer, thread)
    assert old.local().query("gis", "SHOW server_version_num")[0][0].startswith("18")
    _assert_all_acked(old.local(), writer)
    final = _cli("finalize", "docker", "-c", old.name, "-y", "-o", "json")
    _ok(final)
    assert _replication_objects(old.local()) == []
    assert not runtime.exists(old.name + "-pgleap-old") and not runtime.exists(old.name + "-pgleap-blue")
    window = _window(caplog, writer, "15")
    with capsys.disabled():
        print(f"\n[logical 15->18] pgleap's write pause {out['pause_seconds']:.2f} s; {window}; "
              f"{len(writer.acked)} writes acked, {writer.errors} retries; test {time.monotonic() - started:.0f} s"
              f"\n  phases: {_phases(out)}")  # fmt: skip
