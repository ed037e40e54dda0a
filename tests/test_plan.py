"""The pure planner: refusals before anything changes, layouts, initdb options, update paths."""

from __future__ import annotations

import dataclasses

import pytest

from toolkit.core.facts import ClusterFacts, DatabaseFacts, DataFacts, ImageFacts, version_key
from toolkit.core.layout import Layout, new_layout
from toolkit.core.plan import initdb_args, make_plan
from toolkit.errors import Refused


def image(major: int, version: str, glibc: str = "2.36", icu: str = "72", **exts) -> ImageFacts:
    extensions = {"postgis": "3.3.2", "plpgsql": "1.0", **exts}
    return ImageFacts(
        image=f"img:{major}", major=major, version=version, bindir=f"/usr/lib/postgresql/{major}/bin",
        glibc=glibc, icu=icu, extensions=extensions,
        updates={"postgis": (("3.1.1", "ANY"), ("ANY", extensions["postgis"]))},
    )  # fmt: skip


def data(major: int = 13, *, checksums: bool = False, state: str = "shut down", **kw) -> DataFacts:
    control = {
        "Database cluster state": state,
        "Data page checksum version": "1" if checksums else "0",
        "Bytes per WAL segment": str(16 * 1024 * 1024),
    }
    return DataFacts(
        status="cluster", pg_version=major, owner_uid=999, owner_gid=999, controldata=control, **kw
    )


def cluster(provider: str = "libc", **exts) -> ClusterFacts:
    dbs = (
        DatabaseFacts("template1", "UTF8", "en_US.utf8", "en_US.utf8", provider, "und" if provider == "icu" else None, True, True),
        DatabaseFacts("gis", "UTF8", "en_US.utf8", "en_US.utf8", provider, None, True, False,
                      {"plpgsql": "1.0", "postgis": "3.1.1", **exts}),
    )  # fmt: skip
    return ClusterFacts(superuser="gis", server_version="13.16", databases=dbs)


LAYOUT = Layout(
    "/var/lib/postgresql/data",
    "/var/lib/postgresql/data",
    "/var/lib/postgresql/data",
    "/var/lib/postgresql/data",
)


def plan(old=None, new=None, d=None, c=None, mode="link"):
    return make_plan(
        old=old or image(13, "13.16", glibc="2.31", icu="67", postgis="3.1.1"),
        new=new or image(17, "17.12", glibc="2.41", icu="76", postgis="3.5.2"),
        data=d or data(),
        cluster=c or cluster(),
        layout=LAYOUT,
        mode=mode,
    )


def test_a_good_plan_matches_the_old_cluster():
    p = plan()
    assert p.superuser == "gis"
    assert "--encoding=UTF8" in p.initdb_args and "--lc-collate=en_US.utf8" in p.initdb_args
    assert "--wal-segsize=16" in p.initdb_args
    assert not any("checksums" in a for a in p.initdb_args)  # 17 defaults to off, like the old cluster
    assert p.core.collation_libraries_changed
    postgis = next(a for a in p.extension_actions if a.extension == "postgis")
    assert (postgis.installed, postgis.target, postgis.action) == (
        "3.1.1",
        "3.5.2",
        "postgis_extensions_upgrade",
    )
    env = p.container_env("upgrade")
    assert env["PGLEAP_OLD_REL"] == "" and env["PGLEAP_SUPERUSER"] == "gis" and env["PGLEAP_MODE"] == "link"


@pytest.mark.parametrize(
    ("glibc", "icu", "libc_changed", "icu_changed"),
    [
        (("2.31", "2.31"), ("67", "67"), False, False),
        (("2.31", "2.41"), ("67", "67"), True, False),
        (("2.36", "2.36"), ("67", "76"), False, True),
        (("2.36", "2.36"), ("", "76"), False, False),  # no ICU before: nothing sorted by it
        (("2.31", "2.41"), ("67", ""), True, True),
    ],
)
def test_which_collation_library_changed(glibc, icu, libc_changed, icu_changed):
    p = dataclasses.replace(plan(), glibc=glibc, icu=icu)
    assert (p.core.libc_changed, p.core.icu_changed) == (libc_changed, icu_changed)
    assert p.core.collation_libraries_changed == (libc_changed or icu_changed)


def test_pg18_target_gets_no_data_checksums_unless_the_old_had_them():
    new = image(18, "18.6", glibc="2.43", icu="78", postgis="3.5.2")
    assert "--no-data-checksums" in plan(new=new).initdb_args
    assert "--data-checksums" in plan(new=new, d=data(checksums=True)).initdb_args


def test_icu_provider_is_carried_over():
    args = initdb_args(cluster("icu"), data(), 17)
    assert "--locale-provider=icu" in args and "--icu-locale=und" in args


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (image(17, "17.2"), image(13, "13.16"), "downgrades are not possible"),
        (image(15, "15.8"), image(15, "15.18"), "nothing to upgrade"),
        (image(17, "17.12"), image(18, "18.6"), "breaks pg_upgrade"),
        (image(13, "13.16", glibc="2.41"), image(17, "17.12", glibc="2.31"), "glibc"),
    ],
)
def test_refusals_on_versions(old, new, message):
    with pytest.raises(Refused, match=message):
        plan(old=old, new=new, d=data(old.major), c=cluster())


def test_17_12_to_18_7_is_allowed():
    p = plan(old=image(17, "17.12", postgis="3.5.2"), new=image(18, "18.7", postgis="3.6.0"), d=data(17))
    assert p.new_major == 18


