"""Run the preflight checks (toolkit/core/preflight_checks.py) on the old server while it still serves.

Every problem of every check is collected first and raised as ONE refusal (exit 3)
naming the objects and the fixes, so the operator fixes everything in one pass and
nothing was stopped. Warnings (things pg_upgrade does not carry over) go to the report.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import psycopg

from toolkit.core import preflight_checks as pc
from toolkit.core.facts import DataFacts, ImageFacts
from toolkit.core.report import Report
from toolkit.db.sql import Server
from toolkit.errors import PgleapError, Refused

logger = logging.getLogger(__name__)

SHOWN = 10  # objects named per check; the rest are counted

# Test-only: check names (comma-separated) to leave out, so a test can make pg_upgrade itself
# meet a problem preflight would have refused. Unset in every real run.
SKIP_ENV = "PGLEAP_TEST_SKIP_PREFLIGHT"


@dataclass
class Finding:
    """What one check found: its message, fix and the objects ("database: object")."""

    name: str
    message: str
    fix: str
    objects: list[str] = field(default_factory=list)

    def line(self, shown: int = SHOWN) -> str:
        more = len(self.objects) - shown
        names = ", ".join(self.objects[:shown]) + (f" (and {more} more)" if more > 0 else "")
        return f"{self.message}: {names}"


@dataclass
class Outcome:
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)


def run(
    server: Server,
    *,
    old: ImageFacts,
    new: ImageFacts,
    data: DataFacts,
    mount: str,
    report: Report,
    skip: frozenset[str] | None = None,
) -> list[str]:
    """Run every applicable check; raise one Refused listing all problems; return the warnings.

    `mount`: where the data volume is mounted in the old container (tablespaces outside it
    are not moved by pgleap). `skip`: check names to leave out (tests only).
    """
    if skip is None:
        skip = frozenset(n.strip() for n in os.environ.get(SKIP_ENV, "").split(",") if n.strip())
    outcome = inspect(server, old=old, new=new, data=data, mount=mount, skip=skip)
    warnings = [w.line() + f" — {w.fix}" for w in outcome.warnings]
    for w in warnings:
        report.say(f"  [yellow]warning[/]    {w}")
    report.data["preflight_warnings"] = warnings
    if outcome.problems:
        raise refusal(outcome.problems)
    return warnings


def refusal(problems: list[Finding]) -> Refused:
    lines = "\n".join(f"  - {p.line()}" for p in problems)
    fixes = "\n".join(f"  - {p.name}: {p.fix}" for p in problems)  # the name says which problem
    count = sum(len(p.objects) for p in problems)
    return Refused(
        f"preflight found {count} object(s) that would make the upgrade fail; nothing was stopped "
        f"or changed:\n{lines}",
        f"fix them on the running database, then plan again:\n{fixes}",
    )


def inspect(
    server: Server,
    *,
    old: ImageFacts,
    new: ImageFacts,
    data: DataFacts,
    mount: str,
    skip: frozenset[str] = frozenset(),
) -> Outcome:
    checks = [
        c
        for c in pc.applicable(old.major, new.major)
        if c.name not in skip and pc.condition_holds(c.when, data.controldata)
    ]
    found = {c.name: Finding(c.name, c.message, c.fix) for c in checks}
    databases = server.databases()
    for dbname in databases:
        with server.connect(dbname) as conn:
            for check in checks:
                if check.scope == "cluster" and dbname != databases[0]:
                    continue
                prefix = "" if check.scope == "cluster" else f"{dbname}: "
                found[check.name].objects += [prefix + r[0] for r in _query(conn, check.name, check.query)]
    outcome = Outcome()
    for check in checks:
        finding = found[check.name]
        if finding.objects:
            (outcome.warnings if check.severity == "warn" else outcome.problems).append(finding)
    if "libraries" not in skip:
        outcome.problems += _libraries(server, databases, old, new)
    if "tablespaces" not in skip:
        outcome.problems += _tablespaces(server, databases[0], mount)
    return outcome


def _query(conn: psycopg.Connection, name: str, statement: str) -> list[tuple]:
    try:
        return conn.execute(statement).fetchall()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PgleapError(
            f"the preflight check {name!r} could not run: {first}",
            "this is a bug in pgleap's check table; report it with your PostgreSQL version",
        ) from None


def _libraries(server: Server, databases: list[str], old: ImageFacts, new: ImageFacts) -> list[Finding]:
    """Every library the catalogs and preload settings name must load in the OLD image as pgleap
    runs it (its helpers start the image, not the running container, whose files may differ)
    and in the NEW image (pg_upgrade LOADs every C function's library, extension members
    included, before it changes anything; the preload settings are carried over)."""
    users: dict[str, list[str]] = {}  # library reference -> who uses it
    for dbname in databases:
        with server.connect(dbname) as conn:
            for probin, function, extension in _query(conn, "libraries", pc.LIBRARY_REFERENCES):
                who = f"extension {extension} in {dbname}" if extension else f"{dbname}: function {function}"
                if who not in users.setdefault(probin, []):
                    users[probin].append(who)
    with server.connect(databases[0]) as conn:
        for setting, value in _query(conn, "libraries", pc.PRELOAD_SETTINGS):
            for lib in pc.split_setting(value):
                users.setdefault(lib, []).append(f"setting {setting}")
    findings = []
    for side, image in (("old", old), ("new", new)):
        pkglibdir = image.pkglibdir or "pkglibdir"
        verdict = pc.libraries_in_image(users, side, old, new)
        missing = [f"{ref} (used by {_who(users[ref])})" for ref in verdict["missing"]]
        unknown = [f"{ref} (used by {_who(users[ref])})" for ref in verdict["unknown"]]
        if missing:
            findings.append(
                Finding(
                    f"libraries missing from the {side} image",
                    f"libraries missing from the {side} image {image.image} (no such file in {pkglibdir})",
                    f"install the library in the {side} image (build an image FROM {image.image} that adds it) "
                    "or drop the objects that use it; a function created with an absolute path: recreate it "
                    "with AS '$libdir/<name>'",
                    missing,
                )
            )
        if unknown:
            findings.append(
                Finding(
                    f"libraries outside the {side} image's pkglibdir",
                    f"libraries outside the {side} image's pkglibdir {pkglibdir}: pgleap cannot tell "
                    f"whether {image.image} has them",
                    "recreate the functions with AS '$libdir/<name>' and the library in pkglibdir",
                    unknown,
                )
            )
    return findings


def _who(users: list[str]) -> str:
    return ", ".join(users[:3]) + (" …" if len(users) > 3 else "")


def _tablespaces(server: Server, dbname: str, mount: str) -> list[Finding]:
    outside = [
        f"{name} ({location})"
        for name, location in server.query(dbname, pc.TABLESPACES)
        if pc.tablespace_outside(location, mount)
    ]
    if not outside:
        return []
    return [
        Finding(
            "tablespaces outside the data volume",
            f"tablespaces outside the data volume (pgleap moves only the volume mounted at {mount})",
            "move the objects into pg_default (ALTER TABLE … SET TABLESPACE pg_default; ALTER DATABASE … "
            "SET TABLESPACE pg_default) and DROP TABLESPACE, then plan again",
            outside,
        )
    ]
