"""Shared fixtures: a Docker engine, the test images, old databases to upgrade.

Everything that touches data runs real PostgreSQL in real containers. Without a
Docker engine the Docker tests are skipped with the reason, except under CI,
where a missing engine is a failure.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def _docker_or_skip():
    import docker

    try:
        client = docker.from_env()
        client.ping()
        return client
    except Exception as exc:  # no engine, no socket, no permission
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a Docker engine: {exc}")
        pytest.skip(f"no Docker engine here ({exc.__class__.__name__}); run scripts/dev test to start one")


@pytest.fixture(scope="session")
def docker_client():
    return _docker_or_skip()


@pytest.fixture(scope="session")
def image_names(docker_client) -> dict[str, str]:
    """tag -> image, built (or reused) once per session."""
    from toolkit.docker import images

    return {r.tag: r.image for r in images.build_all()}


@pytest.fixture(scope="session")
def runtime(docker_client):
    from toolkit.docker.runtime import DockerRuntime

    return DockerRuntime(docker_client)


@pytest.fixture(autouse=True)
def _state_dir(tmp_path, monkeypatch):
    """Each test has its own pgleap state directory."""
    monkeypatch.setenv("PGLEAP_STATE_DIR", str(tmp_path / "state"))


@dataclass
class OldDatabase:
    """A container running an old image on a named volume, seeded with PostGIS data."""

    runtime: object
    tag: str
    image: str
    name: str
    volume: str
    superuser: str
    password: str = field(repr=False)
    created: list[str] = field(default_factory=list)

    def server(self, name: str | None = None):
        rt = self.runtime
        return rt.live_server(rt.source_container(name or self.name))

    def fingerprint(self, name: str | None = None):
        from toolkit.db.verify import fingerprint

        return fingerprint(self.server(name))


def start_old(rt, image: str, tag: str, *, superuser: str = "gis", rows: int = 3000, seed_data: bool = True,
              env: dict | None = None, name: str | None = None) -> OldDatabase:  # fmt: skip
    from toolkit.db.seed import seed
    from toolkit.docker import images

    suffix = uuid.uuid4().hex[:6]
    name = volume = name or f"pgleap-test-{tag.split('-')[0]}-{suffix}"  # a volume of that name is used
    password = secrets.token_urlsafe(12)
    rt.docker.volumes.create(volume)
    mount = (
        images.spec_for(tag).volume_dir
        if tag in {s.tag for s in images.load_matrix()}
        else "/var/lib/postgresql/data"
    )
    rt.docker.containers.run(
        image, name=name, detach=True,
        environment={"POSTGRES_USER": superuser, "POSTGRES_PASSWORD": password, "POSTGRES_DB": superuser,
                     **(env or {})},
        volumes={volume: {"bind": mount, "mode": "rw"}},
    )  # fmt: skip
    rt.wait_accepting(name, superuser, password, timeout=180)
    db = OldDatabase(rt, tag, image, name, volume, superuser, password)
    if seed_data:
        seed(db.server(), superuser, rows=rows, polygons=300)
    return db


def remove_old(db: OldDatabase) -> None:
    rt = db.runtime
    for name in (db.name, f"{db.name}-pgleap-old", *db.created):
        rt.remove(name)
    rt.remove_volume(db.volume)
    rt.remove_volume(f"pgleap-old-binaries-{db.volume}")


@pytest.fixture
def old_db_factory(runtime, image_names) -> Iterator:
    made: list[OldDatabase] = []

    def make(tag: str, **kwargs) -> OldDatabase:
        db = start_old(runtime, image_names[tag], tag, **kwargs)
        made.append(db)
        return db

    yield make
    for db in made:
        remove_old(db)


def volume_hash(rt, volume: str) -> str:
    """sha256 over every path, mode, owner, size and content in the volume: 'byte-identical' made checkable."""
    script = (
        "cd /v && find . -printf '%p %m %U:%G %s %l\\n' | LC_ALL=C sort | sha256sum && "
        "find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum"
    )
    out = rt.docker.containers.run(
        "debian:bookworm", ["bash", "-c", script], volumes={volume: {"bind": "/v", "mode": "ro"}}, remove=True
    )
    return out.decode().replace("-", "").replace("\n", " ").strip()


@pytest.fixture
def password() -> str:
    return secrets.token_urlsafe(12)
