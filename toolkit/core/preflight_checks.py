"""pg_upgrade's own checks, and pgleap's, as data: run as SQL on the live server before the stop.

Modelled on src/bin/pg_upgrade/check.c: one entry per check with the majors it
applies to, a query returning the offending objects' names, a message and the fix.
pg_upgrade runs these checks only after the old cluster is shut down (or in
`--check`, which pgleap also runs only inside the downtime); asking the same
questions of the running server turns a stopped database into a refusal that
changed nothing. Pure: no I/O (toolkit/db/preflight.py runs the queries).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from toolkit.core.facts import ImageFacts

ANY = (0, 999)


@dataclass(frozen=True)
class Check:
    """One thing that makes pg_upgrade (or the upgraded cluster) fail, and how to see it in SQL.

    `query` returns one text column: the name of each offending object. `scope`
    "database" runs it in every database that accepts connections, "cluster" once.
    `severity` "refuse" stops the plan (exit 3); "warn" only reports.
    `when` names an extra condition the runner evaluates from facts (see `condition_holds`).
    """

    name: str
    old: tuple[int, int]  # old majors it applies to, inclusive
    new: tuple[int, int]  # new majors it applies to, inclusive
    query: str
    message: str
    fix: str
    scope: str = "database"
    severity: str = "refuse"
    when: str = ""

    def applies(self, old_major: int, new_major: int) -> bool:
        return self.old[0] <= old_major <= self.old[1] and self.new[0] <= new_major <= self.new[1]


def _columns_of_types(base_query: str) -> str:
    """Stored user columns whose type is one of `base_query`'s types, or wraps one (domain, array,
    composite, range, nested to any depth): pg_upgrade's check_for_data_types_usage query."""
    return f"""
WITH RECURSIVE oids AS (
    {base_query}
    UNION ALL
    SELECT * FROM (
        WITH x AS (SELECT oid FROM oids)
            SELECT t.oid FROM pg_catalog.pg_type t, x WHERE typbasetype = x.oid AND typtype = 'd'
            UNION ALL
            SELECT t.oid FROM pg_catalog.pg_type t, x WHERE typelem = x.oid AND typtype = 'b'
            UNION ALL
            SELECT t.oid FROM pg_catalog.pg_type t, pg_catalog.pg_class c, pg_catalog.pg_attribute a, x
            WHERE t.typtype = 'c' AND t.oid = c.reltype AND c.oid = a.attrelid
              AND NOT a.attisdropped AND a.atttypid = x.oid
            UNION ALL
            SELECT t.oid FROM pg_catalog.pg_type t, pg_catalog.pg_range r, x
            WHERE t.typtype = 'r' AND r.rngtypid = t.oid AND r.rngsubtype = x.oid
    ) foo
)
SELECT format('%I.%I.%I (%s)', n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod))
FROM pg_catalog.pg_class c, pg_catalog.pg_namespace n, pg_catalog.pg_attribute a
WHERE c.oid = a.attrelid AND NOT a.attisdropped AND a.atttypid IN (SELECT oid FROM oids)
  AND c.relkind IN ('r', 'm', 'i') AND c.relnamespace = n.oid
  AND n.nspname !~ '^pg_temp_' AND n.nspname !~ '^pg_toast_temp_'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1"""


_DROP_COLUMNS = (
    "drop the listed columns (or ALTER TABLE … ALTER COLUMN … TYPE text USING col::text), then plan again"
)

# The internal polymorphic functions PostgreSQL 14 replaced by anycompatible variants (pg_upgrade's list).
_OLD_POLYMORPHICS = (
    "'array_append(anyarray,anyelement)', 'array_cat(anyarray,anyarray)', "
    "'array_prepend(anyelement,anyarray)', 'array_remove(anyarray,anyelement)', "
    "'array_replace(anyarray,anyelement,anyelement)', 'array_position(anyarray,anyelement)', "
    "'array_position(anyarray,anyelement,integer)', 'array_positions(anyarray,anyelement)', "
    "'width_bucket(anyelement,anyarray)'"
)

