"""The preflight check table (pure): which checks each pair of majors gets, and the library rules."""

from __future__ import annotations

import pytest

from toolkit.core import preflight_checks as pc
from toolkit.db.preflight import Finding, refusal


def names(old: int, new: int) -> set[str]:
    return {c.name for c in pc.applicable(old, new)}


@pytest.mark.parametrize(
    ("old", "new", "present", "absent"),
    [
        (
            13,
            17,
            {
                "aclitem data type in user tables",
                "user-defined postfix operators",
                "incompatible polymorphic functions",
                "user-defined encoding conversions",
                "generated column differs between parent and inheritance child",
                "reg* data types in user tables",
                "prepared transactions",
                "logical replication slots (not carried over)",
            },
            {
                "sql_identifier data type in user tables",
                "tables WITH OIDS",
                "not-null constraint missing in an inheritance child",
                "logical replication slots (need wal_level=logical during pg_upgrade)",
            },
        ),
        (
            15,
            17,
            {"aclitem data type in user tables", "generated column differs between parent and inheritance child"},
            {"user-defined postfix operators", "incompatible polymorphic functions", "user-defined encoding conversions"},
        ),
        (
            15,
            18,
            {"aclitem data type in user tables", "not-null constraint missing in an inheritance child"},
            {"user-defined postfix operators"},
        ),
        (
            13,
            14,
            {"user-defined postfix operators", "user-defined encoding conversions"},
            {"aclitem data type in user tables", "generated column differs between parent and inheritance child"},
        ),
        (
            17,
            18,
            {"logical replication slots (need wal_level=logical during pg_upgrade)", "reg* data types in user tables"},
            {
                "aclitem data type in user tables",
                "logical replication slots (not carried over)",
                "generated column differs between parent and inheritance child",
            },
        ),
        (
            11,
            13,
            {"sql_identifier data type in user tables", "tables WITH OIDS", "removed abstime/reltime/tinterval types in user tables"},
            {"aclitem data type in user tables"},
        ),
    ],
)  # fmt: skip
def test_ranges_select_the_checks_of_a_major_pair(old, new, present, absent):
    got = names(old, new)
    assert present <= got, present - got
    assert not (absent & got), absent & got


def test_every_check_is_complete_and_unique():
    seen = set()
    for check in pc.CHECKS:
        assert check.name not in seen
        seen.add(check.name)
        assert check.query.strip() and check.message and check.fix
        assert check.scope in ("database", "cluster") and check.severity in ("refuse", "warn")
        assert check.old[0] <= check.old[1] and check.new[0] <= check.new[1]


def test_data_type_checks_follow_domains_arrays_composites_and_ranges():
    (acl,) = [c for c in pc.CHECKS if c.name.startswith("aclitem")]
    for wrapper in ("typbasetype", "typelem", "t.typtype = 'c'", "pg_range"):
        assert wrapper in acl.query
    assert "WITH RECURSIVE" in acl.query


def test_isn_check_runs_only_when_float8_passing_differs():
    assert not pc.condition_holds("float8_passing_differs", {"Float8 argument passing": "by value"})
    assert not pc.condition_holds("float8_passing_differs", {})
    assert pc.condition_holds("float8_passing_differs", {"Float8 argument passing": "by reference"})
    with pytest.raises(ValueError):
        pc.condition_holds("nonsense", {})


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("$libdir/postgis-3", True),
        ("postgis-3", True),
        ("$libdir/postgis-3.so", True),
        ("$libdir/regress", False),
        ("/usr/lib/postgresql/13/lib/postgis-3.so", True),
        ("/usr/lib/postgresql/13/lib/regress.so", False),
        ("/build/src/test/regress/regress.so", None),
        ("$libdir/plugins/x", None),
    ],
)
def test_library_presence(ref, expected):
    mods = frozenset({"postgis-3", "plpgsql"})
    assert pc.library_present(ref, mods, "/usr/lib/postgresql/13/lib") is expected


def test_preload_settings_and_tablespaces():
    assert pc.split_setting('pg_stat_statements, "auto_explain"') == ["pg_stat_statements", "auto_explain"]
    assert pc.split_setting("") == []
    assert pc.tablespace_outside("/mnt/fast/ts1", "/var/lib/postgresql/data")
    assert not pc.tablespace_outside("/var/lib/postgresql/data/ts1", "/var/lib/postgresql/data")
    assert not pc.tablespace_outside("", "/var/lib/postgresql/data")


