"""Facts in, a frozen UpgradePlan out (or a refusal that says what to do). No I/O.

Every refusal here happens before anything is changed, so a refused run leaves
the volume byte-identical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from toolkit.core.facts import ClusterFacts, DataFacts, ImageFacts, version_key
from toolkit.core.layout import Layout
from toolkit.core.paths import OLD_ROOT, VOLUME
from toolkit.core.upgrade import MajorUpgrade
from toolkit.errors import Refused

MODES = ("link", "copy", "clone", "swap")
DOWNTIME_MODES = ("verified", "minimal")  # --downtime, both runtimes

# pg_upgrade of these pairs fails in "Restoring database schemas", and
# `pg_upgrade --check` does not see it (it skips the schema restore).
# (old major, first bad old minor, new major, first good new minor, reason)
KNOWN_BAD_PAIRS = (
    (
        17,
        12,
        18,
        7,
        "PostgreSQL 17.12 stores the column option pg_attver, which 18 before 18.7 rejects",
    ),
)

# Minor releases come out together; minor minus this offset numbers the common
# release (18.0 shipped with 17.6, 16.10, 15.14, 14.19, 13.22).
RELEASE_OFFSET = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6, 18: 0}

POSTGIS_FAMILY = ("postgis", "postgis_raster", "postgis_topology", "postgis_sfcgal", "postgis_tiger_geocoder")


@dataclass(frozen=True)
class ExtensionAction:
    database: str
    extension: str
    installed: str
    target: str
    action: str  # postgis_extensions_upgrade | alter_update | none


PROOF_SECONDS_PER_GB = 20.0  # one canonical fingerprint pass, measured (docs/benchmark.md)


@dataclass(frozen=True)
class UpgradePlan:
    source_image: str
    target_image: str
    old_major: int
    new_major: int
    old_version: str
    new_version: str
    mode: str
    layout: Layout
    superuser: str
    uid: int
    gid: int
    initdb_args: tuple[str, ...]
    checksums: bool
    data_kb: int
    free_kb: int
    extension_actions: tuple[ExtensionAction, ...]
    glibc: tuple[str, str]
    icu: tuple[str, str]
    databases: tuple[str, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)
    max_locks: int = 0  # max_locks_per_transaction for pg_upgrade's servers; 0 = their own setting

    @property
    def core(self) -> MajorUpgrade:
        """The upgrade's runtime-neutral decisions, as Kubernetes' plan holds them: this plan's fields of
        the same names (Docker keeps them flat, as its state file and `-o json` plan list them; its
        --downtime is an option of the run, so the core's stays at its default)."""
        own = self.__dataclass_fields__
        same = {f.name: getattr(self, f.name) for f in fields(MajorUpgrade) if f.name in own}
        return MajorUpgrade(old_image=self.source_image, new_image=self.target_image, **same)

    def estimated_downtime_seconds(self, downtime: str = "verified", *, verify_data: bool = True) -> float:
        """Rough. Always down: stop, pg_upgrade (link/clone/swap grow with file count, copy with bytes
        at about 200 MB/s) and the start. "verified" also keeps the extension updates and checks
        (about 2 s a database) and, with the fingerprint, two passes over the data (about 20 s/GB
        each, docs/benchmark.md) inside the window; "minimal" runs them on the serving database."""
        base = 6.0 + 1.5 * len(self.databases)
        if self.mode == "copy":
            base += self.data_kb / 1024 / 200
        if downtime == "minimal":
            return base
        proof = 2 * PROOF_SECONDS_PER_GB * self.data_kb / 1024**2 if verify_data else 0.0
        return base + 2.0 * len(self.databases) + proof

    def upgrade_env(self, *, volume: str = VOLUME, old_root: str = OLD_ROOT) -> dict[str, str]:
        """upgrade.sh's environment, every action alike: the core's, with what the live read decided."""
        decided = {"superuser": self.superuser, "initdb_args": self.initdb_args, "max_locks": self.max_locks}
        return self.core.upgrade_env(**decided, volume=volume, old_root=old_root)

    def container_env(self, action: str, *, volume: str = VOLUME, old_root: str = OLD_ROOT) -> dict:
        """The environment of upgrade.sh in the new image for one action."""
        return {"PGLEAP_ACTION": action, **self.upgrade_env(volume=volume, old_root=old_root)}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["old_rel"] = self.layout.old_rel
        data["new_rel"] = self.layout.new_rel
        data["collation_libraries_changed"] = self.core.collation_libraries_changed
        data["rollback"] = self.core.rollback_note
        data["estimated_downtime_seconds"] = round(self.estimated_downtime_seconds(), 1)
        return data


def not_postgres(image: str, detail: str) -> Refused:
    """An image whose probe failed or said nothing of a server (both runtimes)."""
    return Refused(
        f"{image} does not look like a PostgreSQL image ({detail})",
        "give a postgres or postgis image with bash (Debian-based, like the official ones)",
    )


def _minor(version: str) -> int | None:
    parts = version.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def check_versions(old: ImageFacts, new: ImageFacts) -> list[str]:
    """Refuse downgrades, same-major runs and pairs known to break; return warnings."""
    if new.major == old.major:
        raise Refused(
            f"source and target both run PostgreSQL {old.major}: nothing to upgrade",
            "a minor update needs no pg_upgrade: just change the image tag",
        )
    if new.major < old.major:
        raise Refused(
            f"target PostgreSQL {new.major} is older than the source {old.major}: downgrades are not possible",
            "pick a target image with a newer major (or restore a dump into the older one)",
        )
    old_minor, new_minor = _minor(old.version), _minor(new.version)
    for o_major, o_minor, n_major, n_minor, reason in KNOWN_BAD_PAIRS:
        if (
            old.major == o_major
            and new.major == n_major
            and old_minor is not None
            and new_minor is not None
            and old_minor >= o_minor
            and new_minor < n_minor
        ):
            raise Refused(
                f"PostgreSQL {old.version} -> {new.version} breaks pg_upgrade: {reason}",
                f"use a target image with PostgreSQL {n_major}.{n_minor} or newer",
            )
    warnings = []
    if (
        old_minor is not None
        and new_minor is not None
        and old.major in RELEASE_OFFSET
        and new.major in RELEASE_OFFSET
        and old_minor - RELEASE_OFFSET[old.major] > new_minor - RELEASE_OFFSET[new.major]
    ):
        warnings.append(
            f"target minor {new.version} is older than source minor {old.version}: catalog changes in the "
            "newer source minor can break the schema restore; rehearse first or use a newer target minor"
        )
    if old.glibc and new.glibc and version_key(old.glibc) > version_key(new.glibc):
        raise Refused(
            f"the target image's glibc {new.glibc} is older than the source image's {old.glibc}: "
            "the old binaries cannot run in it",
            "use a target image built on the same or a newer distribution release",
        )
    return warnings


def check_target_mode(mode: str, new_major: int) -> None:
    """The mode refusals that need only the target's major (both runtimes, before any stop)."""
    if mode not in MODES:
        raise Refused(f"unknown mode {mode!r}", f"choose one of {', '.join(MODES)}")
    if mode == "swap" and new_major < 18:  # pg_upgrade --swap is new in 18
        raise Refused(
            f"--mode swap needs PostgreSQL 18 or newer as target (this one is {new_major})",
            "use --mode link (fast) or --mode copy (keeps the old cluster intact)",
        )


def check_downtime_mode(downtime: str) -> None:
    if downtime not in DOWNTIME_MODES:
        raise Refused(f"unknown downtime mode {downtime!r}", f"choose one of {', '.join(DOWNTIME_MODES)}")


def check_mode(mode: str, new_major: int, data: DataFacts) -> None:
    check_target_mode(mode, new_major)
    if mode == "copy" and data.free_kb and data.data_kb * 1.1 > data.free_kb:
        raise Refused(
            f"copy mode needs about {data.data_kb * 1.1 / 1024:.0f} MiB free on the volume, "
            f"{data.free_kb / 1024:.0f} MiB are free",
            "grow the volume, or use --mode link (needs almost no space)",
        )


def check_data(data: DataFacts, old: ImageFacts) -> None:
    if data.status == "missing":
        raise Refused("the data directory does not exist on the volume", "check the volume and PGDATA")
    if data.status != "cluster":
        raise Refused(
            "PGDATA on the volume is not a PostgreSQL cluster (no PG_VERSION)",
            "point pgleap at the volume and PGDATA the database really uses",
        )
    if data.pg_version != old.major:
        raise Refused(
            f"the data directory holds PostgreSQL {data.pg_version} but the source image runs {old.major}",
            "give the image the cluster was created with as --from",
        )


def extension_actions(cluster: ClusterFacts, new: ImageFacts, warnings: list[str]) -> list[ExtensionAction]:
    """What happens to each installed extension; refuses when the target lacks one or has it older."""
    actions = []
    missing: dict[str, list[str]] = {}
    for db in cluster.databases:
        for ext, installed in sorted(db.extensions.items()):
            if ext == "plpgsql":
                continue
            target = new.extensions.get(ext)
            if target is None:
                missing.setdefault(ext, []).append(db.name)
                continue
            if version_key(target) < version_key(installed):
                raise Refused(
                    f"the target image has {ext} {target}, older than the {installed} installed in {db.name!r}",
                    f"use a target image with {ext} >= {installed}",
                )
            if target == installed:
                action = "none"
            elif not new.has_update_path(ext, installed):
                action = "no_update_path"
            elif ext in POSTGIS_FAMILY:
                action = "postgis_extensions_upgrade"
            else:
                action = "alter_update"
            actions.append(ExtensionAction(db.name, ext, installed, target, action))
    if missing:
        where = "; ".join(f"{ext} (in {', '.join(dbs)})" for ext, dbs in sorted(missing.items()))
        raise Refused(
            f"the target image lacks extensions the cluster uses: {where}",
            "use a target image that ships them (e.g. postgis/postgis rather than postgres)",
        )
    stuck = sorted({(a.extension, a.installed, a.target) for a in actions if a.action == "no_update_path"})
    if any(ext == "postgis" for ext, _, _ in stuck):
        raise Refused(
            "the target image has no update path for the postgis extension from the installed version",
            "use a target image whose PostGIS ships an upgrade script from your version",
        )
    for ext, installed, target in stuck:
        warnings.append(
            f"{ext} {installed} has no update path to {target} in the target image: it stays at {installed} "
            f"(to update it, DROP EXTENSION {ext}; CREATE EXTENSION {ext}; and reload its data)"
        )
    if any(a.extension == "postgis" and a.installed.startswith("2.") for a in actions):
        raise Refused(
            "PostGIS 2.x -> 3.x with pg_upgrade needs a manual step (raster split out)",
            "upgrade PostGIS to 3.x on the old major first (ALTER EXTENSION postgis UPDATE), then run pgleap",
        )
    return actions


def pg_upgrade_locks(cluster: ClusterFacts) -> int:
    """max_locks_per_transaction pg_upgrade's servers need, or 0 when the default (64) is enough.

    pg_dump --binary-upgrade locks every relation of a database in one
    transaction; the shared lock table holds max_locks_per_transaction x
    max_connections (and a little more) locks, so ~6,400 relations with the
    defaults. Beyond that pg_upgrade fails in "Creating dump of database
    schemas" with "out of shared memory": give both servers room (a fifth spare).
    """
    most = max((db.relations for db in cluster.databases), default=0)
    need = -(-most * 6 // (5 * max(cluster.max_connections, 1)))
    return need if need > 64 else 0


def initdb_args(cluster: ClusterFacts, data: DataFacts, new_major: int) -> tuple[str, ...]:
    """Match what pg_upgrade requires and what the old cluster had: encoding, locale, checksums, WAL size."""
    t1 = cluster.template1
    args = [f"--encoding={t1.encoding}"]
    if t1.provider == "icu" and new_major >= 15:
        args += ["--locale-provider=icu", f"--icu-locale={t1.icu_locale}"]
    args += [f"--lc-collate={t1.collate}", f"--lc-ctype={t1.ctype}"]
    if data.checksums:
        args.append("--data-checksums")
    elif new_major >= 18:
        args.append("--no-data-checksums")  # 18 turned checksums on by default
    args.append(f"--wal-segsize={data.wal_segsize_mb}")
    return tuple(args)


def make_plan(
    *,
    old: ImageFacts,
    new: ImageFacts,
    data: DataFacts,
    cluster: ClusterFacts,
    layout: Layout,
    mode: str = "link",
) -> UpgradePlan:
    warnings = check_versions(old, new)
    check_data(data, old)
    check_mode(mode, new.major, data)
    actions = extension_actions(cluster, new, warnings)
    if old.glibc != new.glibc or (old.icu and old.icu != new.icu):
        warnings.append(
            f"collation libraries change (glibc {old.glibc} -> {new.glibc}, ICU {old.icu or '-'} -> "
            f"{new.icu or '-'}): text indexes will be rebuilt"
        )
    return UpgradePlan(
        source_image=old.image,
        target_image=new.image,
        old_major=old.major,
        new_major=new.major,
        old_version=old.version,
        new_version=new.version,
        mode=mode,
        layout=layout,
        superuser=cluster.superuser,
        uid=data.owner_uid if data.owner_uid is not None else 999,
        gid=data.owner_gid if data.owner_gid is not None else 999,
        initdb_args=initdb_args(cluster, data, new.major),
        checksums=data.checksums,
        data_kb=data.data_kb,
        free_kb=data.free_kb,
        extension_actions=tuple(actions),
        glibc=(old.glibc, new.glibc),
        icu=(old.icu, new.icu),
        databases=tuple(db.name for db in cluster.databases if db.allow_connections),
        warnings=tuple(warnings),
        max_locks=pg_upgrade_locks(cluster),
    )
