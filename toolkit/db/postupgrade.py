"""Work on the new cluster after pg_upgrade: extensions, collation-dependent indexes, statistics.

Each function checks before it acts and returns what it did, so a rerun after a
crash reports "nothing to do" instead of doing it twice. `run` is the whole
block, the same for both downtime modes (toolkit/engine/runner.py, toolkit/engine/minimal.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from psycopg import sql
from rich.markup import escape

from toolkit.core.report import Report
from toolkit.db import faults, traps
from toolkit.db.canonical import table_hashes
from toolkit.db.sql import Server
from toolkit.errors import VerificationFailed

logger = logging.getLogger(__name__)

# Stale extensions and whether the target ships an update path from the installed version.
_STALE = """
SELECT e.extname, e.extversion, a.default_version,
       EXISTS (SELECT 1 FROM pg_extension_update_paths(e.extname) p
               WHERE p.source = e.extversion AND p.target = a.default_version AND p.path IS NOT NULL)
FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname
WHERE a.default_version IS DISTINCT FROM e.extversion
ORDER BY 1
"""

# Dependency order for updating the PostGIS family one by one.
_FAMILY_ORDER = ["postgis", "postgis_raster", "postgis_topology", "postgis_sfcgal", "postgis_tiger_geocoder"]


def stale_extensions(conn) -> list[tuple[str, str, str, bool]]:
    """(name, installed, target default, has update path) for every extension not at its default."""
    return conn.execute(_STALE).fetchall()


def update_extensions(server: Server) -> tuple[list[str], list[str], list[str]]:
    """PostGIS via postgis_extensions_upgrade(), the others via ALTER EXTENSION … UPDATE,
    then the repairs of known traps (toolkit/db/traps.py), checked, in one transaction
    per database.

    Returns (updated, left, repaired): an extension the target ships no update path for
    (e.g. Debian's tiger geocoder 2025.x from 3.1) is left as it is and named.
    Raises VerificationFailed, with that database's updates rolled back, when a trap's
    columns read differently after the repair or an extension type changed its storage
    under user columns that no repair covers.
    """
    done: list[str] = []
    left: list[str] = []
    repaired: list[str] = []
    for db in server.databases():
        with server.connect(db) as conn:
            stale = {name: (old, new, path) for name, old, new, path in stale_extensions(conn)}
            if not stale:
                continue
            with conn.transaction():
                repaired += _update_checked(conn, db, stale)
            now = dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())
            for ext, (old, new, has_path) in stale.items():
                if now.get(ext) != old:
                    done.append(f"{db}: {ext} {old} -> {now.get(ext)}")
                    logger.info("updated extension %s in %s from %s to %s", ext, db, old, now.get(ext))
                elif not has_path:
                    left.append(f"{db}: {ext} {old} (no update path to {new})")
        faults.point("extensions")  # test-only: one database's extensions updated, the next not yet
    return done, left, repaired


def _update_checked(conn, db: str, stale: dict[str, tuple[str, str, bool]]) -> list[str]:
    """Inside a transaction: hash the trap-touched tables, update, repair, hash again, compare."""
    shapes = traps.type_shapes(conn)
    columns = traps.touched(conn, {e: (old, new) for e, (old, new, path) in stale.items() if path})
    tables = sorted({c.key for c in columns})
    for schema, table in sorted({(c.schema, c.table) for c in columns}):
        # clients keep reading; their writes wait the few seconds this takes
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(schema, table)))
    before = table_hashes(conn, only=set(tables))[0] if tables else {}
    _update(conn, stale)
    repaired = []
    skip = faults.skip_repairs()
    # TopoGeometry first: rewriting any other column of a table re-checks its TopoGeometry constraints.
    for column in sorted(columns, key=lambda c: c.type != "topogeometry"):
        if column.repair is None:
            raise VerificationFailed(
                f"{db}: {column.label()} is touched by {column.trap} and the target ships no repair",
                "the update was rolled back; upgrade to a target whose extension ships the repair",
            )
        if skip:
            continue
        try:
            how = traps.repair(conn, column)
        except traps.UnrepairableColumn as exc:
            raise VerificationFailed(f"{db}: {exc}", "the update was rolled back") from None
        repaired.append(f"{db}: {column.schema}.{column.table}.{column.column}: {how}")
    if skip == "all":
        return repaired
    covered = {f"{c.schema}.{c.table}.{c.column}" for c in columns}
    reshaped = traps.reshaped_columns(conn, shapes)
    unknown = [f"{key} ({typ})" for key, typ in reshaped.items() if key not in covered]
    if unknown:
        raise VerificationFailed(
            f"{db}: the extension update changed the storage of types used by "
            f"{', '.join(unknown[:10])} and pgleap knows no repair for it",
            "the update was rolled back in this database; the data reads as before. "
            "Keep the extension at its old version, or rewrite those columns after the update yourself",
        )
    if tables:
        after = table_hashes(conn, only=set(tables))[0]
        differ = {t for t in tables if before.get(t) != after.get(t)}
        if differ:
            names = [c.label() for c in columns if c.key in differ]
            raise VerificationFailed(
                f"{db}: values read differently after the extension update: {', '.join(names)}",
                "the update was rolled back in this database; the data reads as before",
            )
    return repaired


def _update(conn, stale: dict[str, tuple[str, str, bool]]) -> None:
    family = [e for e in _FAMILY_ORDER if e in stale]
    if family and all(stale[e][2] for e in family):
        # Some PostGIS versions need a second call to finish (documented upstream).
        for _ in range(2):
            conn.execute("SELECT postgis_extensions_upgrade()")
            if "need upgrade" not in conn.execute("SELECT postgis_full_version()").fetchone()[0]:
                break
    else:
        for ext in family:
            if stale[ext][2]:
                conn.execute(sql.SQL("ALTER EXTENSION {} UPDATE").format(sql.Identifier(ext)))
    for ext in sorted(stale.keys() - set(_FAMILY_ORDER)):
        if stale[ext][2]:
            conn.execute(sql.SQL("ALTER EXTENSION {} UPDATE").format(sql.Identifier(ext)))


_COLLATION_INDEXES = """
SELECT DISTINCT ic.oid::regclass::text, n.nspname
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = ic.relnamespace
CROSS JOIN LATERAL unnest(i.indcollation::oid[]) AS coll(oid)
LEFT JOIN pg_collation co ON co.oid = coll.oid
WHERE coll.oid <> 0
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
  AND (
    (coll.oid = 100 AND ((%(default_libc)s AND %(libc)s) OR (%(default_icu)s AND %(icu)s)))
    OR (co.collprovider = 'i' AND %(icu)s)
    OR (co.collprovider = 'c' AND co.collcollate NOT IN ('C', 'POSIX') AND %(libc)s)
  )
ORDER BY 1
"""


def analyze_runs(new_major: int) -> list[list[str]]:
    """vacuumdb runs after pg_upgrade (both runtimes). PG18 carries most statistics over: fill
    the missing ones in stages first, then the rest."""
    if new_major >= 18:
        return [["--analyze-in-stages", "--missing-stats-only"], ["--analyze-only"]]
    return [["--analyze-in-stages"]]


def collation_indexes(server: Server, db: str, *, libc_changed: bool, icu_changed: bool) -> list[str]:
    """Indexes whose order depends on a collation library that changed (the DB default included)."""
    with server.connect(db) as conn:
        version = int(conn.execute("SHOW server_version_num").fetchone()[0])
        provider_col = "datlocprovider::text" if version >= 150000 else "'c'"
        provider, collate = conn.execute(
            f"SELECT {provider_col}, datcollate FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        params = {
            "default_libc": provider == "c" and collate not in ("C", "POSIX"),
            "default_icu": provider == "i",
            "libc": libc_changed,
            "icu": icu_changed,
        }
        return [r[0] for r in conn.execute(_COLLATION_INDEXES, params).fetchall()]


_INTERRUPTED_REINDEX = """
SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE NOT i.indisvalid AND c.relname ~ '_cc(new|old)[0-9]*$'
"""


def drop_interrupted_reindex_leftovers(conn) -> list[str]:
    """A REINDEX CONCURRENTLY cut short leaves an invalid `<index>_ccnew` (or `_ccold`) beside the
    index, which stays valid: drop the leftover, or a rerun reindexes it and the health check fails."""
    dropped = []
    for (name,) in conn.execute(_INTERRUPTED_REINDEX).fetchall():
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.SQL(name)))
        dropped.append(name)
    return dropped


def reindex_collation_dependent(server: Server, *, libc_changed: bool, icu_changed: bool) -> list[str]:
    """REINDEX … CONCURRENTLY what depends on a changed glibc/ICU, then record the new versions."""
    done: list[str] = []
    if not (libc_changed or icu_changed):
        return done
    for db in server.databases():
        with server.connect(db) as conn:
            for index in drop_interrupted_reindex_leftovers(conn):
                logger.warning(
                    "dropped %s in %s, left invalid by an interrupted REINDEX CONCURRENTLY", index, db
                )
        indexes = collation_indexes(server, db, libc_changed=libc_changed, icu_changed=icu_changed)
        with server.connect(db) as conn:
            blocker = faults.hold_reindex(server, db) if indexes and faults.armed("reindex") else None
            for index in indexes:
                conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.SQL(index)))
                done.append(f"{db}: {index}")
            if blocker is not None:
                blocker.close()
            version = int(conn.execute("SHOW server_version_num").fetchone()[0])
            if version >= 150000:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} REFRESH COLLATION VERSION").format(sql.Identifier(db))
                )
            for (name,) in conn.execute(
                "SELECT oid::regcollation::text FROM pg_collation "
                "WHERE collversion IS DISTINCT FROM pg_collation_actual_version(oid) AND collversion IS NOT NULL"
            ).fetchall():
                conn.execute(sql.SQL("ALTER COLLATION {} REFRESH VERSION").format(sql.SQL(name)))
        if indexes:
            logger.info("rebuilt %d collation-dependent indexes in %s", len(indexes), db)
    return done


def run(
    server: Server,
    *,
    report: Report,
    libc_changed: bool,
    icu_changed: bool,
    analyze: Callable[[], str],
    serving: bool = False,
) -> dict[str, list[str]]:
    """Update extensions, rebuild collation-dependent indexes, rebuild statistics; one report phase each.

    `libc_changed`/`icu_changed` come from the plan (MajorUpgrade.libc_changed, .icu_changed);
    `analyze` runs vacuumdb and returns how it ran. `serving`: the database already serves
    clients (--downtime minimal); the phase lines say so. Extensions left without an update
    path are named on the console either way.
    Returns what was done, keyed as the run state records it (extensions_updated,
    extensions_left, reindexed).
    """
    how = "on the serving database" if serving else "postgis_extensions_upgrade(), ALTER EXTENSION"
    with report.phase("update extensions", how) as ph:
        updated, left, repaired = update_extensions(server)
        ph.detail = f"{len(updated)} updated" + (f", {len(left)} without update path" if left else "")
        ph.detail += f", {len(repaired)} columns repaired" if repaired else ""
        for item in left:
            report.say(f"  [yellow]left as is[/] {escape(item)}")
        for item in repaired:
            report.say(f"  repaired   {escape(item)}")
    with report.phase("rebuild collation-dependent indexes", "REINDEX CONCURRENTLY" if serving else "") as ph:
        reindexed = reindex_collation_dependent(server, libc_changed=libc_changed, icu_changed=icu_changed)
        ph.detail = f"{len(reindexed)} indexes" if libc_changed or icu_changed else "libraries unchanged"
    with report.phase("statistics", "vacuumdb --analyze-in-stages") as ph:
        ph.detail = analyze()
    return {
        "extensions_updated": updated,
        "extensions_left": left,
        "trap_repairs": repaired,
        "reindexed": reindexed,
    }
