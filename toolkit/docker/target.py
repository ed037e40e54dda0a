"""`DockerTarget`: one database on Docker (a container or a bare volume) as the engine's Target
(toolkit/engine/target.py): recorded in the state, found again on resume."""

from __future__ import annotations

import os

from toolkit.core.facts import DataFacts, ImageFacts, parse_results
from toolkit.core.layout import Layout, rel_to_mount
from toolkit.core.paths import SOCK, VOLUME
from toolkit.core.plan import UpgradePlan
from toolkit.core.safe_paths import check_path
from toolkit.db import postupgrade
from toolkit.db.sql import Server
from toolkit.docker.client import NotFound
from toolkit.docker.refs import LABEL, SourceContainer, VolumeRef, _is_under
from toolkit.docker.replicas import finalize as finalize_replica
from toolkit.docker.replicas import find_replicas, reseed, restore
from toolkit.docker.runtime import DockerRuntime, docker_layout
from toolkit.errors import Refused


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

    def stop_new(self, plan: UpgradePlan) -> None:
        """The way back, first step: the new cluster's container stops and goes, the old one is
        back under its name, stopped. Safe to run again (each move checks before it acts).

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

    def restore_source(self, plan: UpgradePlan) -> str:
        """After `stop_new`: the old cluster back in place, its container started; upgrade.sh's output."""
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
        return reseed(
            self.rt, plan, primary_name=self.container_name, primary=self._new_primary(plan),
            replica_name=name, scratch=self.scratch_name(plan),
        )  # fmt: skip

    def restore_replica(self, plan: UpgradePlan, name: str) -> None:

        restore(self.rt, plan, name, self.scratch_name(plan))
        self.rt.start(name)

    def finalize_replica(self, plan: UpgradePlan, name: str) -> None:

        finalize_replica(self.rt, plan, name, self.scratch_name(plan))

    def cleanup(self, plan: UpgradePlan) -> None:
        if self.container_name:
            self.rt.remove(self.old_name)
            self.rt.remove(self.new_name)
        self.rt.remove_volume(self.scratch_name(plan))


_analyze_runs = postupgrade.analyze_runs  # one definition for both runtimes
