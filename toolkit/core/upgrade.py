"""The runtime-neutral core of one major upgrade, held by both runtimes' plans (pure).

Docker's `UpgradePlan` (core/plan.py) and Kubernetes' `KubePlan` (kube/plan.py) decide the
same things about the upgrade itself: the two images and majors, the pg_upgrade mode, where
the data lies before and after (the layout), who owns it, the collation libraries and the
downtime mode. `MajorUpgrade` is those decisions once, with what follows from them (the
upgrade.sh environment, the collation flags, the rollback note); each runtime's plan adds
only what is its own (containers and volumes, or StatefulSets, claims and snapshots).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from toolkit.core.layout import Layout
from toolkit.core.paths import OLD_ROOT, VOLUME


@dataclass(frozen=True)
class MajorUpgrade:
    """What one upgrade does, whichever runtime carries it out."""

    old_image: str
    new_image: str
    old_major: int
    new_major: int
    mode: str  # link | copy | clone | swap (core.plan.MODES)
    layout: Layout
    uid: int
    gid: int | None
    # The images' glibc and ICU (old, new) as probed; ("", "") when not probed (rebuild all).
    glibc: tuple[str, str] = ("", "")
    icu: tuple[str, str] = ("", "")
    # "verified" (fingerprint before/after in the window) or "minimal" (collect and initdb
    # while the old server serves: only stop, pg_upgrade and the start in the window)
    downtime: str = "verified"

    @property
    def libc_changed(self) -> bool:
        """The glibc versions differ: libc collations (the usual database default) may sort otherwise."""
        return self.glibc[0] != self.glibc[1]

    @property
    def icu_changed(self) -> bool:
        """The old image has ICU and the new one another version (or none)."""
        return bool(self.icu[0]) and self.icu[0] != self.icu[1]

    @property
    def collation_libraries_changed(self) -> bool:
        return self.libc_changed or self.icu_changed

    @property
    def collation_libraries_known(self) -> bool:
        """Both images' glibc were probed (a plan made offline knows neither)."""
        return bool(self.glibc[0] and self.glibc[1])

    @property
    def rollback_note(self) -> str:
        if self.mode == "link":
            return "rollback possible until the new cluster is first started (link mode shares files)"
        if self.mode == "swap":
            return "no rollback once pg_upgrade runs (swap mode moves the old files): have a snapshot"
        return "rollback possible until finalize (the old cluster is left untouched)"

    def upgrade_env(
        self,
        *,
        superuser: str | None = None,
        initdb_args: tuple[str, ...] | None = None,
        max_locks: int | None = None,
        volume: str = VOLUME,
        old_root: str = OLD_ROOT,
    ) -> dict[str, str]:
        """The environment contract of toolkit/container/upgrade.sh, for Docker and Kubernetes alike.

        A key given as None is left out: upgrade.sh then reads the superuser and initdb options
        from the old cluster itself (a Kubernetes plan made without the live read) and keeps
        PostgreSQL's own lock table size.
        """
        env = {
            "PGLEAP_VOLUME": volume,
            "PGLEAP_OLD_ROOT": old_root,
            "PGLEAP_OLD_REL": self.layout.old_rel,
            "PGLEAP_NEW_REL": self.layout.new_rel,
            "PGLEAP_OLD_MAJOR": str(self.old_major),
            "PGLEAP_NEW_MAJOR": str(self.new_major),
            "PGLEAP_MODE": self.mode,
        }
        if superuser is not None:
            env["PGLEAP_SUPERUSER"] = superuser
        if initdb_args is not None:
            env["PGLEAP_INITDB_ARGS"] = " ".join(initdb_args)
        if max_locks is not None:
            env["PGLEAP_MAX_LOCKS"] = str(max_locks)
        return env

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def take(cls, data: dict[str, Any], *, mount_path: str | None = None) -> MajorUpgrade:
        """The core's keys popped out of a flat stored dict (a KubePlan's JSON); keys missing from
        plans stored by older versions (glibc, icu, downtime) take their defaults."""
        own = {f.name: data.pop(f.name) for f in fields(cls) if f.name in data}
        own["layout"] = Layout.from_dict(own["layout"], mount_path=mount_path)
        for key in ("glibc", "icu"):
            if key in own:
                own[key] = tuple(own[key])
        return cls(**own)
