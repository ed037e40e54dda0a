"""The Docker runtime: the user's containers and volumes (DockerRuntime), on top of pgleap's
helper containers (helpers.py); the engine's Target is in target.py."""

from __future__ import annotations

import time
import uuid
from contextlib import suppress

from toolkit.core.layout import Layout, new_layout
from toolkit.core.paths import VOLUME
from toolkit.core.plan import UpgradePlan
from toolkit.db.replication import hba_user  # the rehearsal's own wording of a pg_hba.conf line
from toolkit.db.sql import Server
from toolkit.docker.client import APIError, Mount, NotFound
from toolkit.docker.helpers import DockerHelpers
from toolkit.docker.refs import LABEL, SourceContainer, VolumeRef, _is_under
from toolkit.errors import PgleapError, Refused


class DockerRuntime(DockerHelpers):
    """Containers on one Docker engine: the user's (inspect, stop, rename, recreate, clone)
    on top of pgleap's helper containers (toolkit/docker/helpers.py)."""

    def source_container(self, name: str) -> SourceContainer:
        try:
            c = self.docker.containers.get(name)
        except NotFound:
            raise Refused(
                f"no container named {name!r}",
                "check `docker ps -a`; for a volume without a container use --volume",
            ) from None
        attrs = c.attrs
        env = dict(e.split("=", 1) for e in attrs["Config"].get("Env") or [] if "=" in e)
        image = attrs["Config"]["Image"]
        pgdata = env.get("PGDATA") or self.image_pgdata(image)
        mounts = [m for m in attrs.get("Mounts", []) if _is_under(pgdata, m["Destination"])]
        if not mounts:
            raise Refused(
                f"container {name!r} keeps PGDATA {pgdata} on no volume (it lives in the container layer)",
                "pgleap upgrades data on a volume or bind mount; move the data to a volume first",
            )
        mount = max(mounts, key=lambda m: len(m["Destination"]))
        ref = (
            VolumeRef("volume", mount["Name"])
            if mount["Type"] == "volume"
            else VolumeRef("bind", mount["Source"])
        )
        return SourceContainer(
            name=name,
            image=image,
            pgdata=pgdata,
            mount=mount["Destination"],
            volume=ref,
            superuser=env.get("POSTGRES_USER", "postgres"),
            password=env.get("POSTGRES_PASSWORD"),
            attrs=attrs,
            running=attrs["State"]["Running"],
        )

    def live_server(self, source: SourceContainer) -> Server | None:
        """The running container over TCP on its bridge address (password from its env, never shown)."""
        networks = source.attrs["NetworkSettings"].get("Networks") or {}
        ips = [n.get("IPAddress") for n in networks.values() if n.get("IPAddress")]
        if not ips or not source.running:
            return None
        return Server(
            host=ips[0], port=5432, user=source.superuser, password=source.password, label="running server"
        )

    def basebackup(
        self, source: SourceContainer, bindir: str, clone: str, rel: str, *, uid: int, gid: int
    ) -> None:
        """pg_basebackup (WAL streamed along) from the running source into a new volume, over its network."""
        live = self.live_server(source)
        assert live is not None
        self.docker.volumes.create(clone, labels={LABEL: "rehearsal-clone"})
        mount = Mount(target=VOLUME, source=clone, type="volume")
        self.docker.containers.run(
            source.image, entrypoint=["bash", "-c", f"chown {uid}:{gid} {VOLUME} && chmod 0700 {VOLUME}"],
            user="0", mounts=[mount], remove=True,
        )  # fmt: skip
        networks = list((source.attrs["NetworkSettings"].get("Networks") or {}).keys())
        env = {"PGPASSWORD": source.password} if source.password else {}
        status, logs, _ = self.run_to_exit(
            source.image, entrypoint=[f"{bindir}/pg_basebackup"],
            command=["-h", live.host, "-p", "5432", "-U", source.superuser, "-D", f"{VOLUME}/{rel}".rstrip("/"),
                     "--wal-method=stream", "--checkpoint=fast", "--no-password"],
            environment=env, user=f"{uid}:{gid}", mounts=[mount], network=networks[0] if networks else None,
            labels=self._labels("basebackup", f"docker-{clone}"), name=f"pgleap-basebackup-{uuid.uuid4().hex[:8]}",
        )  # fmt: skip
        logs = logs.strip()
        if status != 0:
            last = logs.splitlines()[-1] if logs else f"exit {status}"
            hint = "see the message; the server's log says more"
            if "pg_hba.conf" in logs:
                hint = (
                    f"add `host replication {hba_user(source.superuser)} samenet md5` to pg_hba.conf (md5 also accepts "
                    "SCRAM-stored passwords), then SELECT pg_reload_conf()"
                )
            raise Refused(f"pg_basebackup could not clone {source.name}: {last}", hint)

    def run_clone(
        self, source: SourceContainer, plan: dict, clone: str, name: str, port: int | None
    ) -> tuple[str, str]:
        """The upgraded clone as a container on the new image, its 5432 published on `port` (or any)
        of 127.0.0.1 only: the clone holds production data and the report says 127.0.0.1."""
        self.remove(name)
        env = {"PGDATA": plan["layout"]["new_pgdata"], "POSTGRES_USER": source.superuser}
        if source.password:
            env["POSTGRES_PASSWORD"] = source.password
        container = self.docker.containers.run(
            plan["target_image"], name=name, detach=True, environment=env,
            mounts=[Mount(target=plan["layout"]["new_mount"], source=clone, type="volume")],
            ports={"5432/tcp": ("127.0.0.1", port)}, labels={LABEL: "rehearsal"},
        )  # fmt: skip
        self.wait_accepting(name, source.superuser, source.password)
        container.reload()
        host_port = container.attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"]
        return name, host_port

    def stop_container(self, name: str) -> None:
        c = self.docker.containers.get(name)
        timeout = c.attrs["Config"].get("StopTimeout") or 60
        c.reload()
        if c.status == "running":
            self.interrupt(name)
            c.wait(timeout=timeout + 30)

    def interrupt(self, name: str) -> None:
        """SIGINT (PostgreSQL's fast shutdown) to a running container; one that stopped meanwhile (its
        shutdown was asked for before) is left alone."""
        c = self.docker.containers.get(name)
        try:
            c.kill(signal="SIGINT")
        except APIError:
            c.reload()
            if c.status == "running":
                raise

    def rename(self, old: str, new: str) -> None:
        self.docker.containers.get(old).rename(new)

    def exists(self, name: str) -> bool:
        try:
            self.docker.containers.get(name)
            return True
        except NotFound:
            return False

    def start(self, name: str) -> None:
        self.docker.containers.get(name).start()

    def remove(self, name: str) -> None:
        with suppress(NotFound):
            self.docker.containers.get(name).remove(force=True)

    def recreate(self, source: SourceContainer, plan: UpgradePlan, name: str) -> None:
        """The user's container again, on the new image: same env, ports, networks, mounts, restart policy."""
        attrs = source.attrs
        cfg, host = attrs["Config"], attrs["HostConfig"]
        old_cfg = self.image_config(source.image)
        new_env = self.image_env(plan.target_image)
        old_default = dict(e.split("=", 1) for e in old_cfg.get("Env") or [] if "=" in e)
        env = {}
        for item in cfg.get("Env") or []:
            key, _, value = item.partition("=")
            if old_default.get(key) == value and key in new_env:
                continue  # an image default (PATH, PG_MAJOR, PGDATA...): take the new image's
            env[key] = value
        if "PGDATA" in env and env["PGDATA"] != plan.layout.new_pgdata:
            env["PGDATA"] = plan.layout.new_pgdata
        if plan.layout.new_pgdata != new_env.get("PGDATA"):
            env["PGDATA"] = plan.layout.new_pgdata
        mounts = []
        for m in attrs.get("Mounts", []):
            target = m["Destination"]
            if target == source.mount:
                target = plan.layout.new_mount
            kind = m["Type"]
            src = m["Name"] if kind == "volume" else m["Source"]
            mounts.append(Mount(target=target, source=src, type=kind, read_only=not m.get("RW", True)))
        ports = {
            port: [(b.get("HostIp") or "", b.get("HostPort") or None) for b in bindings]
            for port, bindings in (host.get("PortBindings") or {}).items()
            if bindings
        }
        networks = attrs["NetworkSettings"].get("Networks") or {}
        mode = host.get("NetworkMode") or "default"
        labels = {
            k: v for k, v in (cfg.get("Labels") or {}).items() if (old_cfg.get("Labels") or {}).get(k) != v
        }
        host_config = self.docker.api.create_host_config(
            port_bindings=ports or None,
            restart_policy=host.get("RestartPolicy") or None,
            mounts=mounts,
            network_mode=mode,
            shm_size=host.get("ShmSize") or None,
        )
        api = self.docker.api
        created = api.create_container(
            plan.target_image,
            command=cfg.get("Cmd") if cfg.get("Cmd") != old_cfg.get("Cmd") else None,
            entrypoint=cfg.get("Entrypoint") if cfg.get("Entrypoint") != old_cfg.get("Entrypoint") else None,
            environment=env,
            name=name,
            labels=labels,
            user=cfg.get("User") or None,
            ports=list((cfg.get("ExposedPorts") or {}).keys()) or None,
            host_config=host_config,
            networking_config=_primary_endpoint(api, source, mode),
        )
        for net_name in networks:
            if net_name in (mode, "bridge", "host", "none"):
                continue
            self.docker.networks.get(net_name).connect(
                created["Id"], aliases=_aliases(source, net_name) or None
            )

    def wait_accepting(
        self, name: str, superuser: str, password: str | None, timeout: float = 120, poll: float = 0.1
    ) -> None:
        c = self.docker.containers.get(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c.reload()
            if c.status == "exited":
                logs = c.logs().decode(errors="replace").strip().splitlines()[-15:]
                raise PgleapError(f"container {name} exited", "its log:\n" + "\n".join(logs))
            networks = c.attrs["NetworkSettings"].get("Networks") or {}
            ips = [n.get("IPAddress") for n in networks.values() if n.get("IPAddress")]
            if ips:
                Server(
                    host=ips[0], port=5432, user=superuser, password=password, label=f"container {name}"
                ).wait_ready(timeout=max(1.0, deadline - time.monotonic()), poll=poll)
                return
            time.sleep(poll)
        raise PgleapError(f"container {name} did not accept connections within {timeout:.0f} s")


def docker_layout(
    runtime: DockerRuntime, old_image: str, target_image: str, pgdata: str, mount: str
) -> Layout:
    """Where the new cluster goes for this pair of images (see core.layout.new_layout)."""
    return new_layout(
        mount, pgdata, runtime.image_pgdata(old_image), runtime.image_pgdata(target_image),
        runtime.image_volumes(target_image),
    )  # fmt: skip


def _aliases(source: SourceContainer, network: str) -> list[str]:
    """The container's aliases on a network, without its id (Docker adds that one itself)."""
    endpoint = (source.attrs["NetworkSettings"].get("Networks") or {}).get(network) or {}
    return [a for a in endpoint.get("Aliases") or [] if not source.attrs["Id"].startswith(a)]


def _primary_endpoint(api, source: SourceContainer, mode: str) -> dict | None:
    """The aliases on the network the container is created on (docker compose's service name): set at
    creation, as a `connect` would add a second endpoint on it."""
    aliases = _aliases(source, mode) if mode not in ("default", "bridge", "host", "none") else []
    return (
        api.create_networking_config({mode: api.create_endpoint_config(aliases=aliases)}) if aliases else None
    )
