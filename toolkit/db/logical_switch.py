"""The blue/green switch over logical replication: wait for the copy and the catch-up, carry
sequences and materialized views, pause and resume writes, export snapshots for --verify-after.

The set-up (facts, schema, publications, subscriptions, slots) is in toolkit/db/logical.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from psycopg import sql

from toolkit.db.logical import SEQUENCES, connect_to, identifier_of, qualified_names
from toolkit.db.sql import Server
from toolkit.errors import PgleapError


def wait_synced(new: Server, dbs: list[str], timeout: float, sleep=time.sleep) -> float:
    """Until every table of every subscription is ready ('r'): the initial copy is done."""
    start = time.monotonic()
    while True:
        pending = 0
        for db in dbs:
            pending += new.query(db, "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'")[0][0]
            if not new.query(db, "SELECT count(*) FROM pg_subscription_rel")[0][0]:
                pending += 1  # the subscription has not listed its tables yet
        if not pending:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise PgleapError(
                f"the initial copy did not finish within {timeout:.0f} s ({pending} tables pending)",
                "the old server keeps serving; see the new container's log, then `pgleap rollback docker`",
            )
        sleep(0.2)


def lag_bytes(publisher: Server, slots: list[str]) -> int:
    rows = publisher.query(
        "postgres",
        "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)), 0)::bigint "
        "FROM pg_replication_slots WHERE slot_name = ANY(%s)",
        (slots,),
    )
    return int(rows[0][0])


def wait_caught_up(publisher: Server, slots: list[str], timeout: float, sleep=time.sleep) -> float:
    """Until every slot has confirmed the publisher's current WAL position: everything is replayed."""
    start = time.monotonic()
    target = publisher.query("postgres", "SELECT pg_current_wal_lsn()::text")[0][0]
    while True:
        behind = publisher.query(
            "postgres",
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = ANY(%s) "
            "AND (confirmed_flush_lsn IS NULL OR confirmed_flush_lsn < %s::pg_lsn)",
            (slots, target),
        )[0][0]
        if not behind:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise PgleapError(
                f"the new server did not catch up within {timeout:.0f} s ({behind} slots behind)"
            )
        sleep(0.02)


def sequence_values(server: Server, dbs: list[str]) -> dict[str, tuple]:
    """'db: schema.name' -> (last_value, is_called): the cheap half of the proof (no table rows read)."""
    values: dict[str, tuple] = {}
    for db in dbs:
        with connect_to(server, db) as conn:
            for schema, name in conn.execute(SEQUENCES).fetchall():
                ident = sql.Identifier(schema, name)
                row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(ident)).fetchone()
                values[f"{db}: {schema}.{name}"] = tuple(row)
    return values


def copy_sequences(src: Server, dst: Server, dbs: list[str]) -> int:
    """Every sequence's (last_value, is_called) from src onto dst, where dst has it."""
    count = 0
    for db in dbs:
        with connect_to(src, db) as conn:
            values = []
            for schema, name in conn.execute(SEQUENCES).fetchall():
                ident = sql.Identifier(schema, name)
                row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(ident)).fetchone()
                values.append((f"{schema}.{name}", *row))
        with connect_to(dst, db) as conn:
            present = set(qualified_names(conn.execute(SEQUENCES).fetchall()))
            for name, last, called in values:
                if name in present:
                    conn.execute(
                        "SELECT setval(%s::regclass, %s, %s)",
                        (identifier_of(name).as_string(conn), last, called),
                    )
                    count += 1
    return count


def copy_large_objects(src: Server, dst: Server, db: str) -> int:
    """Make dst's large objects those of src (same oids, contents, owners): logical replication does
    not carry them. Run in the write pause (src takes no writes), and again by a rollback. Each object
    is read whole (lo_get): fine for the documents large objects usually hold, not for many gigabytes.
    Their ACLs (GRANT … ON LARGE OBJECT) are not copied."""
    with connect_to(src, db) as conn:
        rows = conn.execute(
            "SELECT oid::bigint, pg_get_userbyid(lomowner), lo_get(oid) FROM pg_largeobject_metadata"
        ).fetchall()
    wanted = {oid for oid, _owner, _data in rows}
    with connect_to(dst, db) as conn, conn.transaction():
        present = {r[0] for r in conn.execute("SELECT oid::bigint FROM pg_largeobject_metadata").fetchall()}
        for oid in present:  # replaced whole: dst may hold an older copy (a retried switch, a rollback)
            conn.execute("SELECT lo_unlink(%s::oid)", (oid,))
        for oid, owner, data in rows:
            conn.execute("SELECT lo_from_bytea(%s::oid, %s)", (oid, data))
            conn.execute(
                sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(sql.Literal(oid), sql.Identifier(owner))
            )
    return len(wanted)


def refresh_matviews(server: Server, db: str, names: list[str]) -> None:
    with connect_to(server, db) as conn:
        for name in names:
            conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(identifier_of(name)))


def pause_writes(server: Server, *, drain: float = 2.0, sleep=time.sleep) -> int:
    """New sessions are read-only; open transactions get `drain` seconds, then every client
    session is ended (replication senders stay). Returns how many sessions were ended.

    Both signals are asynchronous: the pause holds only once a new session reads the setting
    and the ended backends are gone (a backend still alive may commit one more write)."""
    with connect_to(server) as conn:
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while server.query("postgres", "SHOW default_transaction_read_only")[0][0] != "on":
        if time.monotonic() > deadline:
            raise PgleapError("the server did not take the write pause (default_transaction_read_only)")
        sleep(0.01)
    others = "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    with connect_to(server) as conn:
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline:
            if not conn.execute(f"SELECT count(*) {others} AND xact_start IS NOT NULL").fetchone()[0]:
                break
            sleep(0.02)
        ended = [r[0] for r in conn.execute(f"SELECT pid {others}").fetchall()]
        for pid in ended:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (ended,)).fetchone()[
            0
        ]:
            if time.monotonic() > deadline:
                raise PgleapError("client sessions did not end within 10 s of the write pause")
            sleep(0.01)
    return len(ended)


def read_only_from_start(server: Server) -> None:
    """The server comes up refusing writes after its next start (postgresql.auto.conf, no reload):
    `--verify-after` exports its snapshots before the first client write."""
    with connect_to(server) as conn:
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")


@contextmanager
def exported_snapshots(server: Server, dbs: list[str]) -> Iterator[dict[str, str]]:
    """db -> a snapshot id other sessions can import, held until the block ends (one open
    REPEATABLE READ transaction per database: vacuum waits for it)."""
    with ExitStack() as stack:
        ids: dict[str, str] = {}
        for db in dbs:
            conn = stack.enter_context(server.connect(db))
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            ids[db] = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        yield ids


def resume_writes(server: Server, *, reload: bool = True) -> None:
    with connect_to(server) as conn:
        conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        if reload:
            conn.execute("SELECT pg_reload_conf()")
