"""Run the engine's steps as Docker containers on Docker volumes.

The same shell scripts as the Kubernetes Job run here (bind-mounted read-only
at /pgleap/scripts). Secrets stay in memory: the user's environment is handed to
the Docker API as it was, never put on a command line or in a log.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache

from toolkit.core.facts import DataFacts, ImageFacts, parse_results
from toolkit.core.layout import Layout, new_layout, rel_to_mount
from toolkit.core.plan import UpgradePlan, not_postgres
from toolkit.core.process import pid_alive
from toolkit.core.safe_paths import check_path
from toolkit.db import faults, postupgrade
from toolkit.db.sql import Server
from toolkit.docker.client import DockerClient, DockerException, ImageNotFound, Mount, NotFound, client
from toolkit.errors import EnvironmentProblem, PgleapError, Refused
from toolkit.resources import container_script

logger = logging.getLogger(__name__)

REHEARSE_HINT = (
    "fix the object named above on the old database; `pgleap rehearse` runs pg_upgrade on a copy "
    "while production keeps serving and finds such failures before the stop"
)

SCRIPTS = "/pgleap/scripts"
VOLUME = "/pgleap/volume"
OLD_ROOT = "/pgleap/old"
SOCK = "/pgleap/sock"
LABEL = "org.pgleap.role"
# Every helper that touches a volume says which one and which pgleap process started it,
# so a later run can find what a killed run left behind (DockerRuntime.reap).
VOLUME_LABEL = "org.pgleap.volume"
OWNER_LABEL = "org.pgleap.owner"


@dataclass(frozen=True)
class VolumeRef:
    """A Docker volume or a bind-mounted host directory holding the cluster."""

    kind: str  # volume | bind
    source: str

    def mount(self, target: str, *, read_only: bool = False) -> Mount:
        return Mount(target=target, source=self.source, type=self.kind, read_only=read_only)

    @property
    def key(self) -> str:
        return self.source.strip("/").replace("/", "_") or "root"


@dataclass
class SourceContainer:
    """What pgleap read from the user's container (password kept private)."""

    name: str
    image: str
    pgdata: str
    mount: str
    volume: VolumeRef
    superuser: str
    password: str | None = field(repr=False, default=None)
    attrs: dict = field(repr=False, default_factory=dict)
    running: bool = False


@cache
def _scripts_copy() -> str:
    """The container scripts, copied once per process into the temporary directory.

    Bind sources are paths on the Docker host: a copy under $TMPDIR (default /tmp) works
    when pgleap itself runs in a container with the host's /tmp mounted at /tmp, where its
    installed package's own folder would not exist on the host."""
    folder = tempfile.mkdtemp(prefix="pgleap-scripts-")
    for script in container_script("upgrade.sh").parent.glob("*.sh"):
        shutil.copy(script, folder)
    os.chmod(folder, 0o755)
    atexit.register(shutil.rmtree, folder, True)
    return folder


