"""What inspection learned: about an image (probe.sh), a data directory, and a running cluster (SQL).

Pure data + parsers; the runtimes gather the raw text, this module gives it meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def parse_results(text: str) -> list[tuple[str, str]]:
    """`PGLEAP key=value` lines written by the container scripts, in order."""
    pairs = []
    for line in text.splitlines():
        if line.startswith("PGLEAP "):
            key, _, value = line[len("PGLEAP ") :].partition("=")
            pairs.append((key.strip(), value))
    return pairs


@dataclass(frozen=True)
class ImageFacts:
    """What an image offers: its server, libraries and extensions (from probe.sh)."""

    image: str
    major: int
    version: str
    bindir: str
    glibc: str
    icu: str
    extensions: dict[str, str] = field(default_factory=dict)  # name -> default_version
    modules: frozenset[str] = frozenset()  # basenames (no .so) of the *.so files in pkglibdir
    updates: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # ext -> (from, to) edges
    pkglibdir: str = ""  # where $libdir points in this image

    def has_update_path(self, extension: str, installed: str) -> bool:
        """Whether ALTER EXTENSION … UPDATE can go from `installed` to this image's default version."""
        target = self.extensions.get(extension)
        if target is None:
            return False
        if target == installed:
            return True
        edges = self.updates.get(extension, ())
        seen, todo = {installed}, [installed]
        while todo:
            current = todo.pop()
            for src, dst in edges:
                if src == current and dst not in seen:
                    if dst == target:
                        return True
                    seen.add(dst)
                    todo.append(dst)
        return False

    @classmethod
    def from_probe(cls, image: str, text: str) -> ImageFacts:
        values: dict[str, str] = {}
        extensions: dict[str, str] = {}
        modules: set[str] = set()
        updates: dict[str, tuple[tuple[str, str], ...]] = {}
        for key, value in parse_results(text):
            if key.startswith("updates."):
                updates[key.removeprefix("updates.")] = tuple(
                    tuple(edge.split(":", 1)) for edge in value.split() if ":" in edge
                )
            elif key.startswith("extension."):
                extensions[key.removeprefix("extension.")] = value
            elif key.startswith("module."):
                modules.add(key.removeprefix("module."))
            else:
                values[key] = value
        if "major" not in values:
            raise ValueError(f"probe of {image} printed no server version")
        return cls(
            image=image,
            major=int(values["major"]),
            version=values.get("version", ""),
            bindir=values.get("bindir", ""),
            glibc=values.get("glibc", ""),
            icu=values.get("icu", ""),
            extensions=extensions,
            modules=frozenset(modules),
            updates=updates,
            pkglibdir=values.get("pkglibdir", ""),
        )


@dataclass(frozen=True)
class DataFacts:
    """The data directory as found on the volume (probe.sh with PGLEAP_PGDATA)."""

    status: str  # cluster | missing | not-a-cluster
    pg_version: int | None = None
    owner_uid: int | None = None
    owner_gid: int | None = None
    data_kb: int = 0
    free_kb: int = 0
    postmaster_pid: bool = False
    controldata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_probe(cls, text: str) -> DataFacts:
        values: dict[str, str] = {}
        control: dict[str, str] = {}
        for key, value in parse_results(text):
            if key == "controldata":
                name, _, val = value.partition(":")
                control[name.strip()] = val.strip()
            else:
                values[key] = value
        return cls(
            status=values.get("pgdata", "missing"),
            pg_version=int(values["pg_version"]) if values.get("pg_version", "").isdigit() else None,
            owner_uid=int(values["owner_uid"]) if "owner_uid" in values else None,
            owner_gid=int(values["owner_gid"]) if "owner_gid" in values else None,
            data_kb=int(values.get("data_kb") or 0),
            free_kb=int(values.get("free_kb") or 0),
            postmaster_pid=values.get("postmaster_pid") == "present",
            controldata=control,
        )

    @property
    def state(self) -> str:
        return self.controldata.get("Database cluster state", "unknown")

    @property
    def cleanly_shut_down(self) -> bool:
        return self.state == "shut down"

    @property
    def checksums(self) -> bool:
        return self.controldata.get("Data page checksum version", "0") not in ("0", "")

    @property
    def wal_segsize_mb(self) -> int:
        raw = self.controldata.get("Bytes per WAL segment", str(16 * 1024 * 1024))
        return int(raw) // (1024 * 1024)

    @property
    def system_identifier(self) -> str:
        return self.controldata.get("Database system identifier", "")


@dataclass(frozen=True)
class DatabaseFacts:
    name: str
    encoding: str
    collate: str
    ctype: str
    provider: str  # libc | icu | builtin
    icu_locale: str | None
    allow_connections: bool
    is_template: bool
    extensions: dict[str, str] = field(default_factory=dict)
    relations: int = 0  # tables, views, sequences…: what pg_dump locks in one transaction


@dataclass(frozen=True)
class ClusterFacts:
    """What the running old cluster said over SQL."""

    superuser: str  # the role with OID 10: initdb of the new cluster must use it
    server_version: str
    databases: tuple[DatabaseFacts, ...]
    max_connections: int = 100

    def database(self, name: str) -> DatabaseFacts:
        return next(db for db in self.databases if db.name == name)

    @property
    def template1(self) -> DatabaseFacts:
        return self.database("template1")

    def extension_uses(self) -> dict[str, dict[str, str]]:
        """extension -> {database: installed version}."""
        uses: dict[str, dict[str, str]] = {}
        for db in self.databases:
            for ext, version in db.extensions.items():
                uses.setdefault(ext, {})[db.name] = version
        return uses


_VERSION_PART = re.compile(r"\d+|[A-Za-z]+")


def version_key(version: str) -> tuple:
    """Orderable key for extension versions like 3.1.1, 1.2, 3.6.0dev."""
    parts = [(1, int(t), "") if t.isdigit() else (0, 0, t) for t in _VERSION_PART.findall(version)]
    # The end sorts after a pre-release tag (3.6.0dev < 3.6.0) and before more numbers (3.6.0 < 3.6.0.1).
    return (*parts, (0.5, 0, ""))
