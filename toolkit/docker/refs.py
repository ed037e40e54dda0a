"""Names pgleap's Docker side shares: the in-container paths, the labels, references to the
user's volume and container, the container scripts' copy on the host."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cache

from toolkit.docker.client import Mount
from toolkit.resources import container_script

REHEARSE_HINT = (
    "fix the object named above on the old database; `pgleap rehearse` runs pg_upgrade on a copy "
    "while production keeps serving and finds such failures before the stop"
)

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


def _is_under(path: str, parent: str) -> bool:
    path, parent = os.path.normpath(path), os.path.normpath(parent)
    return path == parent or path.startswith(parent.rstrip("/") + "/")
