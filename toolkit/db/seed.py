"""A small but real PostGIS database: what the demo upgrades and the tests fingerprint.

Points, polygons, a topology with TopoGeometry layers in two schemas, a raster,
partitioned tables (range, list, hash), text indexes under a libc and an ICU
collation, a materialized view, sequences, several databases.
"""

from __future__ import annotations

from toolkit.db.sql import Server

MAIN_DB = [
    "CREATE EXTENSION IF NOT EXISTS postgis_raster",
    "CREATE EXTENSION IF NOT EXISTS hstore",
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE EXTENSION IF NOT EXISTS btree_gist",
    'CREATE EXTENSION IF NOT EXISTS "uuid-ossp"',
    """CREATE TABLE places (
        id bigserial PRIMARY KEY,
        name text NOT NULL,
        name_icu text COLLATE "und-x-icu",
        tags hstore,
        geom geometry(Point, 4326) NOT NULL)""",
    """INSERT INTO places (name, name_icu, tags, geom)
       SELECT 'place ' || g || CASE WHEN g % 7 = 0 THEN ' Ärger' WHEN g % 5 = 0 THEN ' -dash' ELSE '' END,
              CASE WHEN g % 3 = 0 THEN 'a-b ' || g ELSE 'ab ' || g END,
              hstore('kind', CASE WHEN g % 2 = 0 THEN 'even' ELSE 'odd' END),
              ST_SetSRID(ST_MakePoint((g % 360) - 180 + 0.5, (g % 170) - 85 + 0.25), 4326)
       FROM generate_series(1, {rows}) AS g""",
    "CREATE INDEX places_geom_gist ON places USING gist (geom)",
    'CREATE INDEX places_name_libc ON places (name COLLATE "en_US.utf8")',
    "CREATE INDEX places_name_icu ON places (name_icu)",
    "CREATE INDEX places_name_trgm ON places USING gist (name gist_trgm_ops)",
    """CREATE TABLE parcels (
        id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
        owner text,
        area geometry(Polygon, 3857))""",
    """INSERT INTO parcels (id, owner, area)
       SELECT uuid_generate_v5(uuid_ns_url(), 'parcel' || g), 'owner ' || (g % 50),
              ST_Transform(ST_SetSRID(ST_Buffer(ST_MakePoint(g % 40, g % 30), 0.2), 4326), 3857)
       FROM generate_series(1, {polygons}) AS g""",
    "CREATE INDEX parcels_area_gist ON parcels USING gist (area)",
    "CREATE TABLE elevation (rid serial PRIMARY KEY, rast raster)",
    """INSERT INTO elevation (rast)
       SELECT ST_AsRaster(ST_Buffer(ST_MakePoint(g, g), 5), 20, 20, '8BUI', g, 0) FROM generate_series(1, 5) AS g""",
    "SELECT topology.CreateTopology('roads', 4326)",
    "SELECT topology.TopoGeo_AddLineString('roads', 'SRID=4326;LINESTRING(0 0, 1 1, 2 0)'::geometry)",
    "SELECT topology.TopoGeo_AddLineString('roads', 'SRID=4326;LINESTRING(0 1, 2 1)'::geometry)",
    # TopoGeometry layers in two schemas (PostGIS 3.6 widened their ids: the trap pgleap repairs),
    # one with an expression index (upstream's repair refuses those: rebuilt around it).
    "CREATE SCHEMA city",
    "CREATE TABLE city.streets (id serial PRIMARY KEY, name text)",
    "SELECT topology.AddTopoGeometryColumn('roads', 'city', 'streets', 'topo', 'LINE')",
    "CREATE INDEX streets_lower_name ON city.streets (lower(name))",
    """INSERT INTO city.streets (name, topo)
       SELECT 'street ' || g, topology.toTopoGeom(
                ST_SetSRID(ST_MakeLine(ST_MakePoint(3 + g * 0.1, 2), ST_MakePoint(3 + g * 0.1, 3)), 4326),
                'roads', (SELECT layer_id FROM topology.layer WHERE table_name = 'streets'))
       FROM generate_series(1, 25) AS g""",
    "CREATE TABLE trails (id int PRIMARY KEY, topo_refs topology.topoelementarray, first_ref topology.topoelement)",
    "SELECT topology.AddTopoGeometryColumn('roads', 'public', 'trails', 'topo', 'LINE')",
    """INSERT INTO trails (id, topo_refs, first_ref, topo)
       SELECT g, ARRAY[ARRAY[g, 2], ARRAY[g + 1, 2]]::topology.topoelementarray, ARRAY[g, 2]::topology.topoelement,
              topology.toTopoGeom(
                ST_SetSRID(ST_MakeLine(ST_MakePoint(10 + g * 0.1, 5), ST_MakePoint(10 + g * 0.1, 6)), 4326),
                'roads', (SELECT layer_id FROM topology.layer WHERE table_name = 'trails'))
       FROM generate_series(1, 15) AS g""",
    # Partitioned tables: range, list and hash, with a primary key, a unique and a GiST index on the parent.
    """CREATE TABLE tracks (id bigint, t date, geom geometry(Point, 4326), PRIMARY KEY (id, t))
       PARTITION BY RANGE (t)""",
    "CREATE TABLE tracks_2024 PARTITION OF tracks FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
    "CREATE TABLE tracks_2025 PARTITION OF tracks FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    "CREATE INDEX tracks_geom ON tracks USING gist (geom)",
    """INSERT INTO tracks SELECT g, date '2024-01-01' + (g % 700), ST_SetSRID(ST_MakePoint(g % 90, g % 45), 4326)
       FROM generate_series(1, 1000) AS g""",
    "CREATE TABLE sightings (id int, region text, UNIQUE (id, region)) PARTITION BY LIST (region)",
    "CREATE TABLE sightings_north PARTITION OF sightings FOR VALUES IN ('north')",
    "CREATE TABLE sightings_south PARTITION OF sightings FOR VALUES IN ('south')",
    "INSERT INTO sightings SELECT g, CASE WHEN g % 2 = 0 THEN 'north' ELSE 'south' END FROM generate_series(1, 300) g",
    "CREATE TABLE readings (id int PRIMARY KEY, v float8) PARTITION BY HASH (id)",
    "CREATE TABLE readings_0 PARTITION OF readings FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
    "CREATE TABLE readings_1 PARTITION OF readings FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
    "INSERT INTO readings SELECT g, g / 7.0 FROM generate_series(1, 300) AS g",
    """CREATE MATERIALIZED VIEW place_counts AS
       SELECT tags -> 'kind' AS kind, count(*) AS n, ST_Extent(geom)::text AS extent FROM places GROUP BY 1""",
    "CREATE SEQUENCE invoice_no START 1000",
    "SELECT nextval('invoice_no') FROM generate_series(1, 42)",
]

SECOND_DB = [
    "CREATE TABLE regions (id int PRIMARY KEY, label text, boundary geometry(MultiPolygon, 4326))",
    """INSERT INTO regions SELECT g, 'region ' || g,
       ST_Multi(ST_SetSRID(ST_MakeEnvelope(g, g, g + 1, g + 1), 4326)) FROM generate_series(1, 200) AS g""",
    "CREATE INDEX regions_boundary ON regions USING gist (boundary)",
    "CREATE INDEX regions_label ON regions (label)",
]


def seed(
    server: Server, main_db: str, *, rows: int = 20000, polygons: int = 2000, second_db: str = "analytics"
) -> None:
    """Create the demo data in `main_db` and a second database made from template_postgis."""
    with server.connect(main_db) as conn:
        for statement in MAIN_DB:
            conn.execute(statement.format(rows=rows, polygons=polygons))
        conn.execute("ANALYZE")
    with server.connect("postgres") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (second_db,)).fetchone()
        if not exists:
            from psycopg import sql

            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template_postgis").format(sql.Identifier(second_db))
            )
    with server.connect(second_db) as conn:
        for statement in SECOND_DB:
            conn.execute(statement)
