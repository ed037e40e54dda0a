"""Where PGDATA lives inside the data volume, before and after the upgrade (pure).

One `Layout` for both runtimes: the old and the new cluster's PGDATA, each with the path the
volume is mounted at, and (Kubernetes only) the volume's subPath, the same before and after.
The scripts (upgrade.sh, the Job) need PGDATA as a path *inside the volume*: `old_rel`/`new_rel`.

Where the new cluster goes follows one rule for both runtimes (`keeps_pgdata`): a PGDATA the
user chose stays where it is, on the same volume and mount, so the path their backups,
monitoring and runbooks name keeps meaning the same data; a PGDATA left at the old image's
default follows the new image's default (the official images moved it in 18 to
`/var/lib/postgresql/18/docker` under a volume at `/var/lib/postgresql`, and their 18+
entrypoint refuses to start with data only at the old default path; a PGDATA set explicitly
elsewhere it accepts). The runtimes learn the new default differently:
- `new_layout` (Docker) reads the target image's own PGDATA and VOLUMEs;
- `compute_layout` (Kubernetes) knows only the image's family: an official 18+ target gets the
  new mount, every other target keeps the mount and PGDATA it had.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Literal

from toolkit.errors import Refused

ImageKind = Literal["official", "bitnami", "kartoza", "unknown"]

OFFICIAL_VOLUME_18 = "/var/lib/postgresql"


@dataclass(frozen=True)
class Layout:
    """PGDATA of the old and the new cluster, the mount of the volume for each, and its subPath."""

    old_mount: str
    old_pgdata: str
    new_mount: str
    new_pgdata: str
    sub_path: str = ""  # the volume's subPath (Kubernetes), kept by the new StatefulSet; "" for none

    @property
    def old_rel(self) -> str:
        """Old PGDATA inside the volume ("" for the volume root), or a refusal."""
        return _join(self.sub_path, rel_to_mount(self.old_pgdata, self.old_mount))

    @property
    def new_rel(self) -> str:
        return _join(self.sub_path, rel_to_mount(self.new_pgdata, self.new_mount))

    @property
    def changes_mount(self) -> bool:
        """True when the new StatefulSet needs a different mount or PGDATA."""
        return self.new_rel != self.old_rel

    # The Kubernetes names (toolkit/kube/render.py): the new StatefulSet's volumeMount.
    @property
    def new_mount_path(self) -> str:
        return self.new_mount

    @property
    def new_sub_path(self) -> str:
        return self.sub_path

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, mount_path: str = "") -> Layout:
        """From a stored plan; also the Kubernetes shape before the merge (old_rel, new_rel,
        new_mount_path, new_sub_path, new_pgdata), so a run recorded by an older pgleap resumes."""
        if "old_mount" in data:
            return cls(**data)
        sub = data["new_sub_path"]
        under = data["old_rel"] if not sub else posixpath.relpath(data["old_rel"] or ".", sub)
        old_pgdata = posixpath.normpath(posixpath.join(mount_path, "" if under == "." else under))
        return cls(mount_path, old_pgdata, data["new_mount_path"], data["new_pgdata"], sub)


def _join(sub: str, rel: str) -> str:
    return posixpath.join(sub, rel) if sub and rel else sub or rel


def rel_to_mount(path: str, mount: str) -> str:
    """PGDATA `path` relative to the volume mounted at `mount` ("" for the volume root), or a refusal."""
    rel = posixpath.relpath(posixpath.normpath(path), posixpath.normpath(mount))
    if rel.startswith(".."):
        raise Refused(
            f"PGDATA {path} is not on the volume mounted at {mount}",
            "give the volume that holds PGDATA (or set PGDATA to a path inside it)",
        )
    return "" if rel == "." else rel


def keeps_pgdata(pgdata: str, old_default: str | None) -> bool:
    """The one placement rule: a PGDATA other than the old image's default was chosen by the
    user and stays; the default follows the new image's default (see the module docstring)."""
    return old_default is None or posixpath.normpath(pgdata) != posixpath.normpath(old_default)


def new_layout(
    old_mount: str, old_pgdata: str, old_image_pgdata: str, target_pgdata: str, target_volumes: list[str]
) -> Layout:
    """Docker: the new cluster goes where the NEW image expects it, unless the user chose PGDATA.

    A user who kept the old image's default PGDATA gets the new image's default
    (PG 18 images: /var/lib/postgresql/18/docker under a volume at /var/lib/postgresql);
    a user who set their own PGDATA keeps it.
    """
    if keeps_pgdata(old_pgdata, old_image_pgdata) or not target_pgdata:
        return Layout(old_mount, old_pgdata, old_mount, old_pgdata)
    mount = next(
        (v for v in sorted(target_volumes, key=len) if posixpath.commonpath([v, target_pgdata]) == v),
        old_mount,
    )
    if posixpath.commonpath([mount, target_pgdata]) != mount:
        mount = old_mount
    # The volume keeps its mount when the new image expects the same PGDATA.
    if posixpath.normpath(target_pgdata) == posixpath.normpath(old_pgdata):
        mount = old_mount
    return Layout(old_mount, old_pgdata, mount, target_pgdata)


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
    return _join(sub, under)


def compute_layout(
    mount_path: str,
    sub_path: str | None,
    pgdata: str,
    target_major: int,
    image_kind: ImageKind,
    *,
    old_default: str | None,
) -> Layout:
    """Kubernetes: old and new PGDATA, and the mount and PGDATA of the new StatefulSet.

    `old_default` is the old image's default PGDATA (`default_pgdata`; None when unknown: kept)."""
    sub = _norm_sub(sub_path)
    rel_in_volume(mount_path, sub, pgdata)  # ValueError when PGDATA is off the volume
    mount, data = _norm(mount_path), _norm(pgdata)
    if image_kind == "official" and target_major >= 18 and not keeps_pgdata(data, old_default):
        return Layout(mount, data, OFFICIAL_VOLUME_18, f"{OFFICIAL_VOLUME_18}/{target_major}/docker", sub)
    return Layout(mount, data, mount, data, sub)
