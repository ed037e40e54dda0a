"""The proof of an upgrade: the fingerprint of the user data before, right after pg_upgrade and
after the extension updates, compared; what the operator can do when they differ."""

from __future__ import annotations

from rich.markup import escape

from toolkit.core.plan import UpgradePlan
from toolkit.core.report import Report, plural
from toolkit.db import verify
from toolkit.db.sql import Server
from toolkit.engine.state import RunState
from toolkit.errors import VerificationFailed


def compare_after_upgrade(
    server: Server, plan: UpgradePlan, state: RunState, report: Report, *, accept: bool
) -> None:
    """Right after pg_upgrade, before any extension update: the user data against the old cluster's."""
    with report.phase("fingerprint after", "before extension updates") as ph:
        after = verify.fingerprint(server)
        before = fingerprint_from_dict(state.data["fingerprint_before"])
        comparison = verify.compare(before, after)
        ph.detail = fingerprint_detail(after) + (" — identical" if comparison.identical else " — DIFFERENT")
    report.data["fingerprint"] = {"before": before.to_dict(), "after": after.to_dict()}
    if comparison.identical:
        return
    report.data["differences"] = comparison.differences
    if not accept:
        raise VerificationFailed(
            "the upgraded data differs from the old data: " + "; ".join(comparison.differences[:10]),
            way_forward(plan, "fingerprint"),
        )
    report.say("  [yellow]accepted[/] the differences above (--accept fingerprint)")


def prove(server: Server, plan: UpgradePlan, state: RunState, report: Report, *, accept: bool) -> None:
    """Compare the user data again after the extension updates and trap repairs: what an
    extension update did to stored values shows here, not in the comparison before it."""
    with report.phase("fingerprint after extensions", "against the old cluster, canonical forms") as ph:
        forms: dict[str, int] = {}
        after = verify.fingerprint(server, forms=forms)
        before = fingerprint_from_dict(state.data["fingerprint_before"])
        comparison = verify.compare(before, after, include_extension_tables=False)
        ph.detail = fingerprint_detail(after) + (" — identical" if comparison.identical else " — DIFFERENT")
    report.data["fingerprint_after_extensions"] = {
        "identical": comparison.identical,
        "forms": forms,
        "extension_tables_changed": comparison.extension_differences,
        "differences": comparison.differences,
    }
    for line in comparison.extension_differences:
        report.say(f"  [dim]extension-owned, changed by its update (not user data):[/] {escape(line)}")
    if comparison.identical:
        return
    if not accept:
        raise VerificationFailed(
            "user data reads differently after the extension updates: "
            + "; ".join(comparison.differences[:10]),
            way_forward(plan, "fingerprint"),
        )
    report.say("  [yellow]accepted[/] the differences above (--accept fingerprint)")
    report.data["accepted"] = [*report.data.get("accepted", []), "fingerprint"]


def way_forward(plan: UpgradePlan, check: str) -> str:
    """What the operator can do after a failed check: the database is not open to clients yet."""
    back = (
        "`pgleap rollback` brings the old cluster back"
        if plan.mode in ("copy", "clone")
        else "rollback is no longer possible (link/swap), restore a backup to go back"
    )
    return (
        f"nothing was opened to clients; read the differences, then either {back}, or start the "
        f"upgraded database as it is with `pgleap resume … --accept {check}`"
    )


def fingerprint_detail(fp: verify.Fingerprint) -> str:
    d = fp.to_dict()
    return f"{plural(d['tables'], 'table')}, {plural(d['rows'], 'row')} in {plural(len(d['databases']), 'database')}"


def fingerprint_from_dict(data: dict) -> verify.Fingerprint:
    def tuples(m: dict) -> dict:
        return {db: {k: tuple(v) for k, v in tables.items()} for db, tables in m.items()}

    return verify.Fingerprint(
        tables=tuples(data["tables"]),
        extension_tables=tuples(data["extension_tables"]),
        sequences=tuples(data["sequences"]),
        extensions=data["extensions"],
        roles=[tuple(r) for r in data["roles"]],
    )