CHECKS: tuple[Check, ...] = (
    Check(
        name="system composite types in user tables",
        old=ANY,
        new=ANY,
        query=_columns_of_types(
            "SELECT t.oid FROM pg_catalog.pg_type t LEFT JOIN pg_catalog.pg_namespace n "
            "ON t.typnamespace = n.oid WHERE typtype = 'c' AND (t.oid < 16384 OR nspname = 'information_schema')"
        ),
        message="columns of system-defined composite types (their OIDs are not stable across majors)",
        fix=_DROP_COLUMNS,
    ),
    Check(
        name="reg* data types in user tables",
        old=ANY,
        new=ANY,
        query=_columns_of_types(
            "SELECT oid FROM pg_catalog.pg_type t WHERE t.typnamespace = "
            "(SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pg_catalog') AND t.typname IN "
            "('regcollation', 'regconfig', 'regdictionary', 'regnamespace', 'regoper', 'regoperator', "
            "'regproc', 'regprocedure')"
        ),
        message="columns of reg* types that store system OIDs pg_upgrade does not keep "
        "(regclass, regrole and regtype are fine)",
        fix="change the listed columns to text (ALTER TABLE … ALTER COLUMN … TYPE text), or drop them",
    ),
    Check(
        name="aclitem data type in user tables",
        old=(0, 15),
        new=(16, 999),
        query=_columns_of_types("SELECT 'pg_catalog.aclitem'::pg_catalog.regtype AS oid"),
        message="columns of type aclitem (also inside domains, arrays, composites): "
        "its on-disk format changed in PostgreSQL 16",
        fix="change them to text (ALTER TABLE … ALTER COLUMN … TYPE text USING col::text) or drop them; "
        "aclitem[] becomes text[]",
    ),
    Check(
        name="unknown data type in user tables",
        old=(0, 9),
        new=(10, 999),
        query=_columns_of_types("SELECT 'pg_catalog.unknown'::pg_catalog.regtype AS oid"),
        message="columns of type unknown, no longer allowed in tables",
        fix="change them to text (ALTER TABLE … ALTER COLUMN … TYPE text)",
    ),
    Check(
        name="sql_identifier data type in user tables",
        old=(0, 11),
        new=(12, 999),
        query=_columns_of_types("SELECT 'information_schema.sql_identifier'::pg_catalog.regtype AS oid"),
        message="columns of type information_schema.sql_identifier, whose on-disk format changed in 12",
        fix="change them to text or name, or drop them",
    ),
    Check(
        name="removed abstime/reltime/tinterval types in user tables",
        old=(0, 11),
        new=(12, 999),
        query=_columns_of_types(
            "SELECT oid FROM pg_catalog.pg_type WHERE typnamespace = 'pg_catalog'::regnamespace "
            "AND typname IN ('abstime', 'reltime', 'tinterval')"
        ),
        message="columns of the types abstime, reltime or tinterval, removed in PostgreSQL 12",
        fix="change them to timestamptz/interval (or drop them)",
    ),
    Check(
        name="user-defined postfix operators",
        old=(0, 13),
        new=(14, 999),
        query="SELECT format('%I.%s (%s, NONE)', n.nspname, o.oprname, o.oprleft::regtype) "
        "FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON o.oprnamespace = n.oid "
        "WHERE o.oprright = 0 AND o.oid >= 16384 ORDER BY 1",
        message="user-defined postfix operators, no longer supported from PostgreSQL 14",
        fix="DROP OPERATOR each one (replace it with a prefix operator or a function call)",
    ),
    Check(
        name="incompatible polymorphic functions",
        old=(0, 13),
        new=(14, 999),
        query=f"""
SELECT 'aggregate ' || p.oid::regprocedure::text FROM pg_proc p
  JOIN pg_aggregate a ON a.aggfnoid = p.oid
 WHERE p.oid >= 16384 AND a.aggtransfn = ANY(ARRAY[{_OLD_POLYMORPHICS}]::regprocedure[])
   AND a.aggtranstype = ANY(ARRAY['anyarray', 'anyelement']::regtype[])
UNION ALL
SELECT 'aggregate ' || p.oid::regprocedure::text FROM pg_proc p
  JOIN pg_aggregate a ON a.aggfnoid = p.oid
 WHERE p.oid >= 16384 AND a.aggfinalfn = ANY(ARRAY[{_OLD_POLYMORPHICS}]::regprocedure[])
   AND a.aggtranstype = ANY(ARRAY['anyarray', 'anyelement']::regtype[])
UNION ALL
SELECT 'operator ' || op.oid::regoperator::text FROM pg_operator op
 WHERE op.oid >= 16384 AND oprcode = ANY(ARRAY[{_OLD_POLYMORPHICS}]::regprocedure[])
   AND oprleft = ANY(ARRAY['anyarray', 'anyelement']::regtype[])
ORDER BY 1""",
        message="aggregates/operators built on array_append, array_cat … with anyarray/anyelement, "
        "which PostgreSQL 14 changed to anycompatible",
        fix="drop them before the upgrade and recreate them afterwards with anycompatiblearray/anycompatible",
    ),
    Check(
        name="user-defined encoding conversions",
        old=(0, 13),
        new=(14, 999),
        query="SELECT format('%I.%I', n.nspname, c.conname) FROM pg_catalog.pg_conversion c "
        "JOIN pg_catalog.pg_namespace n ON c.connamespace = n.oid WHERE c.oid >= 16384 ORDER BY 1",
        message="user-defined encoding conversions: their functions' signature changed in PostgreSQL 14",
        fix="DROP CONVERSION each one; recreate it after the upgrade with a function of the new signature",
    ),
    Check(
        name="tables WITH OIDS",
        old=(0, 11),
        new=(12, 999),
        query="SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid "
        "WHERE c.relhasoids AND n.nspname <> 'pg_catalog' ORDER BY 1",
        message="tables declared WITH OIDS, no longer supported from PostgreSQL 12",
        fix="ALTER TABLE … SET WITHOUT OIDS on each one",
    ),
    Check(
        name="generated column differs between parent and inheritance child",
        old=(12, 15),
        new=(16, 999),
        query="""
SELECT format('%I.%I.%I (%s; parent %I.%I)', nc.nspname, cc.relname, ac.attname,
              CASE WHEN ac.attgenerated <> '' THEN 'generated in the child only'
                   ELSE 'generated in the parent only' END, np.nspname, cp.relname)
  FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class cc ON cc.oid = i.inhrelid
  JOIN pg_catalog.pg_namespace nc ON nc.oid = cc.relnamespace
  JOIN pg_catalog.pg_class cp ON cp.oid = i.inhparent
  JOIN pg_catalog.pg_namespace np ON np.oid = cp.relnamespace
  JOIN pg_catalog.pg_attribute ac ON ac.attrelid = i.inhrelid AND ac.attnum > 0 AND NOT ac.attisdropped
  JOIN pg_catalog.pg_attribute ap ON ap.attrelid = i.inhparent AND ap.attname = ac.attname
                                 AND ap.attnum > 0 AND NOT ap.attisdropped
 WHERE (ac.attgenerated <> '') <> (ap.attgenerated <> '')
 ORDER BY 1""",
        message="inheritance children whose column is generated while the parent's is not (or the reverse): "
        "PostgreSQL 16+ rejects them in pg_upgrade's schema restore "
        '("column … in child table must not be a generated column")',
        fix="make parent and child agree (ALTER TABLE child NO INHERIT parent, or recreate the column "
        "as generated/plain on both), then plan again",
    ),
    Check(
        name="not-null constraint missing in an inheritance child",
        old=ANY,
        new=(18, 999),
        query="SELECT format('%I.%I.%I', nc.nspname, cc.relname, ac.attname) "
        "FROM pg_catalog.pg_inherits i, pg_catalog.pg_attribute ac, pg_catalog.pg_attribute ap, "
        "pg_catalog.pg_class cc, pg_catalog.pg_namespace nc "
        "WHERE cc.oid = ac.attrelid AND i.inhrelid = ac.attrelid AND i.inhparent = ap.attrelid "
        "AND ac.attname = ap.attname AND cc.relnamespace = nc.oid "
        "AND ap.attnum > 0 AND ap.attnotnull AND NOT ac.attnotnull ORDER BY 1",
        message="inheritance children lacking a NOT NULL their parent's column has (PostgreSQL 18 rejects them)",
        fix="ALTER TABLE child ALTER COLUMN … SET NOT NULL on each listed column",
    ),
    Check(
        name="contrib/isn with a different bigint passing",
        old=ANY,
        new=ANY,
        query="SELECT format('%I.%I', n.nspname, p.proname) FROM pg_catalog.pg_proc p "
        "JOIN pg_catalog.pg_namespace n ON p.pronamespace = n.oid "
        "WHERE p.probin = '$libdir/isn' AND p.oid >= 16384 ORDER BY 1",
        message="contrib/isn functions that rely on bigint, which the old and new servers pass differently",
        fix="dump the databases that use isn, drop it, upgrade, restore them",
        when="float8_passing_differs",
    ),
    Check(
        name="database connection settings",
        old=ANY,
        new=ANY,
        query="SELECT format('%I (datallowconn %s)', datname, datallowconn) FROM pg_catalog.pg_database "
        "WHERE (datname = 'template0') = datallowconn ORDER BY 1",
        message="pg_upgrade needs every database but template0 to accept connections, and template0 not to",
        fix="ALTER DATABASE … WITH ALLOW_CONNECTIONS true (false for template0)",
        scope="cluster",
    ),
    Check(
        name="prepared transactions",
        old=ANY,
        new=ANY,
        query="SELECT format('%s (database %s, prepared %s)', gid, database, prepared) "
        "FROM pg_catalog.pg_prepared_xacts ORDER BY 1",
        message="prepared transactions are open; pg_upgrade refuses a cluster that has any",
        fix="COMMIT PREPARED or ROLLBACK PREPARED each one (and stop the client that makes them)",
        scope="cluster",
    ),
    Check(
        name="logical replication slots (not carried over)",
        old=(0, 16),
        new=ANY,
        query="SELECT format('%s (plugin %s, database %s)', slot_name, plugin, database) "
        "FROM pg_catalog.pg_replication_slots WHERE slot_type = 'logical' ORDER BY 1",
        message="logical replication slots: pg_upgrade from a cluster older than 17 does not carry them over",
        fix="recreate them after the upgrade; their subscribers must resynchronise "
        "(or use logical replication to the new major instead)",
        scope="cluster",
        severity="warn",
    ),
    Check(
        name="logical replication slots (need wal_level=logical during pg_upgrade)",
        old=(17, 999),
        new=(17, 999),
        query="SELECT format('%s (plugin %s, database %s)', slot_name, plugin, database) "
        "FROM pg_catalog.pg_replication_slots WHERE slot_type = 'logical' ORDER BY 1",
        message="logical replication slots: pg_upgrade carries them only into a new cluster that runs "
        "with wal_level=logical, and pgleap's new cluster runs with the defaults during pg_upgrade",
        fix="drop them before the upgrade (SELECT pg_drop_replication_slot(name)) and recreate them afterwards",
        scope="cluster",
    ),
    Check(
        name="physical replication slots (not carried over)",
        old=ANY,
        new=ANY,
        query="SELECT slot_name::text FROM pg_catalog.pg_replication_slots WHERE slot_type = 'physical' ORDER BY 1",
        message="physical replication slots are not carried over by pg_upgrade",
        fix="recreate them on the new cluster for standbys that are not re-seeded by pgleap",
        scope="cluster",
        severity="warn",
    ),
)