def test_one_refusal_names_every_object_and_caps_long_lists():
    many = Finding("postfix", "postfix operators", "DROP OPERATOR", [f"db: public.!{i}" for i in range(25)])
    acl = Finding("aclitem", "aclitem columns", "ALTER … TYPE text", ["db: public.t.acl (aclitem)"])
    err = refusal([many, acl])
    assert err.exit_code == 3
    assert "public.!9" in err.message and "public.!10" not in err.message and "(and 15 more)" in err.message
    assert "public.t.acl" in err.message
    assert "DROP OPERATOR" in err.hint and "ALTER … TYPE text" in err.hint


RESTORE_LOG = """\
command: "/usr/lib/postgresql/17/bin/pg_restore" --exit-on-error --verbose --dbname template1 "d.custom"
pg_restore: connecting to database for restore
pg_restore: creating TABLE "public.gtest_normal"
pg_restore: creating TABLE "public.gtest_normal_child"
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 215; 1259 16390 TABLE gtest_normal_child gis
pg_restore: error: could not execute query: ERROR:  column "b" in child table must not be a generated column
Command was:
-- For binary upgrade, must preserve pg_type oid
SELECT pg_catalog.binary_upgrade_set_next_pg_type_oid('16392'::pg_catalog.oid);
ALTER TABLE ONLY "public"."gtest_normal_child" INHERIT "public"."gtest_normal";
"""


def _failure(tmp_path, *dirs: str) -> str:
    import subprocess

    from toolkit.resources import container_script

    lib = container_script("lib.sh")
    script = f'set -euo pipefail; . "{lib}"; why="$(pg_upgrade_failure "$@")" || true; printf "%s" "$why"'
    env = {"PATH": "/usr/bin:/bin", "PGLEAP_VOLUME": str(tmp_path)}
    return subprocess.run(
        ["bash", "-c", script, "x", *dirs], capture_output=True, text=True, env=env, check=True
    ).stdout


def test_pg_upgrade_failure_names_the_error_object_statement_and_log(tmp_path):
    logs = tmp_path / ".pgleap/failed-new-1/pg_upgrade_output.d/20261202T010000.000/log"
    logs.mkdir(parents=True)
    (logs / "pg_upgrade_dump_16384.log").write_text(RESTORE_LOG)
    (logs / "pg_upgrade_server.log").write_text("2026-12-02 ERROR:  something the server logged\n")
    (logs / "pg_upgrade_internal.log").write_text("no errors here\n")
    why = _failure(tmp_path, str(tmp_path / ".pgleap/failed-new-1"), str(tmp_path / "nothing"))
    assert why.startswith('ERROR:  column "b" in child table must not be a generated column')
    assert '(while creating TABLE "public.gtest_normal_child")' in why
    assert 'in: ALTER TABLE ONLY "public"."gtest_normal_child" INHERIT' in why
    assert "full log: .pgleap/failed-new-1/pg_upgrade_output.d/" in why and "pg_upgrade_dump_16384.log" in why


def test_pg_upgrade_failure_is_silent_without_an_error(tmp_path):
    (tmp_path / "pg_upgrade_internal.log").write_text("fine\n")
    assert _failure(tmp_path, str(tmp_path), str(tmp_path / "missing")) == ""


def test_readme_lists_every_check():
    from pathlib import Path

    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    for check in pc.CHECKS:
        assert check.name in readme, check.name
    for own in ("libraries missing from the old image", "tablespaces outside the data volume"):
        assert own in readme


def test_libraries_each_image_lacks():
    from toolkit.core.facts import ImageFacts

    def img(major: int, *mods: str) -> ImageFacts:
        return ImageFacts(
            image=f"img:{major}", major=major, version=f"{major}.1", bindir="", glibc="", icu="",
            modules=frozenset(mods), pkglibdir=f"/usr/lib/postgresql/{major}/lib",
        )  # fmt: skip

    old, new = (
        img(13, "postgis-3", "autoinc", "pg_stat_statements"),
        img(17, "postgis-3", "pg_stat_statements"),
    )
    refs = [
        "$libdir/postgis-3",  # unversioned PostGIS 3: in both
        "$libdir/regress",  # in the running container only
        "/usr/lib/postgresql/13/lib/autoinc.so",  # absolute, old pkglibdir: not where 17 looks
        "/build/regress/refint.so",  # absolute, elsewhere: unknowable
        "pg_stat_statements",  # a preload setting
    ]
    assert pc.libraries_in_image(refs, "old", old, new) == {
        "missing": ["$libdir/regress"],
        "unknown": ["/build/regress/refint.so"],
    }
    assert pc.libraries_in_image(refs, "new", old, new) == {
        "missing": ["$libdir/regress", "/usr/lib/postgresql/13/lib/autoinc.so"],
        "unknown": ["/build/regress/refint.so"],
    }
