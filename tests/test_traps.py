"""The extension-trap table: which version pairs each trap applies to, and the plan's refusal
when the target ships no repair (read from a real old cluster before anything stops)."""

from __future__ import annotations

import pytest

from toolkit.core.facts import ImageFacts
from toolkit.core.report import Report
from toolkit.db import traps
from toolkit.db.inspect import inspect_sql
from toolkit.errors import Refused


@pytest.mark.parametrize(
    ("installed", "target", "expected"),
    [
        ("3.1.1", "3.7.0", ["postgis-topology-bigint-ids"]),
        ("3.5.2", "3.6.1", ["postgis-topology-bigint-ids"]),
        ("3.3.2", "3.6.0", ["postgis-topology-bigint-ids-no-repair"]),
        ("3.1.1", "3.5.2", []),  # does not cross 3.6
        ("3.6.1", "3.7.0", []),  # already on the wide ids
        ("3.7.0dev", "3.8.0", []),
    ],
)
def test_topology_trap_ranges(installed, target, expected):
    assert [t.name for t in traps.matching("postgis_topology", installed, target)] == expected
    assert traps.matching("postgis", installed, target) == []


def test_every_trap_is_complete():
    for trap in traps.TRAPS:
        assert trap.detect.strip().upper().startswith("SELECT") and trap.why
        assert traps.version_key(trap.from_below) > (0,)


def _target(extensions: dict[str, str]) -> ImageFacts:
    return ImageFacts(image="target", major=18, version="18.6", bindir="/x", glibc="2.41", icu="76",
                      extensions=extensions)  # fmt: skip


@pytest.mark.docker
def test_plan_lists_trap_columns_and_refuses_a_target_without_repair(old_db_factory):
    db = old_db_factory("13-3.1", rows=200)
    server = db.server()
    report = Report(quiet=True)
    inspect_sql(server, _target({"postgis_topology": "3.7.0"}), report)
    columns = {t["column"] for t in report.data["traps"]}
    assert {
        "city.streets.topo",
        "public.trails.topo",
        "public.trails.topo_refs",
        "public.trails.first_ref",
    } <= columns
    assert all(t["repair"] == "topology-rewrite" for t in report.data["traps"])
    with pytest.raises(Refused, match=r"city\.streets\.topo.*~25 rows") as refused:
        inspect_sql(server, _target({"postgis_topology": "3.6.0"}), Report(quiet=True))
    assert refused.value.exit_code == 3
    inspect_sql(server, _target({"postgis_topology": "3.5.2"}), report := Report(quiet=True))
    assert report.data["traps"] == []


_EXT_FILES = {
    "pgleap_trap.control": "default_version = '1.1'\nrelocatable = false\nschema = public\n",
    "pgleap_trap--1.0.sql": "CREATE DOMAIN @extschema@.pairs AS integer[];\n",
    # What PostGIS 3.6 did to topology: the catalog changes, the stored values do not.
    "pgleap_trap--1.0--1.1.sql": "UPDATE pg_catalog.pg_type SET typbasetype = 'bigint[]'::regtype "
    "WHERE oid = '@extschema@.pairs'::regtype;\n",
}


@pytest.mark.docker
def test_an_unknown_trap_is_caught_and_rolled_back(old_db_factory):
    """An extension whose update changes a type's storage under a user column, with no entry in
    TRAPS: the guard stops the update (exit 4) and rolls it back, so the values still read right."""
    import io
    import tarfile

    from toolkit.db import postupgrade
    from toolkit.errors import VerificationFailed

    db = old_db_factory("13-3.1", seed_data=False)
    container = db.runtime.docker.containers.get(db.name)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in _EXT_FILES.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    assert container.put_archive("/usr/share/postgresql/13/extension", buf.getvalue())
    server = db.server()
    with server.connect(db.superuser) as conn:
        conn.execute("CREATE EXTENSION pgleap_trap VERSION '1.0'")
        conn.execute("CREATE TABLE pairtab (id int PRIMARY KEY, p pairs)")
        conn.execute("INSERT INTO pairtab VALUES (1, '{1,3}')")
    with pytest.raises(VerificationFailed, match=r"public\.pairtab\.p .*no repair") as failed:
        postupgrade.update_extensions(server)
    assert failed.value.exit_code == 4
    with server.connect(db.superuser) as conn:
        assert (
            conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgleap_trap'").fetchone()[0]
            == "1.0"
        )
        assert conn.execute("SELECT p[1], p[2] FROM pairtab").fetchone() == (1, 3)