def test_refuses_when_target_lacks_an_extension():
    new = image(17, "17.12", postgis="3.5.2")
    with pytest.raises(Refused, match=r"lacks extensions the cluster uses: hstore \(in gis\)"):
        plan(new=new, c=cluster(hstore="1.7"))


def test_refuses_when_target_extension_is_older():
    new = image(17, "17.12", postgis="3.0.0")
    with pytest.raises(Refused, match=r"older than the 3\.1\.1"):
        plan(new=new)


def test_no_update_path_is_a_warning_not_a_refusal():
    new = image(17, "17.12", postgis="3.5.2", postgis_tiger_geocoder="2025.2")
    p = plan(new=new, c=cluster(postgis_tiger_geocoder="3.1.1"))
    tiger = next(a for a in p.extension_actions if a.extension == "postgis_tiger_geocoder")
    assert tiger.action == "no_update_path"
    assert any("no update path" in w for w in p.warnings)


@pytest.mark.parametrize(
    ("d", "message"),
    [
        (DataFacts(status="not-a-cluster"), "not a PostgreSQL cluster"),
        (DataFacts(status="missing"), "does not exist"),
        (data(15), "holds PostgreSQL 15"),
    ],
)
def test_refusals_on_data(d, message):
    with pytest.raises(Refused, match=message):
        plan(d=d)


def test_mode_checks():
    with pytest.raises(Refused, match="swap needs PostgreSQL 18"):
        plan(mode="swap")
    with pytest.raises(Refused, match="unknown mode"):
        plan(mode="fast")
    with pytest.raises(Refused, match="copy mode needs about"):
        plan(mode="copy", d=data(data_kb=10_000_000, free_kb=5_000_000))
    assert plan(mode="copy", d=data(data_kb=1000, free_kb=5_000_000)).mode == "copy"


@pytest.mark.parametrize(
    ("mount", "pgdata", "old_default", "target_pgdata", "volumes", "expected"),
    [
        # official <=17 -> 18: the volume moves to /var/lib/postgresql, PGDATA to 18/docker
        ("/var/lib/postgresql/data", "/var/lib/postgresql/data", "/var/lib/postgresql/data",
         "/var/lib/postgresql/18/docker", ["/var/lib/postgresql"], ("", "/var/lib/postgresql", "18/docker")),
        # official 13 -> 17: same place (the old cluster is moved aside inside the volume)
        ("/var/lib/postgresql/data", "/var/lib/postgresql/data", "/var/lib/postgresql/data",
         "/var/lib/postgresql/data", ["/var/lib/postgresql/data"], ("", "/var/lib/postgresql/data", "")),
        # a user-chosen PGDATA (groundhog2k's /data/pg) is kept
        ("/var/lib/postgresql/data", "/var/lib/postgresql/data/pg", "/var/lib/postgresql/data",
         "/var/lib/postgresql/18/docker", ["/var/lib/postgresql"], ("pg", "/var/lib/postgresql/data", "pg")),
    ],
)  # fmt: skip
def test_layouts(mount, pgdata, old_default, target_pgdata, volumes, expected):
    layout = new_layout(mount, pgdata, old_default, target_pgdata, volumes)
    assert (layout.old_rel, layout.new_mount, layout.new_rel) == expected


def test_pgdata_outside_the_volume_is_refused():
    with pytest.raises(Refused, match="not on the volume"):
        Layout("/data", "/elsewhere", "/data", "/data").old_rel  # noqa: B018


def test_version_key_orders_extension_versions():
    assert version_key("3.1.1") < version_key("3.5.2") < version_key("3.10.0")
    assert version_key("1.10") > version_key("1.9")
    assert version_key("3.6.0dev") < version_key("3.6.0")


def test_update_path_search():
    img = ImageFacts(
        "x", 18, "18.6", "", "", "", {"t": "2025.2"}, updates={"t": (("3.5.4", "ANY"), ("ANY", "2025.2"))}
    )
    assert img.has_update_path("t", "3.5.4")
    assert not img.has_update_path("t", "3.1.1")
    assert img.has_update_path("t", "2025.2")


def test_many_tables_get_a_lock_table_big_enough_for_pg_dump():
    from dataclasses import replace

    from toolkit.core.plan import pg_upgrade_locks

    small = cluster()
    assert pg_upgrade_locks(small) == 0 and plan(c=small).container_env("upgrade")["PGLEAP_MAX_LOCKS"] == "0"
    gis = replace(small.database("gis"), relations=20_000)
    big = replace(small, databases=(small.template1, gis))
    assert pg_upgrade_locks(big) == 240  # 20,000 x 1.2 / 100 connections
    assert plan(c=big).container_env("upgrade")["PGLEAP_MAX_LOCKS"] == "240"
    assert pg_upgrade_locks(replace(big, max_connections=400)) == 0  # 60 x 400 slots suffice


def test_downtime_estimate_follows_the_downtime_mode():
    p = dataclasses.replace(plan(), data_kb=10 * 1024**2)  # 10 GB
    verified, minimal = p.estimated_downtime_seconds(), p.estimated_downtime_seconds("minimal")
    unverified = p.estimated_downtime_seconds(verify_data=False)
    assert minimal < unverified < verified  # the fingerprint: two passes of ~20 s/GB inside the window
    assert verified - unverified == pytest.approx(2 * 20 * 10)
    copy = dataclasses.replace(p, mode="copy")
    assert copy.estimated_downtime_seconds("minimal") == pytest.approx(minimal + 10 * 1024 / 200)
    assert p.to_dict()["estimated_downtime_seconds"] == round(verified, 1)
