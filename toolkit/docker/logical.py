"""Containers of a blue/green upgrade: the new cluster on its own volume beside the user's
container, then the hand-over of the container's name, networks and published ports.

Names (all derived from the user's container NAME):
  NAME-pgleap-next   the new cluster while it is built and synchronised: the user's settings on the
                     new volume; with published ports on NAME-pgleap-net only (logical_handover.py)
  NAME-pgleap-net    with published ports: pgleap's internal network, the old and the new server on it
                     until the switch (an internal network gives no gateway: no port bound)
  NAME               after the switch: NAME-pgleap-next renamed, joined to the user's networks
  NAME-pgleap-old    after the switch: the user's original container, stopped, kept for rollback
  NAME-pgleap-blue   after the switch: the old cluster again (old image, old volume, no ports),
                     receiving the new cluster's writes over the reverse subscription
  STANDBY-pgleap-old after a standby's re-seed from the new NAME (toolkit/docker/replicas.py): the
                     standby's original container; its old data stays aside on its own volume
"""

from __future__ import annotations

import logging
import uuid

from toolkit.core.layout import rel_to_mount
from toolkit.core.paths import SCRIPTS
from toolkit.db.sql import Server
from toolkit.docker import logical_handover, logical_names, replicas
from toolkit.docker.client import DockerException, Mount, NotFound
from toolkit.docker.refs import LABEL, SourceContainer
from toolkit.docker.runtime import DockerRuntime, docker_layout
from toolkit.errors import PgleapError, Refused

logger = logging.getLogger(__name__)


def for_container(rt: DockerRuntime, name: str) -> LogicalDocker:
    """The user's container; after the switch its original is NAME-pgleap-old (read from there)."""
    holder = f"{name}-pgleap-old" if rt.exists(f"{name}-pgleap-old") else name
    source = rt.source_container(holder)
    source.name = name
    return LogicalDocker(rt, source)


