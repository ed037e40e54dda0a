"""What a Docker command prints: the result as text, JSON or YAML, the status, the rehearsal's report."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from toolkit import __version__
from toolkit.core.report import Report, console, plural, print_findings, print_verdict

out = console(stderr=False)


def emit(result: dict, output: str, report: Report) -> None:
    if isinstance(result, dict) and output != "text":
        result = {
            **result,
            "pgleap_version": __version__,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    if output == "json":
        print(json.dumps(result, indent=2, default=str))
    elif output == "yaml":
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(result, default=str)), sort_keys=False))
    else:
        _summary(result, report)


def _when(epoch) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(epoch)))


def status_text(result: dict) -> None:
    """`status docker` for a person: where the run stands, or what happened last and when."""
    out.print(f"target: {result['target']}", markup=False)
    if result.get("phase"):
        out.print(f"phase: {result['phase']} (upgrade to {result.get('target_image')})", markup=False)
        if result.get("interrupted"):
            i = result["interrupted"]
            out.print(f"interrupted during {i['during']} at {_when(i['at'])}", markup=False)
    else:
        out.print("phase: no upgrade recorded", markup=False)
    for key in ("rollback", "finalize"):  # under way: stopped half-way, or running now
        under = result.get(key)
        if under:
            what = "automatic restore" if under.get("operation") == "restored" else key
            out.print(
                f"{key}: under way, phase {under.get('phase')} recorded ({what} started at "
                f"{_when(under['started_at']) if under.get('started_at') else '?'})",
                markup=False,
            )
    last = result.get("last_operation")
    if last:
        out.print(f"last operation: {last['operation']} at {_when(last['at'])}", markup=False)


def emit_plain(data: dict, output: str) -> None:
    """A result with no text summary of its own: key: value lines as text."""
    if output != "text":
        emit(data, output, Report(quiet=True))
        return
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        out.print(f"{key}: {value}", markup=False)


def _summary(result: dict, report: Report) -> None:
    if result.get("health"):
        table = Table("check", "ok", "detail", title="verification")
        for row in result["health"]:
            table.add_row(row["check"], "[green]yes[/]" if row["ok"] else "[red]NO[/]", row["detail"])
        out.print(table)
    fp = result.get("fingerprint")
    if fp:
        b, a = fp["before"], fp["after"]
        out.print(
            f"fingerprint: {plural(b['tables'], 'table')} / {plural(b['rows'], 'row')} / "
            f"{plural(b['sequences'], 'sequence')} before, "
            f"{a['tables']} / {a['rows']} / {a['sequences']} after pg_upgrade: [bold green]identical[/]"
        )
    proof = result.get("fingerprint_after_extensions")
    if proof:
        forms = ", ".join(f"{n} {form}" for form, n in sorted(proof["forms"].items()))
        verdict = "[bold green]identical[/]" if proof["identical"] else "[bold red]DIFFERENT (accepted)[/]"
        out.print(f"fingerprint after extension updates and repairs: {verdict} (columns read as: {forms})")
    if result.get("downtime_seconds") is not None:
        out.print(
            f"downtime: [bold]{result['downtime_seconds']:.1f} s[/] (database stopped -> upgraded one accepting)"
        )
    if result.get("loses"):
        out.print(f"dropped: {result['loses']}", markup=False)
    if result.get("status") in ("rolled-back", "restored"):
        if result.get("kept_new_cluster"):
            out.print(f"the new cluster was kept in {result['kept_new_cluster']}", markup=False)
        out.print(f"remove it and pgleap's scratch volume with: {result['cleanup']}", markup=False)
    out.print(f"status: [bold]{escape(str(result.get('status')))}[/]")


def _emit_rehearsal(result: dict, output: str) -> None:
    if output != "text":
        emit(result, output, Report(quiet=True))
        return
    print_findings(out, result)
    if result.get("predicted_downtime_seconds") is not None:
        out.print(f"predicted downtime of the real run: [bold]{result['predicted_downtime_seconds']} s[/]")
    if result.get("kept"):
        k = result["kept"]
        out.print(
            f"upgraded clone kept: container {k['container']}, volume {k['volume']}, {k['connect']}",
            markup=False,
        )
        out.print(
            f"  remove it with: docker rm -f {k['container']} && docker volume rm {k['volume']}", markup=False
        )
    print_verdict(out, result)


def report_rehearsal(result: dict, output: str, junit: Path | None) -> None:
    if junit is not None:
        from toolkit.core import junit as junit_xml

        junit_xml.write(junit, result)
    _emit_rehearsal(result, output)
