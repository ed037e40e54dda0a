"""Logical replication between the old and the new server: facts, publications, subscriptions,
catch-up, sequences, the write pause, and the catalog hash that detects DDL.

The subscription's connection string holds the old server's password: PostgreSQL keeps
it in pg_subscription (readable by superusers only); pgleap never logs or prints it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import sql

from toolkit.core.logical_plan import LogicalFacts
from toolkit.db.sql import Server

logger = logging.getLogger(__name__)

PUBLICATION = "pgleap_pub"
REVERSE_PUBLICATION = "pgleap_rev"

_USER = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"
_NOT_EXT = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
    "AND d.objid = c.oid AND d.deptype = 'e')"
)
_REL = "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
TABLES = _REL + f"c.relkind = 'r' AND c.relpersistence = 'p' AND {_USER} AND {_NOT_EXT} ORDER BY 1, 2"
NO_IDENTITY = (
    _REL + f"c.relkind = 'r' AND c.relpersistence = 'p' AND {_USER} AND {_NOT_EXT} "
    "AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS "
    "(SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) ORDER BY 1, 2"
)
UNLOGGED = _REL + f"c.relkind = 'r' AND c.relpersistence = 'u' AND {_USER} AND {_NOT_EXT} ORDER BY 1, 2"
MATVIEWS = _REL + f"c.relkind = 'm' AND {_USER} AND {_NOT_EXT} ORDER BY 1, 2"
# Extension configuration tables (pg_extension_config_dump): their user rows are data, which a
# schema-only dump leaves out; the extension on the new side creates its own rows.
EXT_CONFIG = (
    "SELECT n.nspname, c.relname, coalesce(e.extcondition[array_position(e.extconfig, c.oid)], '') "
    "FROM pg_extension e, unnest(e.extconfig) AS cfg(oid) JOIN pg_class c ON c.oid = cfg.oid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
    # referenced tables first (topology.topology before topology.layer)
    "ORDER BY (SELECT count(*) FROM pg_constraint f WHERE f.conrelid = c.oid AND f.contype = 'f'), 1, 2"
)
# What DDL changes: relations, columns and their types, constraints, in user schemas.
CATALOG = (
    "SELECT n.nspname, c.relname, c.relkind::text, a.attname, a.atttypid::regtype::text, a.attnum "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped WHERE {_USER} "
    "UNION ALL SELECT n.nspname, con.conname, 'constraint', pg_get_constraintdef(con.oid), '', 0 "
    f"FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace WHERE {_USER} ORDER BY 1, 2, 3, 4"
)
# Login roles that could not log in on the new image: its pg_hba.conf asks for scram-sha-256, which
# refuses md5 hashes. pgleap's own superuser (the bootstrap one) gets its password from the environment.
MD5_ROLES = (
    "SELECT rolname FROM pg_authid WHERE rolcanlogin AND left(rolpassword, 3) = 'md5' "
    "AND rolname <> current_user ORDER BY 1"
)
SEQUENCES = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE c.relkind = 'S' AND {_USER} ORDER BY 1, 2"
)


@contextmanager
def connect_to(server: Server, db: str = "postgres", **kwargs) -> Iterator:
    """pgleap's own session: writable even while the server's write pause is on."""
    with server.connect(db, **kwargs) as conn:
        conn.execute("SET default_transaction_read_only = off")
        if not kwargs.get("autocommit", True):
            conn.commit()
        yield conn


def qualified_names(rows) -> list[str]:
    return [f"{schema}.{name}" for schema, name, *_ in rows]


def identifier_of(name: str) -> sql.Identifier:
    schema, _, rel = name.partition(".")
    return sql.Identifier(schema, rel)


def facts(server: Server) -> LogicalFacts:
    """Everything the plan needs, read in one pass (read-only)."""
    settings = dict(
        server.query(
            "postgres",
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('wal_level', 'max_replication_slots', 'max_wal_senders', 'server_version_num')",
        )
    )
    slots = server.query("postgres", "SELECT count(*) FROM pg_replication_slots")[0][0]
    senders = server.query("postgres", "SELECT count(*) FROM pg_stat_replication")[0][0]
    databases = [db for db in server.databases() if db != "template1"]
    md5_roles = [name for (name,) in server.query("postgres", MD5_ROLES)]
    per: dict[str, dict] = {k: {} for k in ("tables", "no_identity", "unlogged", "matviews", "ext", "lo")}
    for db in databases:
        with connect_to(server, db) as conn:
            per["tables"][db] = qualified_names(conn.execute(TABLES).fetchall())
            per["no_identity"][db] = qualified_names(conn.execute(NO_IDENTITY).fetchall())
            per["unlogged"][db] = qualified_names(conn.execute(UNLOGGED).fetchall())
            per["matviews"][db] = qualified_names(conn.execute(MATVIEWS).fetchall())
            per["ext"][db] = qualified_names(conn.execute(EXT_CONFIG).fetchall())
            per["lo"][db] = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]
    return LogicalFacts(
        server_major=int(settings["server_version_num"]) // 10000,
        wal_level=settings["wal_level"],
        max_replication_slots=int(settings["max_replication_slots"]),
        max_wal_senders=int(settings["max_wal_senders"]),
        slots_in_use=slots,
        senders_in_use=senders,
        databases=databases,
        tables=per["tables"],
        no_identity=per["no_identity"],
        unlogged=per["unlogged"],
        matviews=per["matviews"],
        large_objects=per["lo"],
        extension_config=per["ext"],
        md5_roles=md5_roles,
    )


def set_wal_level_logical(server: Server) -> None:
    with connect_to(server) as conn:
        conn.execute("ALTER SYSTEM SET wal_level = logical")


def catalog_hash(server: Server, databases: list[str]) -> str:
    """sha256 over the user schema of every database: any DDL changes it."""
    digest = hashlib.sha256()
    for db in databases:
        for row in server.query(db, CATALOG):
            digest.update(repr((db, *row)).encode())
    return digest.hexdigest()


def fresh_databases(old: Server, new: Server, databases: list[str]) -> None:
    """Every database empty on the new server, with the old encoding, locale and template flag.

    The new cluster was just initialised by its image's entrypoint, whose init scripts may have
    filled some databases already (the PostGIS images create extensions in POSTGRES_DB and
    template_postgis): those would clash with the schema copy, so they are made again from
    template0. Only ever called on the new cluster before it holds anything of the user's."""
    for db in databases:
        enc, collate, ctype, template = old.query(
            "postgres",
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype, datistemplate FROM pg_database "
            "WHERE datname = %s",
            (db,),
        )[0]
        name = sql.Identifier(db)
        with connect_to(new, "template1") as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(name))
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                    name, sql.Literal(enc), sql.Literal(collate), sql.Literal(ctype)
                )
            )
            if template:
                conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(name))


