"""The plan of a blue/green major upgrade over logical replication (`--strategy logical`). Pure.

Facts read from the live old server go in; a frozen plan comes out that says what
will be done, how each kind of object is carried, and what is refused. Nothing is
changed before the refusals are empty (CNPG's "read everything, then decide").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Each subscription holds one slot and one WAL sender on the old server; its initial copy
# runs up to max_sync_workers_per_subscription (default 2) more, each with a temporary slot.
SYNC_WORKERS = 2


@dataclass(frozen=True)
class LogicalFacts:
    """What the old server says about itself (read by toolkit/db/logical.py)."""

    server_major: int
    wal_level: str
    max_replication_slots: int
    max_wal_senders: int
    slots_in_use: int
    senders_in_use: int
    databases: list[str]
    # per database: qualified names
    tables: dict[str, list[str]]  # published: permanent user tables (leaf partitions included)
    no_identity: dict[str, list[str]]  # tables without primary key or usable replica identity
    unlogged: dict[str, list[str]]
    matviews: dict[str, list[str]]
    large_objects: dict[str, int]
    extension_config: dict[str, list[str]]  # extension-owned tables with user rows (topology.layer…)
    # login roles whose password is an md5 hash (PostgreSQL 13's default); pgleap's own superuser excluded
    md5_roles: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Refusal:
    check: str
    message: str
    hint: str


@dataclass(frozen=True)
class LogicalPlan:
    source: str
    target_image: str
    databases: list[str]
    replicated: dict[str, list[str]]  # database -> tables in its publication
    identity_full: dict[str, list[str]]  # tables that get REPLICA IDENTITY FULL (consent given)
    carried: list[dict]  # {"what", "database", "objects", "how"}
    restart_for_wal_level: bool
    verify_in_pause: bool
    refusals: list[Refusal] = field(default_factory=list)
    # streaming standbys of the old primary (Docker): re-seeded from the new primary after the switch
    standbys: list[str] = field(default_factory=list)

    @property
    def subscriptions(self) -> int:
        return sum(1 for tables in self.replicated.values() if tables)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["strategy"] = "logical"
        data["subscriptions"] = self.subscriptions
        return data


def plan_logical(
    facts: LogicalFacts,
    *,
    source: str,
    target_image: str,
    target_major: int,
    restart_for_wal_level: bool = False,
    replica_identity_full: bool = False,
    verify_after: bool = False,
    standbys: list[str] | tuple[str, ...] = (),
) -> LogicalPlan:
    """Decide; every refusal names the objects and the flag or fix that lifts it."""
    refusals = _refusals(facts, target_major=target_major, restart_for_wal_level=restart_for_wal_level)
    identity_full: dict[str, list[str]] = {}
    missing = {db: names for db, names in facts.no_identity.items() if names}
    if missing and not replica_identity_full:
        listed = "; ".join(f"{db}: {', '.join(names)}" for db, names in sorted(missing.items()))
        refusals.append(
            Refusal(
                "replica_identity",
                f"tables without a primary key or replica identity cannot replicate UPDATE/DELETE: {listed}",
                "add a primary key, or give --replica-identity-full (pgleap sets REPLICA IDENTITY FULL on "
                "them: each update then logs the whole old row)",
            )
        )
    elif missing:
        identity_full = missing
    if facts.md5_roles:
        refusals.append(
            Refusal(
                "md5_passwords",
                "these login roles have md5 password hashes, which the new image's pg_hba.conf "
                f"(scram-sha-256) does not accept: {', '.join(facts.md5_roles)}",
                "on the old server, for each role: SET password_encryption = 'scram-sha-256'; "
                "ALTER ROLE name PASSWORD '...'; (its current password works; the old server accepts both)",
            )
        )
    carried = _carried(facts, standbys)
    return LogicalPlan(
        source=source,
        target_image=target_image,
        databases=list(facts.databases),
        replicated={db: list(t) for db, t in facts.tables.items() if t},
        identity_full=identity_full,
        carried=carried,
        restart_for_wal_level=facts.wal_level != "logical",
        verify_in_pause=not verify_after,
        refusals=refusals,
        standbys=list(standbys),
    )


def _refusals(facts: LogicalFacts, *, target_major: int, restart_for_wal_level: bool) -> list[Refusal]:
    """The server-wide refusals: a target that is not newer, wal_level, replication slots and senders."""
    refusals: list[Refusal] = []
    if target_major <= facts.server_major:
        refusals.append(
            Refusal(
                "major",
                f"the target image runs PostgreSQL {target_major}, not newer than {facts.server_major}",
                "give a newer major with --to",
            )
        )
    if facts.wal_level != "logical" and not restart_for_wal_level:
        refusals.append(
            Refusal(
                "wal_level",
                f"wal_level is {facts.wal_level!r} on the old server; logical replication needs 'logical'",
                "add --restart-for-wal-level (pgleap sets it and restarts the old server once, a few seconds "
                "of downtime), or set wal_level = logical yourself and restart",
            )
        )
    subscriptions = sum(1 for tables in facts.tables.values() if tables)
    need = subscriptions + SYNC_WORKERS
    free_slots = facts.max_replication_slots - facts.slots_in_use
    free_senders = facts.max_wal_senders - facts.senders_in_use
    if free_slots < need or free_senders < need:
        refusals.append(
            Refusal(
                "slots",
                f"{subscriptions} subscription(s) need {need} free replication slots and WAL senders on the old "
                f"server; {free_slots} slots and {free_senders} senders are free",
                f"raise max_replication_slots and max_wal_senders to at least {need + facts.slots_in_use} and "
                "restart the old server",
            )
        )
    return refusals


def _carried(facts: LogicalFacts, standbys: list[str] | tuple[str, ...]) -> list[dict]:
    """What is carried how, per database: the plan's table of objects and their way to the new side."""
    carried: list[dict] = []
    for db in facts.databases:
        if facts.tables.get(db):
            carried.append(
                {"what": "tables", "database": db, "objects": facts.tables[db],
                 "how": "initial copy, then logical replication until the switch"}
            )  # fmt: skip
        if facts.unlogged.get(db):
            carried.append(
                {"what": "unlogged tables", "database": db, "objects": facts.unlogged[db],
                 "how": "copied during the write pause (not replicated)"}
            )  # fmt: skip
        if facts.matviews.get(db):
            carried.append(
                {"what": "materialized views", "database": db, "objects": facts.matviews[db],
                 "how": "refreshed on the new server during the write pause"}
            )  # fmt: skip
        if facts.large_objects.get(db):
            carried.append(
                {"what": "large objects", "database": db, "objects": [f"{facts.large_objects[db]} object(s)"],
                 "how": "copied during the write pause (lo_get/lo_from_bytea with their owner; not replicated)"}
            )  # fmt: skip
        if facts.extension_config.get(db):
            carried.append(
                {"what": "extension-owned tables", "database": db, "objects": facts.extension_config[db],
                 "how": "user rows copied once before replication starts; not published (the new extension "
                        "creates its own rows, e.g. spatial_ref_sys)"}
            )  # fmt: skip
    if standbys:
        carried.append(
            {"what": "standbys", "database": "*", "objects": list(standbys),
             "how": "re-seeded from the new primary after the switch (pg_basebackup onto their own volume, "
                    "new image); Docker: their reads stop until then, the old data stays aside until finalize; "
                    "Kubernetes: as NAME-next's ordinals, the old standbys serve until finalize"}
        )  # fmt: skip
    carried.append(
        {
            "what": "sequences",
            "database": "*",
            "objects": [],
            "how": "set from the old server during the write pause",
        }
    )
    carried.append(
        {
            "what": "roles",
            "database": "*",
            "objects": [],
            "how": "copied with their password hashes before the schema",
        }
    )
    return carried
