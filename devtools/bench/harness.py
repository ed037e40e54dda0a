"""Containers and volumes of one benchmark run: all labelled with the run id, all removed at the end."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors
from docker.types import Mount

from toolkit.db.sql import Server
from toolkit.docker.runtime import DockerRuntime

logger = logging.getLogger(__name__)

LABEL = "org.pgleap.bench"
SUPERUSER = "gis"
HELPER_IMAGE = "debian:bookworm"  # only for cp -a; any image with coreutils would do


@dataclass
class Harness:
    rt: DockerRuntime
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    volumes: list[str] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.run_id}

    def name(self, what: str) -> str:
        return f"pgleap-bench-{self.run_id}-{what}-{uuid.uuid4().hex[:4]}"

    def volume(self, what: str) -> str:
        name = self.name(what)
        self.rt.docker.volumes.create(name, labels=self.labels)
        self.volumes.append(name)
        return name

    def clone(self, golden: str, what: str) -> str:
        """A byte-identical copy of the golden volume, flushed to disk before anything is timed."""
        vol = self.volume(what)
        self.rt.docker.containers.run(
            self.helper_image(), ["sh", "-c", "cp -a /from/. /to/ && sync"],
            mounts=[Mount("/from", golden, type="volume", read_only=True), Mount("/to", vol, type="volume")],
            labels=self.labels, remove=True,
        )  # fmt: skip
        return vol

    def helper_image(self) -> str:
        try:
            self.rt.docker.images.get(HELPER_IMAGE)
            return HELPER_IMAGE
        except docker.errors.ImageNotFound:
            return "pgleap/postgis:13-3.1"

    def start_server(
        self, image: str, volume: str, mount: str, *, args: list[str] | None = None, env: dict | None = None,
        bare: bool = False, port: bool = False,
    ) -> str:  # fmt: skip
        """A database container the way a user runs one (POSTGRES_* env, the volume at the image's PGDATA);
        with `port`, 5432 published on a free 127.0.0.1 port (for a writer)."""
        name = self.name("db")
        mounts = [Mount(mount, volume, type="volume")]
        if bare:  # no template_postgis, no extensions from the image's init scripts: an empty .sql instead
            mounts.append(
                Mount("/docker-entrypoint-initdb.d", self._empty_initdb(), type="bind", read_only=True)
            )
        self.rt.docker.containers.run(
            image, args or None, name=name, detach=True, labels=self.labels, mounts=mounts,
            ports={"5432/tcp": ("127.0.0.1", _free_port())} if port else None,
            environment={"POSTGRES_USER": SUPERUSER, "POSTGRES_PASSWORD": self.password,
                         "POSTGRES_DB": SUPERUSER, **(env or {})},
        )  # fmt: skip
        self.rt.wait_accepting(name, SUPERUSER, self.password, timeout=300)
        return name

    def _empty_initdb(self) -> str:
        path = os.path.join(tempfile.gettempdir(), f"pgleap-bench-{self.run_id}-initdb")
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o755)
        Path(path, "00-none.sql").write_text("")  # the entrypoint stops on an empty directory
        os.chmod(os.path.join(path, "00-none.sql"), 0o644)
        return path

    def server(self, name: str) -> Server:
        server = self.rt.live_server(self.rt.source_container(name))
        assert server is not None, f"{name} is not running"
        server.password = self.password
        return server

    def published_port(self, name: str) -> int:
        ports = self.rt.docker.containers.get(name).attrs["NetworkSettings"]["Ports"]
        return int(ports["5432/tcp"][0]["HostPort"])

    def volume_mb(self, volume: str) -> float:
        out = self.rt.docker.containers.run(
            self.helper_image(), ["du", "-sm", "/v"], mounts=[Mount("/v", volume, type="volume", read_only=True)],
            labels=self.labels, remove=True,
        )  # fmt: skip
        return float(out.decode().split()[0])

    def drop(self, *volumes: str) -> None:
        """Remove the containers using these volumes (user's, renamed old, scratch) and the volumes."""
        for c in self.rt.docker.containers.list(all=True, filters={"label": f"{LABEL}={self.run_id}"}):
            mounted = {m.get("Name") for m in c.attrs.get("Mounts", [])}
            if mounted & set(volumes):
                with suppress(docker.errors.NotFound):
                    c.remove(force=True, v=True)
        for vol in volumes:
            for name in (vol, f"pgleap-old-binaries-{vol}"):
                self._remove_volume(name)
            if vol in self.volumes:
                self.volumes.remove(vol)

    def cleanup(self) -> None:
        """Everything this run made, whatever state it is in."""
        for c in self.rt.docker.containers.list(all=True, filters={"label": f"{LABEL}={self.run_id}"}):
            with suppress(docker.errors.NotFound):
                c.remove(force=True, v=True)
        for vol in list(self.volumes):
            for name in (vol, f"pgleap-old-binaries-{vol}"):
                self._remove_volume(name)
        for v in self.rt.docker.volumes.list(filters={"label": f"{LABEL}={self.run_id}"}):
            with suppress(docker.errors.NotFound):
                v.remove(force=True)
        self.volumes.clear()
        shutil.rmtree(
            os.path.join(tempfile.gettempdir(), f"pgleap-bench-{self.run_id}-initdb"), ignore_errors=True
        )

    def _remove_volume(self, name: str) -> None:
        for _ in range(10):  # a just-removed container may hold it for a moment
            try:
                self.rt.docker.volumes.get(name).remove(force=True)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError:
                time.sleep(0.5)
        logger.warning("could not remove volume %s", name)


def _free_port() -> int:
    """A fixed port, as users publish one (the hand-over keeps it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