def _columns(conn, name: str) -> list[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "AND attgenerated = '' ORDER BY attnum",
        (str(identifier_of(name).as_string(conn)),),
    ).fetchall()
    return [r[0] for r in rows]


def copy_rows(old: Server, new: Server, db: str, name: str, *, where: str = "", replace: bool) -> int:
    """COPY a table's rows old → new in the columns both have; `replace` empties the target first,
    otherwise rows whose key already exists are kept (ON CONFLICT DO NOTHING through a temp table)."""
    with connect_to(old, db) as src, connect_to(new, db, autocommit=False) as dst:
        cols = [c for c in _columns(src, name) if c in set(_columns(dst, name))]
        collist = sql.SQL(", ").join(sql.Identifier(c) for c in cols)
        source = sql.SQL("COPY (SELECT {} FROM ONLY {} {}) TO STDOUT (FORMAT binary)").format(
            collist, identifier_of(name), sql.SQL(where)
        )
        if replace:
            dst.execute(sql.SQL("TRUNCATE {}").format(identifier_of(name)))
            sink = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(identifier_of(name), collist)
        else:
            dst.execute(
                sql.SQL("CREATE TEMP TABLE pgleap_rows ON COMMIT DROP AS SELECT {} FROM {} LIMIT 0").format(
                    collist, identifier_of(name)
                )
            )
            sink = sql.SQL("COPY pgleap_rows FROM STDIN (FORMAT binary)")
        with src.cursor().copy(source) as out, dst.cursor().copy(sink) as into:
            for chunk in out:
                into.write(chunk)
        if not replace:
            dst.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT * FROM pgleap_rows ON CONFLICT DO NOTHING").format(
                    identifier_of(name), collist
                )
            )
        dst.commit()
        return dst.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(identifier_of(name))).fetchone()[0]


