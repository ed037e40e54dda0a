"""What a runtime gives the engine for one database: the complete Target protocol.

The engine (runner, minimal, undo) calls only what is declared here, never probes with
`getattr`: a runtime that lacks a capability says so through a method (`running_users`
returns [], `find_replicas` returns [], `supports_minimal_downtime` returns False).
toolkit/docker/target.py implements it; tests/test_engine_phases.py has a fake that records
every call, so the phase logic is tested without Docker. A new runtime implements this class.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from toolkit.core.facts import DataFacts, ImageFacts
from toolkit.core.layout import Layout
from toolkit.core.plan import UpgradePlan
from toolkit.db.sql import Server


class Target(Protocol):
    """One database of a runtime (a Docker container or bare volume)."""

    key: str  # names the run's state file and lock
    source_image: str

    # Inspect (nothing changes)
    def probe_image(self, image: str) -> ImageFacts: ...
    def probe_data(self) -> DataFacts: ...
    def layout(self, target_image: str) -> Layout: ...
    def live_server(self) -> Server | None: ...  # the serving old cluster, None when stopped
    def running_users(self) -> list[str]: ...  # others serving the data (refused), [] when none
    def check_writable(self, data: DataFacts) -> None: ...  # raises Refused before any change
    def old_server(
        self, old: ImageFacts, data: DataFacts, superuser: str
    ) -> AbstractContextManager[Server]: ...
    def describe(self) -> dict: ...  # recorded in the state, to find the target again on resume
    def command(self, verb: str) -> str: ...  # e.g. "pgleap resume docker --container db"
    def volume_path(self, path: str) -> str: ...  # a path upgrade.sh printed, as the user finds it
    def stopped_by_run(self) -> bool: ...  # the run stopped the database and it does not serve now
    def supports_minimal_downtime(self) -> bool: ...  # can restart the database on the new image early

    # Act (each checks before it acts: safe to run twice)
    def reap_leftovers(self) -> list[str]: ...  # helpers a killed run left running; their names
    def collect(self, plan: UpgradePlan) -> None: ...
    def run_action(self, plan: UpgradePlan, action: str, *, check: bool = True) -> str: ...  # upgrade.sh
    def stop_source(self) -> None: ...
    def start_source(self) -> None: ...
    def new_server(self, plan: UpgradePlan, bindir: str) -> AbstractContextManager[Server]: ...
    def analyze(self, server: Server, plan: UpgradePlan) -> str: ...
    def precreate_new(self, plan: UpgradePlan) -> None: ...  # --downtime minimal, before the stop
    def start_new(self, plan: UpgradePlan) -> None: ...
    def serving_server(self, plan: UpgradePlan) -> Server | None: ...  # the new cluster, serving
    def analyze_serving(self, plan: UpgradePlan) -> str: ...
    def stop_new(self, plan: UpgradePlan) -> None: ...  # the way back: new container gone, old one named
    def restore_source(self, plan: UpgradePlan) -> str: ...  # upgrade.sh rollback's output
    def cleanup_scratch(self) -> None: ...
    def cleanup(self, plan: UpgradePlan) -> None: ...

    # Standbys streaming from the database (none for a runtime without them)
    def find_replicas(self) -> list[str]: ...
    def reseed_replica(self, plan: UpgradePlan, name: str) -> dict: ...
    def restore_replica(self, plan: UpgradePlan, name: str) -> None: ...
    def finalize_replica(self, plan: UpgradePlan, name: str) -> None: ...