class DockerRuntime:
    """Containers on one Docker engine. Every helper container is labelled and removed."""

    def __init__(self, docker_client: DockerClient | None = None) -> None:
        self.docker = docker_client or client()
        self.scripts_dir = _scripts_copy()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    def _labels(self, role: str, volume_key: str | None) -> dict[str, str]:
        labels = {LABEL: role, OWNER_LABEL: self.owner}
        if volume_key:
            labels[VOLUME_LABEL] = volume_key
        return labels

    def reap(self, volume_key: str) -> list[str]:
        """Remove the helpers a killed pgleap left on this volume; refuse if their pgleap still runs.

        A temporary server gets a fast shutdown (a clean checkpoint) first; a script
        container is killed: every step of upgrade.sh is safe to run again.
        """
        removed = []
        for row in self.docker.api.containers(all=True, filters={"label": f"{VOLUME_LABEL}={volume_key}"}):
            try:
                c = self.docker.containers.get(row["Id"])
            except NotFound:
                continue  # it ended and removed itself meanwhile
            host, _, pid = c.labels.get(OWNER_LABEL, "").partition(":")
            if (
                host == socket.gethostname()
                and pid.isdigit()
                and int(pid) != os.getpid()
                and pid_alive(int(pid))
            ):
                raise Refused(  # a run in progress holds the volume: a refusal (3), as the lock
                    f"another pgleap (pid {pid}) is still working on this volume (container {c.name})",
                    "wait for it to finish, or check `pgleap status`",
                )
            logger.warning("removing %s, left on the volume by an interrupted pgleap run", c.name)
            if c.labels.get(LABEL) == "temp-server" and c.status == "running":
                with suppress(DockerException):
                    self._stop(c, fast=True, timeout=60)
            c.remove(force=True, v=True)
            removed.append(c.name)
        return removed

    # ---- images -------------------------------------------------------------------------------

    def image_config(self, image: str) -> dict:
        try:
            return self.docker.images.get(image).attrs["Config"]
        except ImageNotFound:
            pass
        try:
            logger.info("pulling %s", image)
            return self.docker.images.pull(image).attrs["Config"]
        except DockerException:
            raise EnvironmentProblem(
                f"image {image} is not present and cannot be pulled",
                "check the name, or build the test images with `pgleap images build`",
            ) from None

    def image_env(self, image: str) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.image_config(image).get("Env") or [] if "=" in e)

    def image_pgdata(self, image: str) -> str:
        return self.image_env(image).get("PGDATA", "/var/lib/postgresql/data")

    def image_volumes(self, image: str) -> list[str]:
        return sorted((self.image_config(image).get("Volumes") or {}).keys())

    # ---- one-shot script containers ------------------------------------------------------------

    def run_to_exit(self, image: str, *, separate_stderr: bool = False, **create) -> tuple[int, str, str]:
        """Create a container (`create`: containers.create's keywords), start it, wait for it to exit,
        read its log, and remove it whatever happens (v: with the image's anonymous VOLUMEs).

        Returns (exit status, log, stderr): the log holds stdout and stderr interleaved and
        stderr is "", or with separate_stderr the log is stdout alone and stderr is apart.
        """
        container = self.docker.containers.create(image, **create)
        try:
            container.start()
            status = container.wait()["StatusCode"]
            if separate_stderr:
                out = container.logs(stdout=True, stderr=False).decode(errors="replace")
                err = container.logs(stdout=False, stderr=True).decode(errors="replace")
            else:
                out, err = container.logs().decode(errors="replace"), ""
        finally:
            container.remove(force=True, v=True)
        return status, out, err

    def run_script(
        self,
        image: str,
        script: str,
        env: dict[str, str],
        mounts: list[Mount],
        *,
        user: str | None = None,
        what: str = "",
        volume_key: str | None = None,
    ) -> str:
        """Run a container script to completion; its stdout, or a PgleapError with the log tail."""
        self.image_config(image)
        status, out, err = self.run_to_exit(
            image,
            separate_stderr=True,
            entrypoint=["bash", f"{SCRIPTS}/{script}"],
            command=[],
            environment={**env, **faults.container_env()},
            user=user,
            mounts=[Mount(target=SCRIPTS, source=self.scripts_dir, type="bind", read_only=True), *mounts],
            labels=self._labels("script", volume_key),
            name=f"pgleap-{script.removesuffix('.sh')}-{uuid.uuid4().hex[:8]}",
        )
        for line in err.splitlines():
            logger.info("%s", line)
        if status != 0:
            tail = "\n".join(err.strip().splitlines()[-25:])
            errors = [
                ln.split("ERROR: ", 1)[1] for ln in err.splitlines() if "ERROR: " in ln and "pgleap[" in ln
            ]
            message = errors[-1] if errors else f"{what or script} failed in {image} (exit {status})"
            raise PgleapError(message, f"the step's log ends with:\n{tail}")
        return out

    def probe_image(self, image: str) -> ImageFacts:
        try:
            out = self.run_script(image, "probe.sh", {}, [], user="0", what="probe")
            return ImageFacts.from_probe(image, out)
        except (PgleapError, ValueError) as exc:
            if isinstance(exc, EnvironmentProblem):
                raise
            raise not_postgres(image, str(exc)) from None

    def probe_data(self, image: str, volume: VolumeRef, rel: str) -> DataFacts:
        pgdata = f"{VOLUME}/{rel}".rstrip("/")
        out = self.run_script(
            image, "probe.sh", {"PGLEAP_PGDATA": pgdata}, [volume.mount(VOLUME, read_only=True)], user="0"
        )
        return DataFacts.from_probe(out)

    def writable(self, image: str, volume: VolumeRef, rel: str, uid: int, gid: int) -> bool:
        """Whether the data owner may write the volume and PGDATA (test -w; nothing is written)."""
        out = self.run_script(
            image, "probe.sh", {"PGLEAP_PGDATA": f"{VOLUME}/{rel}".rstrip("/"), "PGLEAP_CHECK_WRITABLE": VOLUME},
            [volume.mount(VOLUME)], user=f"{uid}:{gid}",
        )  # fmt: skip
        return "PGLEAP writable=yes" in out

    def collect(self, image: str, scratch: str, owner: str, volume_key: str | None = None) -> None:
        self.run_script(
            image,
            "collect.sh",
            {"PGLEAP_OLD_ROOT": OLD_ROOT, "PGLEAP_CHOWN": owner},
            [Mount(target=OLD_ROOT, source=scratch, type="volume")],
            user="0",
            what="collecting the old binaries",
            volume_key=volume_key,
        )

    def upgrade_action(
        self,
        plan: UpgradePlan,
        volume: VolumeRef,
        scratch: str,
        action: str,
        volume_key: str | None = None,
        *,
        check: bool = True,
    ) -> str:
        env = plan.container_env(action, volume=VOLUME, old_root=OLD_ROOT)
        if not check:
            env["PGLEAP_CHECK"] = "0"  # pg_upgrade checks again by itself before it changes anything
        try:
            return self.run_script(
                plan.target_image,
                "upgrade.sh",
                env,
                [volume.mount(VOLUME), Mount(target=OLD_ROOT, source=scratch, type="volume")],
                user=f"{plan.uid}:{plan.gid}",
                what=f"upgrade.sh {action}",
                volume_key=volume_key,
            )
        except PgleapError as exc:
            if not exc.message.startswith("pg_upgrade"):
                raise
            # What SQL can see, preflight refuses before the stop; the rest only a real run shows.
            raise PgleapError(exc.message, f"{REHEARSE_HINT}\n{exc.hint}") from None

    def ensure_scratch(self, name: str) -> str:
        try:
            self.docker.volumes.get(name)
        except NotFound:
            self.docker.volumes.create(name, labels={LABEL: "old-binaries"})
        return name

    def remove_volume(self, name: str) -> None:
        with suppress(NotFound):
            self.docker.volumes.get(name).remove(force=True)

    # ---- temporary servers ---------------------------------------------------------------------

    @contextmanager
    def temp_server(
        self,
        image: str,
        bindir: str,
        volume: VolumeRef,
        rel: str,
        *,
        uid: int,
        gid: int,
        superuser: str,
        read_only: bool,
        label: str,
        volume_key: str | None = None,
    ) -> Iterator[Server]:
        """A server on the volume reachable only through a private socket directory (no TCP, no password)."""
        sockdir = tempfile.mkdtemp(prefix="pgleap-sock-")
        os.chown(sockdir, uid, gid)
        os.chmod(sockdir, 0o700)
        with open(os.path.join(sockdir, "pgleap_hba.conf"), "w") as hba:
            hba.write("local all all trust\n")
        os.chmod(os.path.join(sockdir, "pgleap_hba.conf"), 0o644)
        args = [
            "-D", f"{VOLUME}/{rel}".rstrip("/"),
            "-c", "listen_addresses=",
            "-c", f"unix_socket_directories={SOCK}",
            "-c", f"hba_file={SOCK}/pgleap_hba.conf",
        ]  # fmt: skip
        if read_only:
            args += ["-c", "default_transaction_read_only=on"]
        container = self.docker.containers.run(
            image,
            entrypoint=[f"{bindir}/postgres"],
            command=args,
            user=f"{uid}:{gid}",
            mounts=[volume.mount(VOLUME), Mount(target=SOCK, source=sockdir, type="bind")],
            labels=self._labels("temp-server", volume_key),
            name=f"pgleap-server-{uuid.uuid4().hex[:8]}",
            detach=True,
        )
        server = Server(host=sockdir, port=5432, user=superuser, label=label)
        try:
            try:
                server.wait_ready(timeout=120)
            except PgleapError:
                container.reload()
                logs = container.logs().decode(errors="replace").strip().splitlines()[-15:]
                raise PgleapError(f"the {label} did not start", "its log:\n" + "\n".join(logs)) from None
            yield server
        finally:
            self._stop(container, fast=True)
            container.remove(force=True, v=True)  # v: anonymous VOLUMEs of the image
            shutil.rmtree(sockdir, ignore_errors=True)

    def run_client(
        self, image: str, sockdir: str, cmd: list[str], *, uid: int, gid: int, volume_key: str | None = None
    ) -> str:
        """A client program of `image` (vacuumdb, psql) talking to a temporary server's socket."""
        status, logs, _ = self.run_to_exit(
            image, entrypoint=[cmd[0]], command=cmd[1:], user=f"{uid}:{gid}",
            mounts=[Mount(target=SOCK, source=sockdir, type="bind")], labels=self._labels("client", volume_key),
            name=f"pgleap-client-{uuid.uuid4().hex[:8]}",
        )  # fmt: skip
        if status != 0:
            raise PgleapError(f"{cmd[0]} failed (exit {status}): {logs.strip()[-1500:]}")
        return logs

    def exec_in(self, container_name: str, cmd: list[str], user: str, env: dict | None = None) -> str:
        container = self.docker.containers.get(container_name)
        result = container.exec_run(cmd, user=user, environment=env)
        if result.exit_code != 0:
            raise PgleapError(f"{cmd[0]} failed: {result.output.decode(errors='replace')[-2000:]}")
        return result.output.decode(errors="replace")

    @staticmethod
    def _stop(container, *, fast: bool, timeout: int = 120) -> None:
        """SIGINT is PostgreSQL's fast shutdown: clients cut, a clean checkpoint written."""
        container.reload()
        if container.status != "running":
            return
        container.kill(signal="SIGINT" if fast else "SIGTERM")
        container.wait(timeout=timeout)

    # ---- the user's container ------------------------------------------------------------------

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
                from toolkit.db.replication import hba_user  # the rehearsal's own wording of the line

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
            c.kill(signal="SIGINT")
            c.wait(timeout=timeout + 30)

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
        )
        for net_name, net in networks.items():
            if net_name in (mode, "bridge", "host", "none"):
                continue
            aliases = [a for a in (net.get("Aliases") or []) if not source.attrs["Id"].startswith(a)]
            self.docker.networks.get(net_name).connect(created["Id"], aliases=aliases or None)

    def wait_accepting(self, name: str, superuser: str, password: str | None, timeout: float = 120) -> None:
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
                ).wait_ready(timeout=max(1.0, deadline - time.monotonic()))
                return
            time.sleep(0.1)
        raise PgleapError(f"container {name} did not accept connections within {timeout:.0f} s")


