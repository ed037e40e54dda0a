"""PGDATA inside the volume: the cases users actually run."""

from __future__ import annotations

import dataclasses

import pytest

from toolkit.core.layout import Layout, compute_layout, default_pgdata, rel_in_volume

OLD = "/var/lib/postgresql/data"  # the official <=17 images' default PGDATA


@pytest.mark.parametrize(
    ("mount", "sub", "pgdata", "rel"),
    [
        # official <= 17, volume mounted at PGDATA
        ("/var/lib/postgresql/data", None, "/var/lib/postgresql/data", ""),
        # the volume's "data" folder mounted at PGDATA (avoids lost+found in PGDATA)
        ("/var/lib/postgresql/data", "data", "/var/lib/postgresql/data", "data"),
        # the volume's "data" folder mounted one level up: PGDATA is data/data in the volume
        ("/var/lib/postgresql", "data", "/var/lib/postgresql/data", "data/data"),
        # whole volume one level up, PGDATA a folder of it
        ("/var/lib/postgresql", None, "/var/lib/postgresql/data", "data"),
        # groundhog2k chart
        ("/var/lib/postgresql/data", None, "/var/lib/postgresql/data/pg", "pg"),
        # Bitnami chart
        ("/bitnami/postgresql", None, "/bitnami/postgresql/data", "data"),
        # kartoza with a subPath
        ("/opt/kartoza/postgis/data", "data", "/opt/kartoza/postgis/data", "data"),
        # official 18 layout
        ("/var/lib/postgresql", None, "/var/lib/postgresql/18/docker", "18/docker"),
        # untidy input is normalised
        ("/var/lib/postgresql/", "./pg/", "/var/lib/postgresql//data/", "pg/data"),
    ],
)
def test_rel_in_volume(mount: str, sub: str | None, pgdata: str, rel: str) -> None:
    assert rel_in_volume(mount, sub, pgdata) == rel


@pytest.mark.parametrize(
    ("mount", "sub", "pgdata"),
    [
        ("/var/lib/postgresql/data", None, "/var/lib/postgresql"),  # PGDATA above the mount
        ("/var/lib/postgresql/data", None, "/var/lib/postgresql/data2"),  # prefix, not a parent
        ("/data", "../etc", "/data"),  # subPath escaping the volume
        ("/data", "/abs", "/data"),
        ("data", None, "data"),  # relative mount
    ],
)
def test_rel_in_volume_refuses(mount: str, sub: str | None, pgdata: str) -> None:
    with pytest.raises(ValueError):
        rel_in_volume(mount, sub, pgdata)


def test_official_17_target_keeps_mount_and_pgdata() -> None:
    lay = compute_layout(OLD, None, OLD, 17, "official", old_default=OLD)
    assert lay == Layout(*["/var/lib/postgresql/data"] * 4)
    assert not lay.changes_mount


def test_official_18_target_moves_mount_up() -> None:
    lay = compute_layout(OLD, None, OLD, 18, "official", old_default=OLD)
    assert lay.old_rel == ""
    assert lay.new_rel == "18/docker"
    assert lay.new_mount_path == "/var/lib/postgresql"
    assert lay.new_sub_path == ""
    assert lay.new_pgdata == "/var/lib/postgresql/18/docker"
    assert lay.changes_mount


def test_official_18_target_keeps_subpath() -> None:
    lay = compute_layout(OLD, "pgdata", OLD, 18, "official", old_default=OLD)
    assert (lay.old_rel, lay.new_rel, lay.new_sub_path) == ("pgdata", "pgdata/18/docker", "pgdata")
    assert lay.new_mount_path == "/var/lib/postgresql"


@pytest.mark.parametrize("major", [17, 18, 19])
def test_a_user_chosen_pgdata_stays_where_it_is(major: int) -> None:
    """groundhog2k's /var/lib/postgresql/data/pg: the one placement rule (as on Docker) keeps it."""
    lay = compute_layout(OLD, None, f"{OLD}/pg", major, "official", old_default=OLD)
    assert (lay.old_rel, lay.new_rel, lay.new_mount, lay.new_pgdata) == ("pg", "pg", OLD, f"{OLD}/pg")
    assert not lay.changes_mount


def test_an_unknown_old_default_keeps_pgdata() -> None:
    lay = compute_layout(OLD, None, OLD, 18, "official", old_default=None)
    assert not lay.changes_mount


def test_official_18_to_19_stays_in_volume_root() -> None:
    lay = compute_layout(
        "/var/lib/postgresql",
        None,
        "/var/lib/postgresql/18/docker",
        19,
        "official",
        old_default=default_pgdata("official", 18),
    )
    assert (lay.old_rel, lay.new_rel) == ("18/docker", "19/docker")


@pytest.mark.parametrize("kind", ["bitnami", "kartoza", "unknown"])
def test_other_images_keep_layout_even_for_18(kind: str) -> None:
    lay = compute_layout(
        "/bitnami/postgresql",
        None,
        "/bitnami/postgresql/data",
        18,
        kind,
        old_default="/bitnami/postgresql/data",
    )  # type: ignore[arg-type]
    assert (lay.old_rel, lay.new_rel) == ("data", "data")
    assert (lay.new_mount_path, lay.new_pgdata) == ("/bitnami/postgresql", "/bitnami/postgresql/data")


@pytest.mark.parametrize(
    ("kind", "major", "expected"),
    [
        ("official", 13, "/var/lib/postgresql/data"),
        ("official", 17, "/var/lib/postgresql/data"),
        ("official", 18, "/var/lib/postgresql/18/docker"),
        ("official", 19, "/var/lib/postgresql/19/docker"),
        ("bitnami", 16, "/bitnami/postgresql/data"),
        ("kartoza", 16, "/opt/kartoza/postgis/data"),
        ("unknown", 16, None),
    ],
)
def test_default_pgdata(kind: str, major: int, expected: str | None) -> None:
    assert default_pgdata(kind, major) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mount", "sub", "pgdata", "major"),
    [
        ("/var/lib/postgresql/data", None, "/var/lib/postgresql/data", 18),
        ("/var/lib/postgresql/data", "pgdata", "/var/lib/postgresql/data", 18),
        ("/var/lib/postgresql/data", "pgdata", "/var/lib/postgresql/data/pg", 17),
        ("/var/lib/postgresql", None, "/var/lib/postgresql/18/docker", 19),
    ],
)
def test_a_plan_stored_before_the_layout_merge_reads_back(mount, sub, pgdata, major) -> None:
    """A run recorded by an older pgleap (Kubernetes Layout fields) resumes with the same layout."""
    lay = compute_layout(
        mount, sub, pgdata, major, "official", old_default=default_pgdata("official", major - 1)
    )
    legacy = {"old_rel": lay.old_rel, "new_rel": lay.new_rel, "new_mount_path": lay.new_mount,
              "new_sub_path": lay.sub_path, "new_pgdata": lay.new_pgdata}  # fmt: skip
    assert Layout.from_dict(legacy, mount_path=mount) == lay
    assert Layout.from_dict(dataclasses.asdict(lay)) == lay
