"""The blue/green switch over logical replication: wait for the copy and the catch-up, carry
sequences and materialized views, pause and resume writes, export snapshots for --verify-after.

The set-up (facts, schema, publications, subscriptions, slots) is in toolkit/db/logical.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

from psycopg import sql

from toolkit.db.logical import SEQUENCES, connect_to, identifier_of
from toolkit.db.sql import Server
from toolkit.errors import PgleapError


def wait_synced(
    new: Server, dbs: list[str], timeout: float, sleep=time.sleep, *, publisher: Server | None = None
) -> float:
    """Until every table of every subscription is ready ('r'): the initial copy is done. The publisher
    is asked too (every ~2 s): a subscription retries a dead one for ever, the run would wait out its
    whole timeout with the old server down."""
    start = checked = time.monotonic()
    while True:
        pending = 0
        for db in dbs:
            pending += new.query(db, "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'")[0][0]
            if not new.query(db, "SELECT count(*) FROM pg_subscription_rel")[0][0]:
                pending += 1  # the subscription has not listed its tables yet
        if not pending:
            return time.monotonic() - start
        if publisher is not None and time.monotonic() - checked >= 2:
            _still_there(publisher)
            checked = time.monotonic()
        if time.monotonic() - start > timeout:
            raise PgleapError(
                f"the initial copy did not finish within {timeout:.0f} s ({pending} tables pending)",
                "the old server keeps serving; see the new container's log, then `pgleap rollback docker`",
            )
        sleep(0.2)


def _still_there(publisher: Server) -> None:
    try:
        publisher.query("postgres", "SELECT 1")
    except PgleapError as error:
        raise PgleapError(
            f"the initial copy stopped: {error.message}",
            "start the old server again; `pgleap resume` goes on from the recorded phase (it starts a "
            "stopped container), `pgleap rollback` removes the copy",
        ) from None


def lag_bytes(publisher: Server, slots: list[str]) -> int:
    rows = publisher.query(
        "postgres",
        "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)), 0)::bigint "
        "FROM pg_replication_slots WHERE slot_name = ANY(%s)",
        (slots,),
    )
    return int(rows[0][0])


def wait_caught_up(
    publisher: Server, slots: list[str], timeout: float, sleep=time.sleep, subscriber: Server | None = None
) -> float:
    """Until every slot has confirmed the publisher's current WAL position: everything is replayed.

    A subscription applies with synchronous_commit off: what it applied is confirmed once its WAL is
    flushed, by the WAL writer every wal_writer_delay (200 ms) unless something commits with it on.
    Given the `subscriber`, each poll commits so there (in the write pause: 0.2 s less)."""
    start = time.monotonic()
    target = publisher.query("postgres", "SELECT pg_current_wal_lsn()::text")[0][0]
    while True:
        if subscriber is not None:
            flush_wal(subscriber)
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


# Sequences read or set per statement: one statement locks each of them, and a lock table of the
# default size (max_locks_per_transaction 64 x max_connections 100) holds a few thousand.
_SEQUENCE_BATCH = 1000


def _read_sequences(conn) -> list[tuple[str, str, int, bool]]:
    """(schema, name, last_value, is_called) of every user sequence, a few statements per database
    (not one per sequence: the write pause must not grow with the table count)."""
    names = conn.execute(SEQUENCES).fetchall()
    values = []
    for i in range(0, len(names), _SEQUENCE_BATCH):
        arms = [
            sql.SQL("SELECT {}, {}, last_value, is_called FROM {}").format(
                sql.Literal(schema), sql.Literal(name), sql.Identifier(schema, name)
            )
            for schema, name in names[i : i + _SEQUENCE_BATCH]
        ]
        values += [tuple(r) for r in conn.execute(sql.SQL(" UNION ALL ").join(arms)).fetchall()]
    return values


def current_lsn(server: Server) -> str:
    return server.query("postgres", "SELECT pg_current_wal_lsn()::text")[0][0]


def flush_wal(server: Server) -> None:
    """Everything the server wrote is flushed: a commit with synchronous_commit on waits for it."""
    with connect_to(server) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute("SELECT txid_current()")


def checkpoint(server: Server) -> None:
    with connect_to(server) as conn:
        conn.execute("CHECKPOINT")


def advance_slots(server: Server, slots: dict[str, str], lsn: str) -> None:
    """Each logical slot (db -> slot) moved forward to `lsn`, decoding the WAL up to it without sending
    anything: what was committed before `lsn` is behind the slot. A slot already there stays.

    A slot is advanced only as far as the WAL is flushed, and subscriptions apply with
    synchronous_commit off: a commit with it on flushes everything before it first."""
    flush_wal(server)
    with ThreadPoolExecutor(4) as pool:  # each database's slot decodes on its own backend
        list(pool.map(lambda item: _advance_slot(server, *item, lsn), slots.items()))


def _advance_slot(server: Server, db: str, slot: str, lsn: str) -> None:
    with connect_to(server, db) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn < %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (lsn, slot),
        ).fetchone()
        if row is None:
            raise PgleapError(f"the replication slot {slot} is missing on the {server.label}")
        if row[0]:
            reached = conn.execute(
                "SELECT end_lsn >= %s::pg_lsn, end_lsn::text FROM pg_replication_slot_advance(%s, %s::pg_lsn)",
                (lsn, slot, lsn),
            ).fetchone()
            if not reached[0]:
                raise PgleapError(f"the replication slot {slot} reached {reached[1]}, not {lsn}")


def sequence_values(server: Server, dbs: list[str]) -> dict[str, tuple]:
    """'db: schema.name' -> (last_value, is_called): the cheap half of the proof (no table rows read)."""
    values: dict[str, tuple] = {}
    for db in dbs:
        with connect_to(server, db) as conn:
            for schema, name, last, called in _read_sequences(conn):
                values[f"{db}: {schema}.{name}"] = (last, called)
    return values


# only where dst has the sequence (the join), so a sequence missing there is skipped, not an error
_SETVAL = (
    "SELECT count(setval(c.oid, v.last, v.called)) "
    "FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bool[]) AS v(schema, name, last, called) "
    "JOIN pg_namespace n ON n.nspname = v.schema "
    "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = v.name AND c.relkind = 'S'"
)


def copy_sequences(src: Server, dst: Server, dbs: list[str]) -> int:
    """Every sequence's (last_value, is_called) from src onto dst, where dst has it: one read and one
    setval statement per database and batch."""
    count = 0
    for db in dbs:
        with connect_to(src, db) as conn:
            values = _read_sequences(conn)
        with connect_to(dst, db) as conn:
            for i in range(0, len(values), _SEQUENCE_BATCH):
                columns = [list(c) for c in zip(*values[i : i + _SEQUENCE_BATCH], strict=True)]
                count += conn.execute(_SETVAL, tuple(columns)).fetchone()[0]
    return count


# Every explicit privilege on a large object (GRANT … ON LARGE OBJECT): none when lomacl is NULL.
_LO_GRANTS = (
    "SELECT m.oid::bigint, pg_get_userbyid(a.grantor), CASE WHEN a.grantee = 0 THEN NULL "
    "ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable "
    "FROM pg_largeobject_metadata m, aclexplode(m.lomacl) WITH ORDINALITY "
    "AS a(grantor, grantee, privilege_type, is_grantable, n) ORDER BY m.oid, a.n"
)


def copy_large_objects(src: Server, dst: Server, db: str) -> int:
    """Make dst's large objects those of src (same oids, contents, owners, privileges): logical
    replication does not carry them. Run in the write pause (src takes no writes), and again by a
    rollback. Each object is read whole (lo_get): fine for the documents large objects usually hold,
    not for many gigabytes."""
    with connect_to(src, db) as conn:
        rows = conn.execute(
            "SELECT oid::bigint, pg_get_userbyid(lomowner), lomacl IS NOT NULL, lo_get(oid) "
            "FROM pg_largeobject_metadata"
        ).fetchall()
        grants = conn.execute(_LO_GRANTS).fetchall()
    with connect_to(dst, db) as conn, conn.transaction():
        present = {r[0] for r in conn.execute("SELECT oid::bigint FROM pg_largeobject_metadata").fetchall()}
        for oid in present:  # replaced whole: dst may hold an older copy (a retried switch, a rollback)
            conn.execute("SELECT lo_unlink(%s::oid)", (oid,))
        for oid, owner, explicit, data in rows:
            conn.execute("SELECT lo_from_bytea(%s::oid, %s)", (oid, data))
            conn.execute(
                sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(sql.Literal(oid), sql.Identifier(owner))
            )
            if explicit:  # from no privilege at all (not even the owner's), then each one granted
                conn.execute(
                    sql.SQL("REVOKE ALL ON LARGE OBJECT {} FROM PUBLIC, {}").format(
                        sql.Literal(oid), sql.Identifier(owner)
                    )
                )
        owners = {oid: owner for oid, owner, _explicit, _data in rows}
        for oid, grantor, grantee, privilege, grantable in grants:
            _grant(conn, oid, grantor if grantor != owners[oid] else None, grantee, privilege, grantable)
    return len(rows)


def _grant(conn, oid: int, grantor: str | None, grantee: str | None, privilege: str, grantable: bool) -> None:
    """One privilege, granted by its grantor (the owner's grants are made as the superuser, which
    records the owner as the grantor)."""
    statement = sql.SQL("GRANT {} ON LARGE OBJECT {} TO {}{}").format(
        sql.SQL({"SELECT": "SELECT", "UPDATE": "UPDATE"}[privilege]), sql.Literal(oid),
        sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
        sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL(""),
    )  # fmt: skip
    if grantor:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(grantor)))
    conn.execute(statement)
    if grantor:
        conn.execute("RESET ROLE")


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
