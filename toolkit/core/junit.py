"""A rehearsal's result as JUnit XML: one test case per check, for CI systems to show and count.

Cases: every phase that ran (preflight inspection, collect, pg_upgrade, extension
updates, …), each file loaded, the fingerprint comparison per database (right after
pg_upgrade and after the extension updates), each health check, each extension's
update; a no-go adds the failed step as a failing case with its message and what to do.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


def cases(result: dict) -> list[dict]:
    """(classname, name, seconds, failure message or None) of every check in a rehearsal result."""
    out: list[dict] = []

    def add(cls: str, name: str, failure: str | None = None, seconds: float = 0.0) -> None:
        out.append({"classname": cls, "name": name, "time": seconds, "failure": failure})

    for item in result.get("loaded", []):
        add("load", f"{item['kind']}: {item['file']}")
    for phase in result.get("phases", []):
        add("phase", phase["name"], seconds=phase["seconds"])
    fp = result.get("fingerprint")
    differences = result.get("differences", [])
    if fp:
        for db in fp["before"].get("databases", []):
            mine = [d for d in differences if d.startswith(f"{db}:")]
            add("proof", f"{db}: identical after pg_upgrade", "; ".join(mine) or None)
    after = result.get("fingerprint_after_extensions")
    if after:
        for db in (fp or {}).get("before", {}).get("databases", []):
            mine = [d for d in after.get("differences", []) if d.startswith(f"{db}:")]
            add("proof", f"{db}: identical after extension updates", "; ".join(mine) or None)
    for row in result.get("health", []):
        add("health", row["check"], None if row["ok"] else row["detail"] or "failed")
    for ext in result.get("extensions", []):
        if ext["action"] != "none":
            add("extension", f"{ext['database']}: {ext['extension']} {ext['before']} -> {ext['after']}")
    for repair in result.get("trap_repairs", []):
        add("trap repair", repair)
    if result.get("verdict") == "no-go":
        message = result.get("reason", "no-go")
        if result.get("what_to_do"):
            message += f" — what to do: {result['what_to_do']}"
        add("verdict", f"go (exit {result.get('exit_code')})", message)
    return out


def write(path: str | Path, result: dict, *, suite: str = "pgleap rehearse") -> int:
    """Write the JUnit file; returns the number of failed cases."""
    items = cases(result)
    failures = sum(1 for c in items if c["failure"])
    root = ET.Element("testsuites")
    ts = ET.SubElement(
        root, "testsuite", name=suite, tests=str(len(items)), failures=str(failures), errors="0",
        time=f"{sum(c['time'] for c in items):.3f}",
    )  # fmt: skip
    for c in items:
        tc = ET.SubElement(ts, "testcase", classname=c["classname"], name=c["name"], time=f"{c['time']:.3f}")
        if c["failure"]:
            ET.SubElement(tc, "failure", message=c["failure"][:500]).text = c["failure"]
    ET.indent(root)
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))
    return failures
