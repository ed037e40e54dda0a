"""Where PGDATA lives inside the data volume, before and after the upgrade (pure).

The upgrade Job mounts the whole volume (no subPath) at one place, so the
scripts need PGDATA as a path *inside the volume*: the StatefulSet's subPath
joined with PGDATA's place under the mount. The official images moved PGDATA in
18 (`/var/lib/postgresql/18/docker`, volume at `/var/lib/postgresql`) and the 18
image refuses to start on the old `/data` layout, so an 18+ target gets the new
mount; every other target keeps the mount and PGDATA it had.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Literal

ImageKind = Literal["official", "bitnami", "kartoza", "unknown"]

OFFICIAL_VOLUME_18 = "/var/lib/postgresql"


@dataclass(frozen=True)
class Layout:
    """PGDATA inside the volume for the old and the new cluster, and the new mount."""

    old_rel: str  # "" means PGDATA is the volume root
    new_rel: str
    new_mount_path: str
    new_sub_path: str  # "" means no subPath
    new_pgdata: str

    @property
    def changes_mount(self) -> bool:
        """True when the new StatefulSet needs a different mount or PGDATA."""
        return self.new_rel != self.old_rel


def default_pgdata(image_kind: ImageKind, major: int) -> str | None:
    """PGDATA the image uses when the StatefulSet does not set it (None: unknown image)."""
    if image_kind == "official":
        return "/var/lib/postgresql/data" if major <= 17 else f"/var/lib/postgresql/{major}/docker"
    if image_kind == "bitnami":
        return "/bitnami/postgresql/data"
    if image_kind == "kartoza":
        return "/opt/kartoza/postgis/data"
    return None


def _norm(path: str) -> str:
    """Normalise an absolute path; refuse relative ones (Kubernetes does too)."""
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} is not absolute")
    return posixpath.normpath(path)


def _norm_sub(sub_path: str | None) -> str:
    """Normalise a subPath ("" when absent); refuse ones that climb out of the volume."""
    if not sub_path:
        return ""
    sub = posixpath.normpath(sub_path)
    if sub.startswith("/") or sub == ".." or sub.startswith("../"):
        raise ValueError(f"subPath {sub_path!r} must be relative and stay inside the volume")
    return "" if sub == "." else sub


def rel_in_volume(mount_path: str, sub_path: str | None, pgdata: str) -> str:
    """PGDATA as a path inside the volume; ValueError when PGDATA is not on the volume."""
    mount, data, sub = _norm(mount_path), _norm(pgdata), _norm_sub(sub_path)
    if data != mount and not data.startswith(mount.rstrip("/") + "/"):
        raise ValueError(f"PGDATA {pgdata} is not under the data volume mounted at {mount_path}")
    under = "" if data == mount else posixpath.relpath(data, mount)
    return posixpath.join(sub, under) if sub and under else sub or under


def compute_layout(
    mount_path: str,
    sub_path: str | None,
    pgdata: str,
    target_major: int,
    image_kind: ImageKind,
) -> Layout:
    """Old and new PGDATA inside the volume, plus the mount and PGDATA of the new StatefulSet."""
    sub = _norm_sub(sub_path)
    old_rel = rel_in_volume(mount_path, sub, pgdata)
    if image_kind == "official" and target_major >= 18:
        new_pgdata = f"{OFFICIAL_VOLUME_18}/{target_major}/docker"
        return Layout(
            old_rel=old_rel,
            new_rel=rel_in_volume(OFFICIAL_VOLUME_18, sub, new_pgdata),
            new_mount_path=OFFICIAL_VOLUME_18,
            new_sub_path=sub,
            new_pgdata=new_pgdata,
        )
    return Layout(
        old_rel=old_rel,
        new_rel=old_rel,
        new_mount_path=_norm(mount_path),
        new_sub_path=sub,
        new_pgdata=_norm(pgdata),
    )
