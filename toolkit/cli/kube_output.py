"""What the Kubernetes commands print: data on stdout (`-o json|yaml`, or text), progress and
container logs on stderr, the plan's lines for the standbys."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml
from rich.markup import escape
from rich.table import Table

from toolkit.core.report import console, print_findings, print_verdict
from toolkit.kube import render_doc
from toolkit.kube.plan import KubePlan, read_availability
from toolkit.kube.replica_plan import ReplicaPlan

err = console(stderr=True)


def log_progress(message: str) -> None:
    """Progress and container logs on stderr, printed as they are (no rich markup in log lines)."""
    err.print(message, style="dim", markup=False, highlight=False)


def print_data(data: Any, output: str, text: Callable[[], None]) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, default=str))
    elif output == "yaml":
        if isinstance(data, list):
            print(render_doc.to_yaml(data), end="")
        else:
            print(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False), end="")
    else:
        text()


def outcome_text(outcome: dict[str, Any]) -> None:
    out = console(stderr=False)
    out.print(f"[bold]{escape(outcome['operation'])}[/]: phase [bold]{escape(str(outcome['phase']))}[/]")
    for line in outcome["changed"]:
        out.print(f"  [green]changed[/]  {escape(line)}")
    for line in outcome["unchanged"]:
        out.print(f"  [dim]ok[/]       {escape(line)}")
    for line in outcome["notes"]:
        out.print(f"  [yellow]note[/]     {escape(line)}")
    if outcome.get("operation") in ("upgrade", "rollback"):
        possible = outcome.get("rollback_possible")
        said = {True: "still possible", False: "no longer possible"}.get(possible, "decided by its check")
        out.print(f"  rollback {said}", markup=False, highlight=False)


def rehearsal_text(result: dict[str, Any]) -> None:
    out = console(stderr=False)
    out.print(
        f"rehearsal of {result['source']} → {result['target_image']} (clone: {result['clone']})", markup=False
    )
    table = Table("phase", "seconds", "down in a real run", "detail")
    for p in result["phases"]:
        table.add_row(p["name"], f"{p['seconds']:.1f}", "yes" if p["in_downtime"] else "", p["detail"])
    out.print(table)
    print_findings(out, result)
    for hint in result.get("real_run_needs", []):
        out.print(f"  [yellow]before the real run[/]: {escape(hint)}")
    if result.get("predicted_downtime_seconds") is not None:
        out.print(f"predicted downtime of the real run: [bold]{result['predicted_downtime_seconds']} s[/]")
        out.print(f"  ({result['predicted_downtime_basis']})", markup=False)
    if result.get("kept"):
        k = result["kept"]
        out.print(
            f"upgraded clone kept: StatefulSet {k['statefulset']}, Service {k['service']}", markup=False
        )
        out.print(f"  connect: {k['connect']}", markup=False)
        out.print(f"  remove it with: {k['remove']}", markup=False)
    print_verdict(out, result)


# Why the pg_upgrade docs' rsync --hard-links method for standbys is not offered.
NO_RSYNC = (
    "standbys are re-seeded with pg_basebackup from the upgraded primary; the rsync --hard-links "
    "method of the pg_upgrade docs is not offered: it needs the primary's old and new data directories "
    "and the standby's on hosts rsync can reach, while each standby here keeps its data on its own "
    "ReadWriteOnce PVC, usually attached on another node and not mountable from the primary's node"
)


def replica_lines(plan: KubePlan) -> list[str]:
    """What happens to each standby, and when reads are unavailable (plan output)."""
    rp = plan.replicas
    if rp is None:
        return []
    lines = _standby_lines(plan, rp)
    windows = read_availability(plan)
    return [*lines, _reads_line(rp, windows), *_window_lines(windows), NO_RSYNC]


def _standby_lines(plan: KubePlan, rp: ReplicaPlan) -> list[str]:
    """Which standbys there are, how they are re-seeded, and what runs while the primary upgrades."""
    where = (
        f"ordinals 1..{rp.count - 1} of {plan.sts}"
        if rp.topology == "ordinals"
        else f"read StatefulSet {rp.sts} ({rp.count} replicas)"
    )
    return [
        f"standbys: {where}; re-seeded from {rp.primary_host} as {rp.replication_user}"
        + (
            f" (password: Secret {rp.password_secret['name']} key {rp.password_secret['key']})"
            if rp.password_secret
            else " (no password Secret)"
        ),
        (
            f"the new {plan.sts} starts with ordinal 0 alone; it is scaled back to {rp.count} once the standbys "
            "are re-seeded"
            if rp.topology == "ordinals"
            else f"{rp.sts} is "
            + (
                "left running on the old major (--keep-readers)"
                if rp.keep_readers
                else "scaled to 0 together with the primary"
            )
            + f"; it comes back on {plan.core.new_image} with {rp.count} replicas after the primary is upgraded and "
            "verified"
        ),
    ]


def _reads_line(rp: ReplicaPlan, windows: list[dict[str, Any]]) -> str:
    """How long reads on the standbys are stale or unavailable, bounded by the slowest re-seed."""
    slowest = max((w["reseed_estimate_seconds"] or 0 for w in windows), default=0)
    reseed = f"the slowest re-seed (~{max(1, round(slowest / 60))} min at 100 MiB/s, an upper bound)"
    return (
        "reads on the standbys: STALE (old major) while the primary is down (stop → upgraded → verified), "
        f"then unavailable for {reseed} plus their start"
        if rp.keep_readers
        else "reads on the standbys: unavailable for the primary's own downtime (stop → upgraded → verified) "
        f"plus {reseed} plus their start"
    ) + (
        "; Services that select every ordinal route to the primary alone until the standbys are back"
        if rp.topology == "ordinals"
        else ""
    )


def _window_lines(windows: list[dict[str, Any]]) -> list[str]:
    """Each standby pod's own window: its PVC, node, re-seed size, stale reads and Services."""
    lines = []
    for w in windows:
        est = w["reseed_estimate_seconds"]
        lines.append(
            f"  {w['pod']} (PVC {w['pvc']}, node {w['node'] or '?'}): reads unavailable {w['unavailable']}"
            + (
                f"; re-seed copies up to {w['reseed_copies_up_to']} (~{max(1, round(est / 60))} min at 100 MiB/s)"
                if est
                else ""
            )
        )
        if w["stale_reads"]:
            lines.append(f"    {w['stale_reads']}")
        if w["services"]:
            lines.append(f"    Services routing to it: {', '.join(w['services'])}")
    return lines