def copy_extension_config(old: Server, new: Server, db: str) -> list[str]:
    """User rows of extension configuration tables (topology.topology/layer, user SRIDs in
    spatial_ref_sys): copied once, rows the new extension already has are kept."""
    copied = []
    with connect_to(old, db) as conn:
        rows = conn.execute(EXT_CONFIG).fetchall()
    with connect_to(new, db) as conn:
        present = set(qualified_names(conn.execute(EXT_CONFIG).fetchall()))
    for schema, name, condition in rows:
        key = f"{schema}.{name}"
        if key in present:
            copy_rows(old, new, db, key, where=condition, replace=False)
            copied.append(key)
    return copied


def set_identity_full(server: Server, tables: dict[str, list[str]]) -> None:
    for db, names in tables.items():
        with connect_to(server, db) as conn:
            for name in names:
                conn.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(identifier_of(name)))


def create_publication(server: Server, db: str, tables: list[str], name: str = PUBLICATION) -> None:
    """FOR TABLE, never FOR ALL TABLES: extension-owned tables (spatial_ref_sys) stay out."""
    with connect_to(server, db) as conn:
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(name)))
        listed = sql.SQL(", ").join(identifier_of(t) for t in tables)
        conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), listed))


def drop_publication(server: Server, db: str, name: str = PUBLICATION) -> None:
    with connect_to(server, db) as conn:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))


def sub_name(prefix: str, db: str) -> str:
    """Subscription and slot name: slots are global on the publisher, so one per database."""
    return f"pgleap_{prefix}_{hashlib.sha256(db.encode()).hexdigest()[:10]}"


def conninfo(host: str, port: int, user: str, password: str | None, db: str) -> str:
    def q(v: str) -> str:
        return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"

    parts = [f"host={q(host)}", f"port={port}", f"user={q(user)}", f"dbname={q(db)}"]
    if password:
        parts.append(f"password={q(password)}")
    return " ".join(parts)


def create_subscription(
    server: Server,
    db: str,
    name: str,
    connection: str,
    publication: str,
    *,
    copy_data: bool,
    slot: str | None = None,
) -> None:
    """On the subscriber; with `slot` an existing slot on the publisher is used (made beforehand).
    One that exists already is pointed at `connection` (the publisher may have a new address)."""
    options = sql.SQL("copy_data = {}").format(sql.Literal(copy_data))
    if slot:
        options = sql.SQL("{}, create_slot = false, slot_name = {}").format(options, sql.Literal(slot))
    if repoint_subscription(server, db, name, connection):
        return
    with connect_to(server, db) as conn:
        conn.execute(
            sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH ({})").format(
                sql.Identifier(name), sql.Literal(connection), sql.Identifier(publication), options
            )
        )


def repoint_subscription(server: Server, db: str, name: str, connection: str) -> bool:
    """A subscription that exists follows `connection`: a publisher's container started again (killed,
    rebooted) may have another address, and the old one may now be another server. Whether it exists."""
    with connect_to(server, db) as conn:
        row = conn.execute("SELECT subconninfo FROM pg_subscription WHERE subname = %s", (name,)).fetchone()
        if row is None:
            return False
        if row[0] != connection:
            conn.execute(
                sql.SQL("ALTER SUBSCRIPTION {} CONNECTION {}").format(
                    sql.Identifier(name), sql.Literal(connection)
                )
            )
        return True


def drop_subscription(server: Server, db: str, name: str) -> None:
    """Drops the slot on the publisher too when it can reach it; otherwise detaches and drops."""
    with connect_to(server, db) as conn:
        if not conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", (name,)).fetchone():
            return
        ident = sql.Identifier(name)
        try:
            conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
        except Exception:
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
            conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
            conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))


def create_slot(server: Server, db: str, slot: str) -> None:
    with connect_to(server, db) as conn:
        if not conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone():
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))


def drop_slot(server: Server, slot: str) -> None:
    rows = server.query(
        "postgres", "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    )
    if rows:
        if rows[0][0]:
            server.query("postgres", "SELECT pg_terminate_backend(%s)", (rows[0][0],))
        server.query("postgres", "SELECT pg_drop_replication_slot(%s)", (slot,))