# pgleap's own checks that need facts beyond one query (libraries, tablespaces): their
# queries live here, the decision in the functions below.
LIBRARY_REFERENCES = """
SELECT p.probin, p.oid::regprocedure::text, e.extname
  FROM pg_catalog.pg_proc p
  LEFT JOIN pg_catalog.pg_depend d
         ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  LEFT JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
 WHERE p.prolang = (SELECT oid FROM pg_catalog.pg_language WHERE lanname = 'c')
   AND p.probin IS NOT NULL AND p.oid >= 16384
 ORDER BY 1, 2"""

PRELOAD_SETTINGS = (
    "SELECT name, setting FROM pg_catalog.pg_settings "
    "WHERE name IN ('shared_preload_libraries', 'session_preload_libraries', 'local_preload_libraries')"
)

TABLESPACES = (
    "SELECT spcname::text, pg_catalog.pg_tablespace_location(oid) FROM pg_catalog.pg_tablespace "
    "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1"
)


def applicable(old_major: int, new_major: int, checks: tuple[Check, ...] = CHECKS) -> list[Check]:
    """The checks that matter for this pair of majors."""
    return [c for c in checks if c.applies(old_major, new_major)]


def condition_holds(when: str, controldata: dict[str, str]) -> bool:
    """Extra conditions from facts. "float8_passing_differs": pg_upgrade runs the isn check only
    when the old and new server pass float8/bigint differently (32- vs 64-bit builds). The new
    image's server is not running, so its value is taken as "by value": every 64-bit build since
    PostgreSQL 8.4. Between two 64-bit Debian images (amd64/arm64) both are by value and the check
    never fires; an old 32-bit cluster reports "by reference" in pg_controldata and it does."""
    if not when:
        return True
    if when == "float8_passing_differs":
        return controldata.get("Float8 argument passing", "by value") != "by value"
    raise ValueError(f"unknown preflight condition {when!r}")


