"""Seeded datasets made once per (image, dataset) on a golden volume, then cloned for every method.

postgis:  one table of points and small polygons with attributes, a GiST index
          and three btree indexes (bigint primary key, int, text); rows are a
          pure function of (row number, seed), so the same seed gives the same data.
schema:   many small tables (id primary key, a text, a point; every tenth with a
          GiST index) spread over four schemas: what makes pg_upgrade's schema
          dump/restore and per-file linking slow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from devtools.bench.harness import SUPERUSER, Harness

logger = logging.getLogger(__name__)

# Measured for the table below with its four indexes (heap ~215 B, indexes ~115 B per row).
BYTES_PER_ROW = 330

# Settings used ONLY while generating (command-line flags of the generator container,
# not written to postgresql.conf): no WAL for tables created in the same transaction,
# no fsync. The benchmark's servers start again with the image's defaults. Parallel index
# builds share memory through files in PGDATA (mmap), not Docker's 64 MB /dev/shm, which a
# 512 MB maintenance_work_mem overflows ("could not resize shared memory segment").
GENERATOR_FLAGS = [
    "-c", "wal_level=minimal", "-c", "max_wal_senders=0", "-c", "fsync=off",
    "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "maintenance_work_mem=512MB",
    "-c", "max_wal_size=16GB", "-c", "checkpoint_timeout=1h", "-c", "max_locks_per_transaction=256",
    "-c", "dynamic_shared_memory_type=mmap",
]  # fmt: skip


@dataclass(frozen=True)
class Dataset:
    kind: str  # postgis | schema
    size: float  # GB for postgis, tables for schema

    @property
    def key(self) -> str:
        return f"postgis-{self.size:g}GB" if self.kind == "postgis" else f"schema-{int(self.size)}t"

    @property
    def rows(self) -> int:
        return int(self.size * 1024**3 / BYTES_PER_ROW) if self.kind == "postgis" else 0

    @property
    def family(self) -> str:
        return self.kind


def postgis_sql(rows: int, seed: int) -> list[str]:
    # hashint8 is PostgreSQL's own (stable) integer hash: deterministic, no random() state.
    return [
        "BEGIN",
        """CREATE TABLE features (
            id bigint NOT NULL,
            name text NOT NULL,
            category integer NOT NULL,
            measured double precision,
            updated date,
            geom geometry(Point, 4326) NOT NULL,
            footprint geometry(Polygon, 4326))""",
        f"""INSERT INTO features
            SELECT g, 'feature ' || (h1 % 1000003), h1 % 1000, (h2 % 100000) / 100.0,
                   date '2000-01-01' + (h2 % 9000)::int,
                   ST_SetSRID(ST_MakePoint(x, y), 4326),
                   ST_MakeEnvelope(x, y, x + 0.001, y + 0.001, 4326)
            FROM (SELECT g, h1, h2, (h1 % 3600000) / 10000.0 - 180 AS x, (h2 % 1700000) / 10000.0 - 85 AS y
                  FROM (SELECT g, (hashint8(g * 2 + {seed}) & 2147483647)::bigint AS h1,
                               (hashint8(g * 2 + 1 + {seed}) & 2147483647)::bigint AS h2
                        FROM generate_series(1, {rows}) AS g) AS s) AS p""",
        "ALTER TABLE features ADD PRIMARY KEY (id)",
        "CREATE INDEX features_geom ON features USING gist (geom)",
        "CREATE INDEX features_category ON features (category)",
        "CREATE INDEX features_name ON features (name)",
        "COMMIT",
        # Frozen and hinted, like a table that has lived through autovacuum: otherwise every
        # primary started on a clone spends its first minutes vacuuming and dirtying pages,
        # which the stop and pg_upgrade's final sync then pay for (more the bigger the data).
        "VACUUM (FREEZE, ANALYZE) features",
    ]


def schema_batches(tables: int, batch: int = 250) -> list[str]:
    """DO blocks of `batch` tables each (one transaction each: lock table limits)."""
    out = []
    for start in range(0, tables, batch):
        end = min(tables, start + batch)
        out.append(
            f"""DO $$ BEGIN
              FOR i IN {start}..{end - 1} LOOP
                EXECUTE format('CREATE TABLE IF NOT EXISTS s%s.t%s (id int PRIMARY KEY, label text,
                                geom geometry(Point, 4326))', i % 4, i);
                EXECUTE format('INSERT INTO s%s.t%s SELECT g, ''row '' || g,
                                ST_SetSRID(ST_MakePoint(g, %s %% 80), 4326) FROM generate_series(1, 10) g',
                               i % 4, i, i);
                IF i % 10 = 0 THEN
                  EXECUTE format('CREATE INDEX ON s%s.t%s USING gist (geom)', i % 4, i);
                END IF;
              END LOOP; END $$"""
        )
    return out


def generate(h: Harness, image: str, mount: str, ds: Dataset, seed: int) -> tuple[str, dict]:
    """The golden volume for this image and dataset, its cluster cleanly shut down; and facts about it."""
    golden = h.volume(f"golden-{ds.key}")
    name = h.start_server(image, golden, mount, args=GENERATOR_FLAGS)
    server = h.server(name)
    with server.connect(SUPERUSER) as conn:
        if ds.kind == "postgis":
            for statement in postgis_sql(ds.rows, seed):
                conn.execute(statement)
        else:
            for i in range(4):
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS s{i}")
            for block in schema_batches(int(ds.size)):
                conn.execute(block)
            conn.execute("VACUUM (FREEZE, ANALYZE)")
        db_bytes = conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()[0]
        tables = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
            "c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'topology', 'tiger', "
            "'tiger_data')"
        ).fetchone()[0]
        rels = conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]
        conn.execute("CHECKPOINT")
    h.rt.stop_container(name)
    h.rt.remove(name)
    facts = {"rows": ds.rows, "database_bytes": int(db_bytes), "user_tables": tables, "relations": rels}
    return golden, facts
