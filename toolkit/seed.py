"""A small but real PostGIS database: what the demo upgrades and the tests fingerprint.

Points, polygons, a topology, a raster, text indexes under a libc and an ICU
collation, a materialized view, sequences, several databases.
"""

from __future__ import annotations

from toolkit.steps.sql import Server

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
