"""Known extension-upgrade traps, as data: what an `ALTER EXTENSION … UPDATE` does to stored values.

An entry names the extension, the version ranges it applies to, the query that finds
the user columns it touches, the repair (None: the target ships none, so the plan
refuses), and why. A new trap is one more entry in TRAPS.

Repairs run in the same transaction as the extension update (toolkit/db/postupgrade.py):
a crash rolls both back, so a rerun sees the old version and repairs again. Beside the
table there is a guard for traps nobody has written down yet: an extension type whose
storage shape (length, fields, base or element type) changed while user columns use it,
with no repair covering them, stops the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql


@dataclass(frozen=True)
class Trap:
    name: str
    extension: str
    from_below: str  # applies when the installed version is older than this
    to_from: str  # … and the target version is at least this
    to_below: str | None  # … and older than this (None: no upper bound)
    detect: str  # SQL: (schema, table, column, type, estimated rows) of the user columns touched
    repair: str | None  # how each column is repaired (a key of REPAIRS), None: no repair in such a target
    why: str


_TOPOLOGY_COLUMNS = """
SELECT n.nspname, c.relname, a.attname, t.typname, greatest(c.reltuples, 0)::bigint
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind = 'r'
  AND t.typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'topology')
  AND t.typname IN ('topogeometry', 'topoelement', 'topoelementarray')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2, 3
"""

_TOPOLOGY_WHY = (
    "PostGIS 3.6 widened TopoGeometry's id and the topology element domains from integer to bigint; "
    "the extension update changes the catalog without rewriting stored rows, so old values read wrongly "
    "(e.g. (1,1,1,3) reads as (1,1,12884901889,0)) until each column is rewritten"
)

TRAPS: tuple[Trap, ...] = (
    Trap(
        name="postgis-topology-bigint-ids",
        extension="postgis_topology",
        from_below="3.6",
        to_from="3.6.1",
        to_below=None,
        detect=_TOPOLOGY_COLUMNS,
        repair="topology-rewrite",
        why=_TOPOLOGY_WHY,
    ),
    Trap(
        name="postgis-topology-bigint-ids-no-repair",
        extension="postgis_topology",
        from_below="3.6",
        to_from="3.6",
        to_below="3.6.1",
        detect=_TOPOLOGY_COLUMNS,
        repair=None,  # topology.FixCorruptTopoGeometryColumn arrived in 3.6.1
        why=_TOPOLOGY_WHY
        + "; PostGIS 3.6.0 ships no repair (topology.FixCorruptTopoGeometryColumn is 3.6.1+)",
    ),
)


def version_key(version: str) -> tuple[int, ...]:
    """'3.6.1' -> (3, 6, 1); '3.7.0dev' -> (3, 7, 0); numbers only, compared as tuples."""
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3]) or (0,)


def applies(trap: Trap, installed: str, target: str) -> bool:
    old, new = version_key(installed), version_key(target)
    return (
        old < version_key(trap.from_below)
        and new >= version_key(trap.to_from)
        and (trap.to_below is None or new < version_key(trap.to_below))
    )


def matching(extension: str, installed: str, target: str) -> list[Trap]:
    return [t for t in TRAPS if t.extension == extension and applies(t, installed, target)]


@dataclass(frozen=True)
class Touched:
    """One user column a trap touches."""

    trap: str
    schema: str
    table: str
    column: str
    type: str
    rows: int
    repair: str | None

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.table}"

    def label(self) -> str:
        return f"{self.schema}.{self.table}.{self.column} ({self.type}, ~{self.rows} rows)"


def touched(conn, stale: dict[str, tuple[str, str]]) -> list[Touched]:
    """The columns of this database that the traps of its pending updates touch.
    `stale`: extension -> (installed, target)."""
    out: list[Touched] = []
    for ext, (installed, target) in stale.items():
        for trap in matching(ext, installed, target):
            for schema, table, column, typ, rows in conn.execute(trap.detect).fetchall():
                out.append(Touched(trap.name, schema, table, column, typ, rows, trap.repair))
    return out


_HAS_CHILDREN = "SELECT 1 FROM pg_inherits WHERE inhparent = %s::regclass"

_REBUILT_INDEXES = """
SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = %s::regclass AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
"""


def repair(conn, column: Touched) -> str:
    """Rewrite one column's stored values in the target's types; returns what was done.

    TopoGeometry columns (each table with storage, partitions one by one): upstream's
    topology.FixCorruptTopoGeometryColumn, which refuses tables with expression or partial
    indexes, so those are dropped and rebuilt around it. topoelement / topoelementarray
    columns: a rewrite through their text form (array output follows the element type
    stored in each value, so it still prints the old values right).
    """
    table = sql.Identifier(column.schema, column.table)
    col = sql.Identifier(column.column)
    if column.type == "topogeometry":
        regclass = table.as_string(conn)
        if conn.execute(_HAS_CHILDREN, (regclass,)).fetchone():
            # Partitions are repaired one by one (each is a table with storage of its own);
            # upstream refuses a parent of inheritance children, and so does pgleap.
            raise UnrepairableColumn(column, "an inheritance parent: upstream's repair refuses it")
        rebuilt = conn.execute(_REBUILT_INDEXES, (regclass,)).fetchall()
        for name, _ in rebuilt:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(column.schema, name)))
        conn.execute(
            "SELECT topology.FixCorruptTopoGeometryColumn(%s, %s, %s)",
            (column.schema, column.table, column.column),
        )
        for _, definition in rebuilt:
            conn.execute(definition)
        how = "topology.FixCorruptTopoGeometryColumn"
        return how + (f" (rebuilt {len(rebuilt)} expression/partial indexes around it)" if rebuilt else "")
    conn.execute(
        sql.SQL("UPDATE {t} SET {c} = ({c})::text::topology.{typ} WHERE {c} IS NOT NULL").format(
            t=table, c=col, typ=sql.Identifier(column.type)
        )
    )
    return f"rewritten through its text form as topology.{column.type}"


class UnrepairableColumn(Exception):
    def __init__(self, column: Touched, why: str) -> None:
        super().__init__(f"{column.label()}: {why}")
        self.column = column


# Storage shape of every extension-owned type: what a catalog-only change alters.
_SHAPES = """
SELECT t.oid, format_type(t.oid, NULL), e.extname,
       concat_ws('|', t.typlen, t.typbyval, t.typalign, t.typbasetype::regtype, t.typelem::regtype,
                 (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attlen,
                                    ',' ORDER BY a.attnum)
                  FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped))
