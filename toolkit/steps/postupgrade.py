"""Work on the new cluster after pg_upgrade: extensions, collation-dependent indexes.

Each function checks before it acts and returns what it did, so a rerun after a
crash reports "nothing to do" instead of doing it twice.
"""

from __future__ import annotations

import logging

from psycopg import sql

from toolkit.steps.sql import Server

logger = logging.getLogger(__name__)

POSTGIS_FAMILY = {"postgis", "postgis_raster", "postgis_topology", "postgis_sfcgal", "postgis_tiger_geocoder"}


def update_extensions(server: Server) -> list[str]:
    """PostGIS via postgis_extensions_upgrade(), every other extension via ALTER EXTENSION … UPDATE."""
    done: list[str] = []
    for db in server.databases():
        with server.connect(db) as conn:
            stale = dict(
                conn.execute(
                    "SELECT e.extname, e.extversion FROM pg_extension e "
                    "JOIN pg_available_extensions a ON a.name = e.extname "
                    "WHERE a.default_version IS DISTINCT FROM e.extversion ORDER BY 1"
                ).fetchall()
            )
            if not stale:
                continue
            if POSTGIS_FAMILY & stale.keys():
                # Some PostGIS versions need a second call to finish (documented upstream).
                for _ in range(2):
                    conn.execute("SELECT postgis_extensions_upgrade()")
                    full = conn.execute("SELECT postgis_full_version()").fetchone()[0]
                    if "need upgrade" not in full:
                        break
            for ext in sorted(stale.keys() - POSTGIS_FAMILY):
                conn.execute(sql.SQL("ALTER EXTENSION {} UPDATE").format(sql.Identifier(ext)))
            now = dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())
            for ext, old in stale.items():
                if now.get(ext) != old:
                    done.append(f"{db}: {ext} {old} -> {now.get(ext)}")
                    logger.info("updated extension %s in %s from %s to %s", ext, db, old, now.get(ext))
    return done


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


def reindex_collation_dependent(server: Server, *, libc_changed: bool, icu_changed: bool) -> list[str]:
    """REINDEX … CONCURRENTLY what depends on a changed glibc/ICU, then record the new versions."""
    done: list[str] = []
    if not (libc_changed or icu_changed):
        return done
    for db in server.databases():
        indexes = collation_indexes(server, db, libc_changed=libc_changed, icu_changed=icu_changed)
        with server.connect(db) as conn:
            for index in indexes:
                conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(sql.SQL(index)))
                done.append(f"{db}: {index}")
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