class LogicalDocker:
    """The Docker side of `--strategy logical` for one user container."""

    def __init__(self, rt: DockerRuntime, source: SourceContainer) -> None:
        if source.volume.kind != "volume":
            raise Refused(
                f"container {source.name!r} keeps its data in a bind mount; --strategy logical makes a new "
                "Docker volume for the new cluster and needs the old one to be a volume too",
                "use --strategy inplace, or move the data to a Docker volume",
            )
        self.rt = rt
        self.source = source
        self.name = source.name
        self.next_name = f"{source.name}-pgleap-next"
        self.old_name = f"{source.name}-pgleap-old"
        self.blue_name = f"{source.name}-pgleap-blue"
        self.green_name = f"{source.name}-pgleap-green"  # made by earlier versions: removed if found
        self.net_name = f"{source.name}-pgleap-net"
        self.next_volume = f"{source.volume.source}-pgleap-next"
        # no published port: the hand-over is renames and aliases; with: the user's networks joined too
        self.by_rename = not logical_names.publishes_ports(source.attrs)

    # ---- addresses -----------------------------------------------------------------------------

    def _attrs(self, name: str) -> dict:
        return self.rt.docker.containers.get(name).attrs

    def network(self) -> str | None:
        """Where the servers reach each other: before the switch with published ports NAME-pgleap-net
        (the new server is on it only), else the user's first network."""
        if not self.by_rename and self.rt.exists(self.next_name):
            return self.net_name
        return self._user_network()

    def _user_network(self) -> str | None:
        users = logical_handover.user_networks(self.source.attrs, self.net_name)
        return users[0] if users else None

    def ip(self, name: str) -> str:
        """The container's address on network(): where the other server (a subscription) reaches it."""
        return self._address(name, self.network())

    def _address(self, name: str, net: str | None) -> str:
        networks = self._attrs(name)["NetworkSettings"].get("Networks") or {}
        address = (networks.get(net) or {}).get("IPAddress") if net else None
        address = address or next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
        if not address:
            raise PgleapError(f"container {name} has no network address", "is it running?")
        return address

    def server(self, name: str, label: str) -> Server:
        """pgleap's own connection, from the host: the address on the user's network where the container
        has one (NAME-pgleap-net goes when a copy is discarded; the old server's address must not)."""
        address = self._address(name, self._user_network())
        return Server(address, 5432, self.source.superuser, self.source.password, label=label)

    def describe(self) -> dict:
        return {"container": self.name, "volume": self.source.volume.source, "image": self.source.image}

    def command(self, verb: str) -> str:
        return f"pgleap {verb} docker -c {self.name}"

    def target_major(self, image: str) -> int:
        return self.rt.probe_image(image).major

    def next_running(self) -> bool:
        if not self.rt.exists(self.next_name):
            return False
        return self.rt.docker.containers.get(self.next_name).status == "running"

    def restart_next(self) -> None:
        self.rt.docker.containers.get(self.next_name).restart(timeout=60)
        self.rt.wait_accepting(self.next_name, self.source.superuser, self.source.password)

    def start_stopped(self) -> bool:
        """A recorded run goes on (resume, rollback): NAME found stopped (killed, host reboot without a
        restart policy) is started again, so the steps that read it can. Returns whether it was."""
        if not self.rt.exists(self.name) or self.rt.docker.containers.get(self.name).status == "running":
            return False
        logger.warning("container %s was stopped; starting it to go on with the recorded run", self.name)
        self.rt.start(self.name)
        self.rt.wait_accepting(self.name, self.source.superuser, self.source.password, timeout=180)
        return True

    # ---- the old server ------------------------------------------------------------------------

    def restart_old(self) -> None:
        """A restart of the old server (wal_level): the container's own restart, then ready again."""
        self.rt.docker.containers.get(self.name).restart(timeout=60)
        self.rt.wait_accepting(self.name, self.source.superuser, self.source.password)

    # ---- the new cluster beside the old one ----------------------------------------------------

    def _layout(self, image: str):
        return docker_layout(self.rt, self.source.image, image, self.source.pgdata, self.source.mount)

    def start_next(self, image: str) -> Server:
        """The new cluster on a new volume, initialised by the image's own entrypoint from the user's
        environment (the same superuser, password and database as the old one got), as the user's
        container: without a published port on the user's networks, with on NAME-pgleap-net only."""
        if not self.rt.exists(self.next_name):
            if not _volume_exists(self.rt, self.next_volume):
                self.rt.docker.volumes.create(self.next_volume, labels={LABEL: "logical-next"})
            net = None
            if not self.by_rename:
                net = self.net_name
                logical_handover.ensure_network(self.rt, net, self.name)
            logical_names.create_as_user(
                self.rt, self.source, image, self._layout(image), self.next_name, self.next_volume, net
            )
        self.rt.start(self.next_name)
        self.rt.wait_accepting(self.next_name, self.source.superuser, self.source.password, timeout=180)
        return self.server(self.next_name, "new server")

    def copy_schema(self, image: str, old_host: str, new_host: str, databases: list[str]) -> None:
        """Roles, then each database's schema, with the NEW image's pg_dumpall/pg_dump/psql."""
        env = {
            "PGLEAP_OLD_HOST": old_host,
            "PGLEAP_NEW_HOST": new_host,
            "PGLEAP_DATABASES": "\n".join(databases),
            "PGUSER": self.source.superuser,
        }
        if self.source.password:
            env["PGPASSWORD"] = self.source.password  # in the API call's environment, never on a command line
        status, _out, err = self.rt.run_to_exit(
            image, separate_stderr=True, entrypoint=["bash", f"{SCRIPTS}/logical-schema.sh"], command=[],
            environment=env, network=self.network(), user="postgres",
            mounts=[Mount(target=SCRIPTS, source=self.rt.scripts_dir, type="bind", read_only=True)],
            labels={LABEL: "logical-schema"}, name=f"pgleap-logical-schema-{uuid.uuid4().hex[:8]}",
        )  # fmt: skip
        if status != 0:
            tail = "\n".join(err.strip().splitlines()[-15:])
            raise PgleapError(
                "copying the schema to the new server failed (the old server keeps serving)",
                f"its log ends with:\n{tail}\nfix the cause, then `pgleap rollback docker` and try again",
            )

    # ---- the hand-over -------------------------------------------------------------------------

    def prepare_hand_over(self, image: str) -> None:
        """Nothing to make ahead: NAME-pgleap-next has the user's settings from its start. A green
        container an earlier version left is removed."""
        self.rt.remove(self.green_name)

    def hand_over(self, image: str) -> None:
        """NAME becomes the new cluster without a restart (logical_handover.py); the old container is
        stopped and kept as NAME-pgleap-old. An interrupted hand-over is finished."""
        logical_handover.hand_over(self)

    def after_hand_over(self) -> None:
        """After the pause: the new NAME and the old container leave NAME-pgleap-net (rollback and
        finalize remove it anyway: a failure here is only logged)."""
        if self.by_rename:
            return
        try:
            logical_handover.leave_network(self.rt, self.net_name, [self.name, self.old_name])
        except DockerException as error:
            logger.warning(
                "leaving %s after the switch: %s (finalize or rollback removes it)", self.net_name, error
            )

    def start_blue(self) -> Server:
        """The old cluster again on its own image and volume, without the user's ports, so that it
        can take the reverse subscription."""
        if not self.rt.exists(self.blue_name):
            env = {
                k: v for k, v in (i.partition("=")[::2] for i in self.source.attrs["Config"].get("Env") or [])
            }
            container = self.rt.docker.containers.create(
                self.source.image, name=self.blue_name, environment=env, detach=True,
                mounts=[self.source.volume.mount(self.source.mount)], labels={LABEL: "logical-blue"},
                network=self.network(),
            )  # fmt: skip
            container.start()
        else:
            self.rt.start(self.blue_name)
        self.rt.wait_accepting(self.blue_name, self.source.superuser, self.source.password)
        return self.server(self.blue_name, "old server")

    def hand_back(self) -> None:
        """Rollback: NAME is the user's original container again; the new one is kept as NAME-pgleap-next,
        stopped, off the user's networks and aliases (a later start of it takes neither)."""
        self.rt.remove(self.green_name)  # an earlier version's
        if self.rt.exists(self.blue_name):
            self.rt.stop_container(self.blue_name)
            self.rt.remove(self.blue_name)
        if self.rt.exists(self.old_name):
            if self.rt.exists(self.name):
                self.rt.stop_container(self.name)
                self.rt.remove(self.next_name)
                self.rt.rename(self.name, self.next_name)
                if self.by_rename:  # stopped; no alias if restarted
                    logical_names.set_aliases(self.rt, self.next_name, {})
                else:  # stopped; no port either: on NAME-pgleap-net only
                    logical_handover.leave_user_networks(
                        self.rt, self.next_name, self.source.attrs, self.net_name
                    )
            self.rt.rename(self.old_name, self.name)
        self.rt.start(self.name)
        self.rt.wait_accepting(self.name, self.source.superuser, self.source.password)

    # ---- streaming standbys of the old primary (toolkit/docker/replicas.py, as for in-place) ----------
    # Found at preflight, re-seeded from the new NAME after the switch, their old data kept aside on
    # their own volume until finalize and put back by rollback.

    @property
    def standby_scratch(self) -> str:
        return f"pgleap-standby-{self.source.volume.key}"

    def find_standbys(self) -> list[str]:
        """Containers streaming from the old primary (not pgleap's own: the copy, the old cluster)."""
        found = replicas.find_replicas(self.rt, self.server(self.name, "old server"))
        ours = {self.next_name, self.blue_name}
        return [
            n for n in found if n not in ours and LABEL not in (self.rt.docker.containers.get(n).labels or {})
        ]

    def _standby_plan(self, name: str, image: str):
        holder = f"{name}-pgleap-old" if self.rt.exists(f"{name}-pgleap-old") else name
        src = self.rt.source_container(holder)
        data = self.rt.probe_data(src.image, src.volume, rel_to_mount(src.pgdata, src.mount))
        uid, gid = data.owner_uid or 999, data.owner_gid or 999
        return replicas.bare_plan(self.rt, src, image, superuser=self.source.superuser, uid=uid, gid=gid)

    def _carry_replication_hba(self) -> None:
        """The new cluster was made by the image's initdb: the old primary's `host replication` lines
        go into its pg_hba.conf (once), so that the standbys may stream from it."""
        if not self._running(self.blue_name):
            self.start_blue()
        grep = [
            "bash",
            "-c",
            'grep -E "^[[:space:]]*host[a-z]*[[:space:]]+replication" "$PGDATA/pg_hba.conf" || true',
        ]
        wanted = self.rt.exec_in(self.blue_name, grep, user="postgres").splitlines()
        have = self.rt.exec_in(self.name, grep, user="postgres").splitlines()
        missing = [line for line in wanted if line.strip() and line not in have]
        if missing:
            append = ["bash", "-c", 'printf "%s\\n" "$PGLEAP_LINES" >> "$PGDATA/pg_hba.conf"']
            self.rt.exec_in(self.name, append, user="postgres", env={"PGLEAP_LINES": "\n".join(missing)})
            self.server(self.name, "new server").query("postgres", "SELECT pg_reload_conf()")

    def _running(self, name: str) -> bool:
        return self.rt.exists(name) and self.rt.docker.containers.get(name).status == "running"

    def reseed_standby(self, name: str, image: str) -> dict:
        """pg_basebackup of the new NAME onto the standby's volume; the standby on the new image."""
        self._carry_replication_hba()
        self.rt.ensure_scratch(self.standby_scratch)
        return replicas.reseed(
            self.rt, self._standby_plan(name, image), primary_name=self.name,
            primary=self.server(self.name, "new server"), replica_name=name, scratch=self.standby_scratch,
        )  # fmt: skip

    def restore_standby(self, name: str, image: str) -> None:
        """Rollback: the standby's old container and data back (it follows the old primary again)."""
        self.rt.ensure_scratch(self.standby_scratch)
        replicas.restore(self.rt, self._standby_plan(name, image), name, self.standby_scratch)
        self.rt.start(name)  # rollback returns once it accepts (reads, in recovery): as it left it
        self.rt.wait_accepting(name, self.source.superuser, self.source.password, timeout=180)

    def finalize_standby(self, name: str, image: str) -> None:
        replicas.finalize(self.rt, self._standby_plan(name, image), name, self.standby_scratch)

    def remove_standby_scratch(self) -> None:
        self.rt.remove_volume(self.standby_scratch)

    def remove_next(self) -> None:
        self.rt.remove(self.green_name)
        self.rt.remove(self.next_name)
        self.rt.remove_volume(self.next_volume)
        self._remove_network()

    def remove_old(self) -> None:
        """Finalize: the old cluster's containers and volume go."""
        for name in (self.blue_name, self.old_name):
            self.rt.remove(name)
        self.rt.remove_volume(self.source.volume.source)
        self._remove_network()

    def _remove_network(self) -> None:
        names = [self.name, self.old_name, self.next_name, self.blue_name]
        logical_handover.remove_network(self.rt, self.net_name, names)


def _volume_exists(rt: DockerRuntime, name: str) -> bool:
    try:
        rt.docker.volumes.get(name)
        return True
    except NotFound:
        return False
