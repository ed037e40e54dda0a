"""Each column read through the current catalog's idea of its type, as text to hash.

`row::text` is not proof of stored content: array output follows the element type
stored in each value, so a catalog-only type change (PostGIS 3.6 widened the topology
domains from integer[] to bigint[]) prints correctly and still reads wrongly through
subscripts, casts and comparisons. So a fingerprint hashes, per column:
  - geometry / geography / raster: their binary form (EWKB, WKB) in hex;
  - composite types: each field, recursively;
  - one-dimensional arrays (and domains over them): each element read by subscript,
    which goes through the catalog's element type, plus the bounds;
  - domains: their base type's form;
  - anything else: its text output, under fixed session settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

# Text output that depends on the session is pinned, so two clusters' settings cannot differ.
SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, MDY'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
)

_TYPES = """
SELECT t.oid, t.typname, n.nspname, t.typtype::text, t.typbasetype, t.typelem, t.typlen, t.typcategory::text,
       t.typrelid
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
"""

_COLUMNS = """
SELECT attname, atttypid FROM pg_attribute
WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum
"""

_MAX_DEPTH = 4


@dataclass(frozen=True)
class TypeInfo:
    oid: int
    name: str
    schema: str
    kind: str  # typtype: b base, c composite, d domain, e enum, r range, m multirange, p pseudo
    base: int
    element: int
    length: int
    category: str
    relid: int


class Canonical:
    """Builds the hashed expression of each column for one database connection."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.types = {row[0]: TypeInfo(*row) for row in conn.execute(_TYPES).fetchall()}
        self.forms: dict[str, int] = {}  # form -> columns hashed that way, for the report

    def row_hash(self, relid: int, alias: str = "t") -> sql.Composable:
        """md5 of the canonical forms of every column of the relation, as one row's text."""
        columns = self.conn.execute(_COLUMNS, (relid,)).fetchall()
        if not columns:
            return sql.SQL("md5('')")
        exprs = [self._expr(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(name)), typ, 0)
                 for name, typ in columns]  # fmt: skip
        return sql.SQL("md5(ROW({}, NULL)::text)").format(sql.SQL(", ").join(exprs))

    def _count(self, form: str) -> None:
        self.forms[form] = self.forms.get(form, 0) + 1

    def _expr(self, value: sql.Composable, oid: int, depth: int) -> sql.Composable:
        info = self.types.get(oid)
        if info is None or depth > _MAX_DEPTH:
            return sql.SQL("({})::text").format(value)
        if info.kind == "d":
            return self._expr(value, info.base, depth)
        if info.name in ("geometry", "geography", "raster") and info.kind == "b":
            return self._binary(value, info)
        if info.kind == "c" and info.relid:
            fields = self.conn.execute(_COLUMNS, (info.relid,)).fetchall()
            if depth == 0:
                self._count("fields")
            parts = [self._expr(sql.SQL("({}).{}").format(value, sql.Identifier(f)), t, depth + 1)
                     for f, t in fields]  # fmt: skip
            return sql.SQL("CASE WHEN ({v}) IS NULL THEN NULL ELSE ROW({parts}, NULL)::text END").format(
                v=value, parts=sql.SQL(", ").join(parts)
            )
        if info.category == "A" and info.element and info.length == -1:
            if depth == 0:
                self._count("elements")
            i = sql.Identifier(f"pgleap_i{depth}")  # one name per depth: nested arrays do not shadow
            element = self._expr(sql.SQL("({})[{}]").format(value, i), info.element, depth + 1)
            return sql.SQL(
                "CASE WHEN array_ndims({v}) = 1 THEN array_dims({v}) || "
                "(SELECT coalesce(string_agg(coalesce({e}, 'NULL'), ',' ORDER BY {i}), '') "
                "FROM generate_subscripts({v}, 1) AS {i}) ELSE ({v})::text END"
            ).format(v=value, e=element, i=i)
        if depth == 0:
            self._count("text")
        return sql.SQL("({})::text").format(value)

    def _binary(self, value: sql.Composable, info: TypeInfo) -> sql.Composable:
        """EWKB for geometry (SRID kept), EWKB of the cast for geography, WKB for raster."""
        schema = sql.Identifier(info.schema)
        self._count(f"{info.name} binary")
        if info.name == "raster":
            return sql.SQL("encode({}.st_asbinary({}), 'hex')").format(schema, value)
        if info.name == "geography":
            value = sql.SQL("({})::{}.geometry").format(value, schema)
        return sql.SQL("encode({}.st_asewkb({}), 'hex')").format(schema, value)


_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relispopulated,
       EXISTS (SELECT 1 FROM pg_depend d
               WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') AS ext_owned
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'
ORDER BY 2, 3
"""

# Sum of the first 64 bits of each row's md5: order-independent and O(1) memory.
_TABLE_HASH = "SELECT count(*), coalesce(sum(('x' || left({}, 16))::bit(64)::bigint::numeric), 0)::text FROM ONLY {} AS t"


def table_hashes(conn, *, only: set[str] | None = None, forms: dict | None = None) -> tuple[dict, dict, dict]:
    """(user tables, extension-owned tables, sequences) of the connection's database, keyed
    `schema.name`; `only` limits them to those keys."""
    for setting in SESSION_SETTINGS:
        conn.execute(setting)
    canonical = Canonical(conn)
    tables: dict[str, tuple[int, str]] = {}
    ext_tables: dict[str, tuple[int, str]] = {}
    sequences: dict[str, tuple] = {}
    for oid, schema, name, kind, populated, ext_owned in conn.execute(_TABLES).fetchall():
        qualified = sql.Identifier(schema, name)
        key = f"{schema}.{name}"
        if only is not None and key not in only:
            continue
        if kind == "S":
            row = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(qualified)).fetchone()
            sequences[key] = tuple(row)
            continue
        if kind == "m" and not populated:
            continue
        query = sql.SQL(_TABLE_HASH).format(canonical.row_hash(oid), qualified)
        count, digest = conn.execute(query).fetchone()
        (ext_tables if ext_owned else tables)[key] = (count, digest)
    if forms is not None:
        for form, n in canonical.forms.items():
            forms[form] = forms.get(form, 0) + n
    return tables, ext_tables, sequences