FROM pg_type t
JOIN pg_depend d ON d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid
"""

_COLUMNS_OF_TYPES = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'm')
  AND (a.atttypid = ANY(%(types)s) OR t.typelem = ANY(%(types)s) OR t.typbasetype = ANY(%(types)s))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2, 3
"""


def type_shapes(conn) -> dict[int, tuple[str, str, str]]:
    """oid -> (type name, extension, shape) of every extension-owned type."""
    return {oid: (name, ext, shape) for oid, name, ext, shape in conn.execute(_SHAPES).fetchall()}


def reshaped_columns(conn, before: dict[int, tuple[str, str, str]]) -> dict[str, str]:
    """User columns whose extension type changed its storage shape since `before`:
    'schema.table.column' -> its type."""
    after = type_shapes(conn)
    changed = [oid for oid, (_, _, shape) in before.items() if oid in after and after[oid][2] != shape]
    if not changed:
        return {}
    rows = conn.execute(_COLUMNS_OF_TYPES, {"types": changed}).fetchall()
    return {f"{s}.{t}.{c}": typ for s, t, c, typ in rows}


def plan_findings(server, facts, target_versions: dict[str, str]) -> list[tuple[str, Touched]]:
    """(database, column) for every column a trap touches, read from the old cluster before
    anything stops: `facts` (ClusterFacts) gives each database's installed versions,
    `target_versions` the new image's default versions."""
    out: list[tuple[str, Touched]] = []
    for db in facts.databases:
        if not db.allow_connections:
            continue
        stale = {
            ext: (installed, target_versions[ext])
            for ext, installed in db.extensions.items()
            if ext in target_versions and matching(ext, installed, target_versions[ext])
        }
        if stale:
            with server.connect(db.name) as conn:
                out += [(db.name, t) for t in touched(conn, stale)]
    return out
