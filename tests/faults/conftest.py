"""Fixtures for the fault suite: a seeded old cluster made once, cloned per test (a volume copy)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import suppress

import pytest
from docker.errors import NotFound

from tests.conftest import OldDatabase
from toolkit.docker import images

SOURCE, TARGET = "15-3.3", "17-3.5"


@pytest.fixture(scope="session")
def golden(runtime, image_names) -> Iterator[dict]:
    """A small seeded 15 cluster, cleanly shut down, on a volume no container uses."""
    from tests.conftest import start_old

    db = start_old(runtime, image_names[SOURCE], SOURCE, rows=300)
    runtime.stop_container(db.name)
    runtime.remove(db.name)
    yield {"volume": db.volume, "superuser": db.superuser, "password": db.password}
    runtime.remove_volume(db.volume)


def copy_into(rt, source_volume: str, mount: dict) -> None:
    rt.docker.containers.run(
        "debian:bookworm", ["bash", "-c", "cp -a /src/. /dst/"],
        volumes={source_volume: {"bind": "/src", "mode": "ro"}, **mount}, remove=True,
    )  # fmt: skip


def clone_and_start(rt, image_names, golden, name: str, *, bind: str | None = None) -> OldDatabase:
    """A container on the old image over a byte copy of the golden volume (or a host directory)."""
    spec = images.spec_for(SOURCE)
    if bind is None:
        rt.docker.volumes.create(name)
        source = name
    else:
        source = bind
    copy_into(rt, golden["volume"], {source: {"bind": "/dst", "mode": "rw"}})
    rt.docker.containers.run(
        image_names[SOURCE], name=name, detach=True,
        environment={"POSTGRES_USER": golden["superuser"], "POSTGRES_PASSWORD": golden["password"]},
        volumes={source: {"bind": spec.volume_dir, "mode": "rw"}},
    )  # fmt: skip
    rt.wait_accepting(name, golden["superuser"], golden["password"], timeout=120)
    return OldDatabase(rt, SOURCE, image_names[SOURCE], name, name, golden["superuser"], golden["password"])


@pytest.fixture
def fresh_db(runtime, image_names, golden) -> Iterator:
    """Factory of cloned databases; removes containers, helpers, volumes afterwards."""
    from tests.faults.harness import helpers

    made: list[tuple[OldDatabase, str]] = []

    def make(*, bind: str | None = None) -> OldDatabase:
        name = f"pgleap-fault-{secrets.token_hex(3)}"
        db = clone_and_start(runtime, image_names, golden, name, bind=bind)
        key = "docker-" + (bind.strip("/").replace("/", "_") if bind else name)
        made.append((db, key))
        return db

    yield make
    for db, key in made:
        for c in helpers(runtime, key):
            c.remove(force=True)
        runtime.remove(db.name)
        runtime.remove(f"{db.name}-pgleap-old")
        runtime.remove_volume(db.volume)
        runtime.remove_volume(f"pgleap-old-binaries-{key.removeprefix('docker-')}")


@pytest.fixture
def logical_db(runtime, fresh_db):
    """A clone of the golden 15 cluster; the logical strategy's containers and volume removed after."""
    made = []

    def make():
        db = fresh_db()
        made.append(db)
        return db

    yield make
    for db in made:  # NAME may be the new cluster on the second volume: it goes first
        for suffix in ("-pgleap-green", "-pgleap-next", "-pgleap-blue", "", "-pgleap-old"):
            runtime.remove(db.name + suffix)
        runtime.remove_volume(db.volume + "-pgleap-next")
        with suppress(NotFound):  # with published ports: pgleap's network
            runtime.docker.networks.get(db.name + "-pgleap-net").remove()
