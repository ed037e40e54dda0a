"""pgleap's helper containers: probe an image or a volume, run the container scripts
(collect, upgrade.sh), temporary servers on a volume, a client next to them.

The same shell scripts as the Kubernetes Job run here (bind-mounted read-only at
/pgleap/scripts). Secrets stay in memory: the user's environment is handed to the Docker API
as it was, never put on a command line or in a log."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from toolkit.core.facts import DataFacts, ImageFacts
from toolkit.core.paths import OLD_ROOT, SCRIPTS, SOCK, VOLUME
from toolkit.core.plan import UpgradePlan, not_postgres
from toolkit.core.process import pid_alive
from toolkit.db import faults
from toolkit.db.sql import Server
from toolkit.docker.client import DockerClient, DockerException, ImageNotFound, Mount, NotFound, client
from toolkit.docker.refs import LABEL, OWNER_LABEL, REHEARSE_HINT, VOLUME_LABEL, VolumeRef, _scripts_copy
from toolkit.errors import EnvironmentProblem, PgleapError, Refused

logger = logging.getLogger(__name__)


class DockerHelpers:
    """pgleap's own short-lived containers on one Docker engine (probes, scripts, temporary servers).

    Every helper container is labelled with the volume it touches and the pgleap process that
    started it, and removed; `reap` finds those a killed run left."""

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