def library_name(reference: str) -> str:
    """`$libdir/postgis-3`, `postgis-3.so`, `/abs/dir/x.so` -> the name to look for (`postgis-3`, `x`);
    an absolute path keeps its directory so callers can compare it with pkglibdir."""
    name = reference.strip().strip('"')
    name = name.removeprefix("$libdir/")
    return name.removesuffix(".so")


def library_present(reference: str, modules: frozenset[str], pkglibdir: str) -> bool | None:
    """Whether an image that has `modules` in `pkglibdir` can load `reference`; None if unknowable
    (a path outside pkglibdir, or a subdirectory such as plugins/)."""
    name = library_name(reference)
    if name.startswith("/"):
        directory, base = posixpath.split(name)
        if pkglibdir and posixpath.normpath(directory) == posixpath.normpath(pkglibdir):
            return base in modules
        return None
    if "/" in name:
        return None
    return name in modules


def libraries_in_image(refs, side: str, old: ImageFacts, new: ImageFacts) -> dict[str, list[str]]:
    """Which library references the `side` ("old"/"new") image lacks ("missing") or cannot be
    judged for ("unknown": a path outside its pkglibdir). An absolute path into the old major's
    pkglibdir (pg_regress --dlpath, CREATE FUNCTION … AS '/usr/lib/postgresql/13/lib/x.so')
    counts as missing from a new image whose pkglibdir is elsewhere: pg_upgrade LOADs it there."""
    image = old if side == "old" else new
    verdict: dict[str, list[str]] = {"missing": [], "unknown": []}
    for ref in sorted(refs):
        present = library_present(ref, image.modules, image.pkglibdir)
        if present is None and side == "new" and library_present(ref, old.modules, old.pkglibdir) is not None:
            present = False
        if present is False:
            verdict["missing"].append(ref)
        elif present is None:
            verdict["unknown"].append(ref)
    return verdict


def split_setting(value: str) -> list[str]:
    """A *_preload_libraries value -> its library names."""
    return [part.strip().strip('"') for part in value.split(",") if part.strip().strip('"')]


def tablespace_outside(location: str, mount: str) -> bool:
    """Whether a tablespace directory lies outside the volume pgleap moves (mounted at `mount`)."""
    if not location:
        return False
    location, mount = posixpath.normpath(location), posixpath.normpath(mount)
    return posixpath.commonpath([location, mount]) != mount
