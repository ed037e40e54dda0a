"""Prove the data is the same: fingerprints before/after, and health checks on the new cluster.

A fingerprint holds, per database: every table's row count and an
order-independent hash of its rows, every sequence's state, the roles, and the
extensions. Each row is hashed in canonical forms read through the current
catalog (toolkit/db/canonical.py), not only as text. Tables owned by an
extension are kept apart: their content may legitimately change when the
extension is updated (e.g. topology.topology, the tiger loader tables).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from psycopg import sql

from toolkit.core.report import Report
from toolkit.db.canonical import table_hashes
from toolkit.db.postupgrade import stale_extensions
from toolkit.db.sql import Server
from toolkit.errors import VerificationFailed

logger = logging.getLogger(__name__)


@dataclass
class Fingerprint:
    tables: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)  # db -> table -> (rows, hash)
    extension_tables: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    sequences: dict[str, dict[str, tuple]] = field(default_factory=dict)
    extensions: dict[str, dict[str, str]] = field(default_factory=dict)
    roles: list[tuple] = field(default_factory=list)

    def total_rows(self) -> int:
        return sum(rows for db in self.tables.values() for rows, _ in db.values())

    def to_dict(self) -> dict:
        return {
            "databases": sorted(self.tables),
            "tables": sum(len(t) for t in self.tables.values()),
            "rows": self.total_rows(),
            "sequences": sum(len(s) for s in self.sequences.values()),
            "roles": len(self.roles),
        }


def fingerprint(
    server: Server,
    databases: list[str] | None = None,
    *,
    forms: dict | None = None,
    snapshots: dict[str, str] | None = None,
) -> Fingerprint:
    """Read-only fingerprint of every connectable database; `forms` (if given) counts the
    columns per canonical form, for the report; `snapshots` (db -> exported snapshot id) reads
    a database as it was when another session exported it (`--strategy logical --verify-after`)."""
    fp = Fingerprint()
    fp.roles = [
        tuple(r)
        for r in server.query(
            "postgres",
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, "
            "rolbypassrls, rolconnlimit FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1",
        )
    ]
    for db in databases or server.databases():
        with server.connect(db) as conn:
            conn.execute("SET default_transaction_read_only = on")
            conn.execute("SET statement_timeout = 0")
            if snapshots and db in snapshots:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshots[db])))
            fp.tables[db], fp.extension_tables[db], fp.sequences[db] = table_hashes(conn, forms=forms)
            if large := _large_objects(
                conn
            ):  # not a table, but data: pg_upgrade and --strategy logical carry it
                fp.tables[db]["pg_catalog.pg_largeobject"] = large
            fp.extensions[db] = dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())
    return fp


def _large_objects(conn) -> tuple[int, str] | None:
    """(count, hash of every large object's oid, owner, privileges and contents), None without any.
    The privileges (GRANT … ON LARGE OBJECT) sorted: the same grants made in another order are equal."""
    count, digest = conn.execute(
        "SELECT count(*), md5(coalesce(string_agg(oid::text || ':' || pg_get_userbyid(lomowner) || ':' "
        "|| CASE WHEN lomacl IS NULL THEN '-' ELSE coalesce((SELECT string_agg(a::text, ' ' ORDER BY a::text) "
        "FROM unnest(lomacl) a), '') END || ':' "
        "|| md5(lo_get(oid)), ',' ORDER BY oid), '')) FROM pg_largeobject_metadata"
    ).fetchone()
    return (count, digest) if count else None


@dataclass
class Comparison:
    differences: list[str]
    extension_differences: list[str]

    @property
    def identical(self) -> bool:
        return not self.differences


def compare(before: Fingerprint, after: Fingerprint, *, include_extension_tables: bool = True) -> Comparison:
    """Name every difference; extension-owned tables count only when asked (right after pg_upgrade)."""
    diffs: list[str] = []
    ext_diffs: list[str] = []
    for db in sorted(set(before.tables) | set(after.tables)):
        if db not in after.tables:
            diffs.append(f"database {db!r} is missing after the upgrade")
            continue
        if db not in before.tables:
            diffs.append(f"database {db!r} appeared after the upgrade")
            continue
        diffs += _diff_maps(f"{db}: table", before.tables[db], after.tables[db])
        diffs += _diff_maps(f"{db}: sequence", before.sequences[db], after.sequences[db])
        target = diffs if include_extension_tables else ext_diffs
        target += _diff_maps(
            f"{db}: extension table", before.extension_tables[db], after.extension_tables[db]
        )
    if before.roles != after.roles:
        diffs.append("roles or their attributes differ")
    return Comparison(diffs, ext_diffs)


def _diff_maps(what: str, old: dict, new: dict) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            out.append(f"{what} {key} is missing")
        elif key not in old:
            out.append(f"{what} {key} is new")
        elif old[key] != new[key]:
            out.append(f"{what} {key} differs: {_show(old[key])} -> {_show(new[key])}")
    return out


def _show(value: tuple) -> str:
    if len(value) == 2 and isinstance(value[0], int) and isinstance(value[1], str):
        return f"{value[0]} rows"
    return repr(value)


@dataclass
class HealthReport:
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (name, ok, detail)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append((name, ok, detail))

    def rows(self) -> list[dict]:
        """Every check as the JSON report lists it."""
        return [{"check": n, "ok": ok, "detail": d} for n, ok, d in self.checks]

    def failures(self) -> list[str]:
        """`name: detail` of each failed check."""
        return [f"{n}: {d}" for n, ok, d in self.checks if not ok]


def run_health_checks(
    server: Server,
    report: Report,
    *,
    failure: str,
    hint: str = "",
    known_invalid: list[str] | None = None,
    accept: bool = False,
) -> HealthReport:
    """`health()` as a report phase, its rows in the report; VerificationFailed (`failure`: the
    failed checks) when one fails, unless the operator accepted them (`resume --accept health`)."""
    with report.phase("health checks", "amcheck, PostGIS, indexes") as ph:
        result = health(server, known_invalid=frozenset(known_invalid or ()))
        ph.detail = f"{sum(ok for _, ok, _ in result.checks)}/{len(result.checks)} passed"
    report.data["health"] = result.rows()
    if not result.ok:
        if accept:
            report.say("  [yellow]accepted[/] failed health checks: " + "; ".join(result.failures()))
            report.data["accepted"] = [*report.data.get("accepted", []), "health"]
            return result
        raise VerificationFailed(f"{failure}: " + "; ".join(result.failures()), hint)
    return result


def health(
    server: Server, *, heapallindexed: bool = False, known_invalid: set[str] | frozenset = frozenset()
) -> HealthReport:
    """After post-upgrade: extensions current, PostGIS procs upgraded, btree indexes sound, GiST usable.

    `known_invalid`: indexes ('db: name') already invalid in the old cluster; they are
    named as such and do not fail the check (the upgrade did not break them)."""
    report = HealthReport()
    for db in server.databases():
        with server.connect(db) as conn:
            stale = stale_extensions(conn)
            behind = [f"{n} {v} (target {d})" for n, v, d, path in stale if path]
            stuck = [f"{n} {v} has no update path to {d}" for n, v, d, path in stale if not path]
            report.add(f"{db}: extensions at the target's version", not behind, ", ".join(behind + stuck))
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").fetchone():
                full = conn.execute("SELECT postgis_full_version()").fetchone()[0]
                bad = "need upgrade" in full or "procs need upgrade" in full
                report.add(
                    f"{db}: postgis_full_version() clean", not bad, full if bad else _postgis_version(full)
                )
            invalid = [f"{db}: {name}" for name in invalid_indexes(conn)]
            new = [i for i in invalid if i not in known_invalid]
            old = [i for i in invalid if i in known_invalid]
            detail = ", ".join(new) + (
                f"{'; ' if new else ''}already invalid before: {', '.join(old)}" if old else ""
            )
            report.add(f"{db}: no new invalid indexes", not new, detail)
            report.add(*_amcheck(conn, db, heapallindexed))
            gist = _gist_check(conn)
            if gist is not None:
                report.add(f"{db}: GiST bbox query uses its index", gist[0], gist[1])
    return report


def invalid_indexes(conn) -> list[str]:
    """Indexes of this database marked invalid (a failed CREATE INDEX CONCURRENTLY, say)."""
    rows = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1")
    return [r[0] for r in rows.fetchall()]


def invalid_indexes_everywhere(server: Server) -> list[str]:
    """'db: index' for every invalid index of every connectable database (the old cluster's state)."""
    out = []
    for db in server.databases():
        with server.connect(db) as conn:
            out += [f"{db}: {name}" for name in invalid_indexes(conn)]
    return out


def _amcheck(conn, db: str, heapallindexed: bool) -> tuple[str, bool, str]:
    created = not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone()
    if created:
        if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            return (f"{db}: amcheck", True, "skipped on a standby")
        conn.execute("CREATE EXTENSION amcheck")
    try:
        indexes = conn.execute(
            "SELECT c.oid, c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE am.amname = 'btree' AND c.relkind = 'i' AND i.indisvalid AND c.relpersistence <> 't' "
            "AND n.nspname !~ '^pg_temp'"
        ).fetchall()
        failed = []
        for oid, name in indexes:
            try:
                conn.execute("SELECT bt_index_check(%s, %s)", (oid, heapallindexed))
            except Exception as exc:  # amcheck raises data-corruption errors
                failed.append(f"{name}: {str(exc).splitlines()[0]}")
        return (f"{db}: amcheck on {len(indexes)} btree indexes", not failed, "; ".join(failed))
    finally:
        if created:
            conn.execute("DROP EXTENSION amcheck")


def _gist_check(conn) -> tuple[bool, str] | None:
    """EXPLAIN a bbox query on the first geometry column that has a GiST index."""
    row = conn.execute(
        "SELECT n.nspname, c.relname, a.attname FROM pg_index i "
        "JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] "
        "JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE am.amname = 'gist' AND t.typname = 'geometry' AND c.relkind = 'r' "
        "AND n.nspname NOT IN ('topology', 'tiger', 'tiger_data') ORDER BY 1, 2 LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    schema, table, column = row
    qualified, col = sql.Identifier(schema, table), sql.Identifier(column)
    srid_row = conn.execute(sql.SQL("SELECT ST_SRID({}) FROM {} LIMIT 1").format(col, qualified)).fetchone()
    srid = srid_row[0] if srid_row else 0
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE {} && ST_MakeEnvelope(0, 0, 1, 1, %s)").format(
                qualified, col
            ),
            (srid,),
        ).fetchall()
    text = "\n".join(r[0] for r in plan)
    return ("Index" in text, f"{schema}.{table}.{column}")


def _postgis_version(full: str) -> str:
    """`POSTGIS="3.5.2 dea6d0a"` from postgis_full_version(), whole (a split at the space cut it)."""
    import re

    found = re.match(r'POSTGIS="[^"]*"', full)
    return found.group(0) if found else full