def _is_under(path: str, parent: str) -> bool:
    path, parent = os.path.normpath(path), os.path.normpath(parent)
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def docker_layout(
    runtime: DockerRuntime, old_image: str, target_image: str, pgdata: str, mount: str
) -> Layout:
    """Where the new cluster goes for this pair of images (see core.layout.new_layout)."""
    return new_layout(
        mount, pgdata, runtime.image_pgdata(old_image), runtime.image_pgdata(target_image),
        runtime.image_volumes(target_image),
    )  # fmt: skip


class DockerTarget:
    """One database on Docker: a container (stopped, upgraded, recreated on the new image) or a bare volume."""

    def __init__(
        self,
        runtime: DockerRuntime,
        *,
        container: str | None = None,
        volume: str | None = None,
        source_image: str | None = None,
        pgdata: str | None = None,
        saved: dict | None = None,
    ) -> None:
        self.rt = runtime
        self.container_name = container
        self.source: SourceContainer | None = None
        if saved:  # resume/rollback/finalize: what was recorded before the container was changed
            self.container_name = saved.get("container")
            self.volume = VolumeRef(**saved["volume"])
            self.source_image = saved["source_image"]
            self.pgdata = saved["pgdata"]
            self.mount = saved["mount"]
            self.superuser = saved.get("superuser", "postgres")
            if self.container_name:
                name = self.container_name
                holder = self.old_name if self.rt.exists(self.old_name) else name
                if self.rt.exists(holder):
                    self.source = self.rt.source_container(holder)
                    self.source.name = name
        elif container:
            self.source = self.rt.source_container(container)
            self.volume = self.source.volume
            self.source_image = self.source.image
            self.pgdata = self.source.pgdata
            self.mount = self.source.mount
            self.superuser = self.source.superuser
        else:
            if not (volume and source_image):
                raise Refused(
                    "give --container NAME, or --volume VOL with --from IMAGE",
                    "--from names the image the volume's cluster was created with (e.g. postgis/postgis:15-3.3)",
                )
            try:
                self.rt.docker.volumes.get(volume)
            except NotFound:
                raise Refused(f"no Docker volume named {volume!r}", "check `docker volume ls`") from None
            self.volume = VolumeRef("volume", volume)
            self.source_image = source_image
            self.pgdata = pgdata or self.rt.image_pgdata(source_image)
            vols = self.rt.image_volumes(source_image)
            self.mount = next((v for v in vols if _is_under(self.pgdata, v)), self.pgdata)
            self.superuser = "postgres"
        check_path(self.pgdata, "PGDATA")  # before anything changes: pg_upgrade runs it through a shell
        check_path(self.mount, "the data volume's mount point")
        if self.volume.kind == "bind":
            check_path(self.volume.source, "the bind-mounted data directory")
        self.key = f"docker-{self.volume.key}"

    @property
    def old_name(self) -> str:
        return f"{self.container_name}-pgleap-old"

    def describe(self) -> dict:
        return {
            "container": self.container_name,
            "volume": {"kind": self.volume.kind, "source": self.volume.source},
            "source_image": self.source_image,
            "pgdata": self.pgdata,
            "mount": self.mount,
            "superuser": self.superuser,
        }

    def _rel(self) -> str:
        return rel_to_mount(self.pgdata, self.mount)

    def probe_image(self, image: str) -> ImageFacts:
        return self.rt.probe_image(image)

    def probe_data(self) -> DataFacts:
        return self.rt.probe_data(self.source_image, self.volume, self._rel())

    def running_users(self) -> list[str]:
        """Running containers (not pgleap's) that mount this volume."""
        if self.volume.kind != "volume":
            return []
        found = self.rt.docker.containers.list(filters={"volume": self.volume.source})
        return [c.name for c in found if LABEL not in (c.labels or {})]

    def check_writable(self, data: DataFacts) -> None:
        uid, gid = data.owner_uid or 999, data.owner_gid or 999
        if not self.rt.writable(self.source_image, self.volume, self._rel(), uid, gid):
            raise Refused(
                f"the volume {self.volume.source} is read-only or not writable by the data owner (uid {uid})",
                "mount it read-write (and give PGDATA to its owner), then run pgleap again",
            )

    def layout(self, target_image: str) -> Layout:
        return docker_layout(self.rt, self.source_image, target_image, self.pgdata, self.mount)

    def live_server(self) -> Server | None:
        if self.source is None or not self.source.running:
            return None
        return self.rt.live_server(self.source)

    def old_server(self, old: ImageFacts, data: DataFacts, superuser: str):
        user = superuser or self._bootstrap_user(old, data)
        return self.rt.temp_server(
            self.source_image, old.bindir, self.volume, self._rel(),
            uid=data.owner_uid or 999, gid=data.owner_gid or 999, superuser=user, read_only=True,
            label="old cluster (temporary, read-only)", volume_key=self.key,
        )  # fmt: skip

    def _bootstrap_user(self, old: ImageFacts, data: DataFacts) -> str:
        """Without a running server the OID-10 role's name is unknown: ask a single-user backend."""
        out = self.rt.run_script(
            self.source_image,
            "bootstrap-user.sh",
            {"PGLEAP_PGDATA": f"{VOLUME}/{self._rel()}".rstrip("/"), "PGLEAP_BINDIR": old.bindir},
            [self.volume.mount(VOLUME)],
            user=f"{data.owner_uid or 999}:{data.owner_gid or 999}",
            what="reading the bootstrap superuser",
            volume_key=self.key,
        )
        self.superuser = dict(parse_results(out)).get("bootstrap_user") or "postgres"
        return self.superuser

    def new_server(self, plan: UpgradePlan, bindir: str):
        return self.rt.temp_server(
            plan.target_image, bindir, self.volume, plan.layout.new_rel,
            uid=plan.uid, gid=plan.gid, superuser=plan.superuser, read_only=False,
            label="new cluster (temporary)", volume_key=self.key,
        )  # fmt: skip

    def scratch_name(self, plan: UpgradePlan) -> str:
        return f"pgleap-old-binaries-{self.volume.key}"

    def collect(self, plan: UpgradePlan) -> None:
        self.rt.ensure_scratch(self.scratch_name(plan))
        self.rt.collect(plan.source_image, self.scratch_name(plan), f"{plan.uid}:{plan.gid}", self.key)

    def run_action(self, plan: UpgradePlan, action: str, *, check: bool = True) -> str:
        return self.rt.upgrade_action(
            plan, self.volume, self.scratch_name(plan), action, self.key, check=check
        )

    def cleanup_scratch(self) -> None:
        self.rt.remove_volume(f"pgleap-old-binaries-{self.volume.key}")

    def supports_minimal_downtime(self) -> bool:
        """--downtime minimal restarts a container on the new image; a bare volume has none."""
        return self.container_name is not None

    def reap_leftovers(self) -> list[str]:
        return self.rt.reap(self.key)

    def serving_server(self, plan: UpgradePlan) -> Server | None:
        """The recreated container on the new image, over TCP (None for a bare volume)."""
        if not self.container_name or self.source is None:
            return None
        server = self.rt.live_server(self.rt.source_container(self.container_name))
        if server is not None:
            server.password = self.source.password
            server.label = "upgraded server"
        return server

    def analyze_serving(self, plan: UpgradePlan) -> str:
        """vacuumdb inside the serving container (password through the exec environment, not argv)."""
        base = ["vacuumdb", "--all", "--quiet", "-h", "127.0.0.1", "-U", plan.superuser]
        runs = _analyze_runs(plan.new_major)
        env = {"PGPASSWORD": self.source.password} if self.source and self.source.password else None
        for extra in runs:
            self.rt.exec_in(self.container_name, [*base, *extra], user=f"{plan.uid}:{plan.gid}", env=env)
        return " then ".join(" ".join(r) for r in runs)

    def stop_source(self) -> None:
        if self.container_name and self.rt.exists(self.container_name):
            self.rt.stop_container(self.container_name)

    def start_source(self) -> None:
        if self.container_name and self.rt.exists(self.container_name):
            self.rt.start(self.container_name)

    @property
    def new_name(self) -> str:
        return f"{self.container_name}-pgleap-new"

    def precreate_new(self, plan: UpgradePlan) -> None:
        """Create (never start) the new-image container before the downtime; start_new renames it in.

        Creating binds no port and starts nothing, so the old container keeps serving.
        """
        if self.container_name and self.source is not None and not self.rt.exists(self.new_name):
            self.rt.recreate(self.source, plan, self.new_name)

    def start_new(self, plan: UpgradePlan) -> None:
        if not self.container_name or self.source is None:
            return  # a bare volume: the user starts the new image themselves
        if not self.rt.exists(self.old_name):
            self.rt.rename(self.container_name, self.old_name)
        if not self.rt.exists(self.container_name):
            if self.rt.exists(self.new_name):
                self.rt.rename(self.new_name, self.container_name)
            else:
                self.rt.recreate(self.source, plan, self.container_name)
        self.rt.start(self.container_name)
        self.rt.wait_accepting(self.container_name, plan.superuser, self.source.password)

    def restore_source(self, plan: UpgradePlan) -> str:
        """The old container back under its name, the old cluster back in place; upgrade.sh's output.

        Only called once `rollback-check` allowed it (toolkit/engine/undo.py): nothing here decides.
        """
        if self.container_name:
            self.rt.remove(self.new_name)  # pre-created by --downtime minimal, never started
        if self.container_name and self.rt.exists(self.old_name):
            if self.rt.exists(self.container_name):  # the new cluster (copy/clone) stops cleanly, then goes
                self.rt.stop_container(self.container_name)
                self.rt.remove(self.container_name)
            self.rt.rename(self.old_name, self.container_name)
        self.stop_source()
        out = self.run_action(plan, "rollback")
        if self.container_name and self.rt.exists(self.container_name):
            self.rt.start(self.container_name)
            password = self.source.password if self.source else None
            self.rt.wait_accepting(self.container_name, plan.superuser, password)
        return out

    def stopped_by_run(self) -> bool:
        """A container this run stopped or replaced, not serving on its old image now (bare volume: False)."""
        if not self.container_name:
            return False
        if self.rt.exists(self.old_name):
            return True
        if not self.rt.exists(self.container_name):
            return False
        current = self.rt.source_container(self.container_name)
        return not current.running or current.image != self.source_image

    def command(self, verb: str) -> str:
        where = (
            f"--container {self.container_name}" if self.container_name else f"--volume {self.volume.source}"
        )
        return f"pgleap {verb} docker {where}"

    def volume_path(self, path: str) -> str:
        rel = path.removeprefix(VOLUME).lstrip("/")
        if self.volume.kind == "bind":
            return os.path.join(self.volume.source, rel)
        return f"{rel} on volume {self.volume.source}"

    def analyze(self, server: Server, plan: UpgradePlan) -> str:
        """vacuumdb from the new image against the temporary server's socket (18+: missing stats first)."""
        base = ["vacuumdb", "--all", "--quiet", "-h", SOCK, "-U", plan.superuser]
        runs = _analyze_runs(plan.new_major)
        for extra in runs:
            self.rt.run_client(
                plan.target_image,
                server.host,
                [*base, *extra],
                uid=plan.uid,
                gid=plan.gid,
                volume_key=self.key,
            )
        return " then ".join(" ".join(r) for r in runs)

    # ---- streaming replicas ---------------------------------------------------------------

    def find_replicas(self) -> list[str]:
        from toolkit.docker.replicas import find_replicas

        live = self.live_server()
        return find_replicas(self.rt, live) if live is not None else []

    def _new_primary(self, plan: UpgradePlan) -> Server:
        c = self.rt.docker.containers.get(self.container_name)
        ip = next(
            n["IPAddress"] for n in c.attrs["NetworkSettings"]["Networks"].values() if n.get("IPAddress")
        )
        password = self.source.password if self.source else None
        return Server(ip, 5432, plan.superuser, password, label="upgraded primary")

    def reseed_replica(self, plan: UpgradePlan, name: str) -> dict:
        from toolkit.docker.replicas import reseed

        return reseed(
            self.rt, plan, primary_name=self.container_name, primary=self._new_primary(plan),
            replica_name=name, scratch=self.scratch_name(plan),
        )  # fmt: skip

    def restore_replica(self, plan: UpgradePlan, name: str) -> None:
        from toolkit.docker.replicas import restore

        restore(self.rt, plan, name, self.scratch_name(plan))
        self.rt.start(name)

    def finalize_replica(self, plan: UpgradePlan, name: str) -> None:
        from toolkit.docker.replicas import replica_plan

        old_name = f"{name}-pgleap-old"
        if self.rt.exists(old_name):
            source = self.rt.source_container(old_name)
            self.rt.upgrade_action(
                replica_plan(self.rt, plan, source), source.volume, self.scratch_name(plan), "finalize"
            )
            self.rt.remove(old_name)

    def cleanup(self, plan: UpgradePlan) -> None:
        if self.container_name:
            self.rt.remove(self.old_name)
            self.rt.remove(self.new_name)
        self.rt.remove_volume(self.scratch_name(plan))


_analyze_runs = postupgrade.analyze_runs  # one definition for both runtimes
