"""Tables (markdown) and targets from one run's measurements. Pure: records in, text out."""

from __future__ import annotations

import itertools

# pgleap's phase names -> the phase names, in order.
PHASE_MAP = {
    "collect old binaries": "collect",
    "prepare new cluster": "initdb",
    "stop the database": "stop",
    "fingerprint before": "verify",
    "pg_upgrade --link": "pg_upgrade",
    "pg_upgrade --copy": "pg_upgrade",
    "fingerprint after": "verify",
    "start the upgraded database": "start",
    "update extensions": "extensions",
    "rebuild collation-dependent indexes": "reindex",
    "statistics": "analyze",
    "health checks": "verify",
}
COLUMNS = (
    "collect",
    "initdb",
    "check",
    "stop",
    "pg_upgrade",
    "start",
    "extensions",
    "reindex",
    "analyze",
    "verify",
)


def _s(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _s2(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(a, b) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def downtime(rec: dict, method: str) -> float | None:
    m = rec["methods"].get(method)
    return None if not m or "error" in m else m.get("downtime")


def downtime_table(records: list[dict]) -> str:
    rows = [
        "| upgrade | dataset | on disk | floor: stop + pg_upgrade --link + start | pgleap --link downtime "
        "(whole run) | pgleap --copy downtime | pg_dumpall \\| psql | pgleap/floor | naive/pgleap |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        f = r["methods"].get("floor") or {}
        link = r["methods"].get("link") or {}
        floor_txt = (
            f"**{_s(f['downtime'])} s** = {_s(f['stop'])} + {_s(f['pg_upgrade'])} + {_s(f['start'])}"
            if "downtime" in f
            else "-"
        )
        whole = f" ({_s(link['whole_run'])} s)" if "whole_run" in link else ""
        rows.append(
            f"| {r['pair']} | {r['dataset']} | {r['facts']['volume_mb'] / 1024:.2f} GB | {floor_txt} | "
            f"**{_s(downtime(r, 'link'))} s**{whole} | {_s(downtime(r, 'copy'))} s | "
            f"{_s(downtime(r, 'naive'))} s | {_ratio(downtime(r, 'link'), downtime(r, 'floor'))} | "
            f"{_ratio(downtime(r, 'naive'), downtime(r, 'link'))} |"
        )
    return "\n".join(rows)


def growth_table(records: list[dict]) -> str:
    """Downtime growth between consecutive sizes of the same family and upgrade pair."""
    rows = [
        "| upgrade | data grows | size x | floor | pgleap --link | pgleap --copy | pg_dumpall \\| psql |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["pair"], r["family"]), []).append(r)
    for (pair, _), recs in groups.items():
        recs = sorted(recs, key=lambda r: r["size"])
        for a, b in itertools.pairwise(recs):
            cells = []
            for method in ("floor", "link", "copy", "naive"):
                x, y = downtime(a, method), downtime(b, method)
                cells.append("-" if x is None or y is None else f"{(y / x - 1) * 100:+.0f} %")
            rows.append(
                f"| {pair} | {a['dataset']} → {b['dataset']} | {b['size'] / a['size']:.1f} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(rows)


def phase_columns(m: dict) -> dict[str, tuple[float, bool]]:
    """Seconds per issue phase; pg_upgrade is split into pg_upgrade itself and the step around it."""
    cols: dict[str, list] = {}
    for p in m.get("phases", []):
        name = PHASE_MAP.get(p["name"])
        if name is None:
            continue
        secs, down = cols.get(name, [0.0, False])
        cols[name] = [secs + p["seconds"], down or p["in_downtime"]]
    prep = m.get("prepare_results") or {}
    up = m.get("upgrade_results") or {}
    if "check_seconds" in up:
        cols["check"] = [float(up["check_seconds"]), True]
    if "initdb_seconds" in prep:
        cols["initdb"] = [float(prep["initdb_seconds"]), False]
    return {k: (v[0], v[1]) for k, v in cols.items()}


def phase_table(records: list[dict], method: str = "link") -> str:
    rows = [
        "| upgrade | dataset | "
        + " | ".join(COLUMNS)
        + " | pg_upgrade itself | slowest in window | slowest after |",
        "|---|---|" + "---:|" * (len(COLUMNS) + 1) + "---|---|",
    ]
    for r in records:
        m = r["methods"].get(method)
        if not m or "error" in m:
            continue
        cols = phase_columns(m)
        cells = []
        for c in COLUMNS:
            if c not in cols:
                cells.append("-")
            else:
                secs, down = cols[c]
                cells.append(f"**{secs:.1f}**" if down else f"{secs:.1f}")
        inside = {k: v[0] for k, v in cols.items() if v[1]}
        after = {k: v[0] for k, v in cols.items() if not v[1] and k not in ("collect", "initdb")}
        pgu = (m.get("upgrade_results") or {}).get("pg_upgrade_seconds", "-")
        rows.append(
            f"| {r['pair']} | {r['dataset']} | " + " | ".join(cells) + f" | {pgu} | "
            f"{max(inside, key=inside.get) if inside else '-'} | {max(after, key=after.get) if after else '-'} |"
        )
    return "\n".join(rows)


def targets(records: list[dict]) -> list[str]:
    """The issue's targets, judged only on what this run measured."""
    out = []
    ratios = [(r, downtime(r, "link"), downtime(r, "floor")) for r in records]
    ratios = [(r, a / b) for r, a, b in ratios if a is not None and b]
    if ratios:
        worst_r, worst = max(ratios, key=lambda x: x[1])
        ok = worst <= 1.25
        out.append(
            f"pgleap --link downtime ≤ 1.25x floor at every size: {'MET' if ok else 'MISSED'} "
            f"(worst {worst:.2f}x on {worst_r['pair']} {worst_r['dataset']})"
        )
    for gb, need in ((1.5, 6), (6, 25)):
        for r in records:
            if r["family"] == "postgis" and abs(r["size"] - gb) / gb < 0.35:
                a, b = downtime(r, "naive"), downtime(r, "link")
                if a and b:
                    out.append(
                        f"≥ {need}x faster than dump/restore at ~{gb:g} GB ({r['pair']}): "
                        f"{'MET' if a / b >= need else 'MISSED'} ({a / b:.1f}x)"
                    )
    for r in records:
        if r["family"] != "postgis" or abs(r["size"] - 6) / 6 > 0.35:
            continue
        base = [
            x
            for x in records
            if x["pair"] == r["pair"] and x["family"] == "postgis" and abs(x["size"] - 1.5) / 1.5 < 0.35
        ]
        if base and downtime(base[0], "link") and downtime(r, "link"):
            g = downtime(r, "link") / downtime(base[0], "link") - 1
            out.append(
                f"link downtime growth ~1.5 → ~6 GB < 15 % ({r['pair']}): {'MET' if g < 0.15 else 'MISSED'} ({g * 100:+.0f} %)"
            )
    return out + logical_targets(records)


def logical_targets(records: list[dict]) -> list[str]:
    """Issue 18: the writer's pause under 2 s at every size, and ≤ 1.25x from the fewest tables to the most."""
    paused = [(r, (r["methods"].get("logical") or {}).get("writer_pause")) for r in records]
    paused = [(r, p) for r, p in paused if p is not None]
    out = []
    if paused:
        worst_r, worst = max(paused, key=lambda x: x[1])
        out.append(
            f"logical write pause (writer) < 2 s at every size: {'MET' if worst < 2 else 'MISSED'} "
            f"(worst {worst:.2f} s on {worst_r['pair']} {worst_r['dataset']})"
        )
    schema = sorted(((r["size"], p) for r, p in paused if r["family"] == "schema"), key=lambda x: x[0])
    if len(schema) > 1 and schema[0][1]:
        (few, a), (many, b) = schema[0], schema[-1]
        out.append(
            f"logical writer pause {few:g} → {many:g} tables ≤ 1.25x: {'MET' if b / a <= 1.25 else 'MISSED'} "
            f"({b / a:.2f}x)"
        )
    return out


def render(records: list[dict]) -> str:
    parts = [
        "### Downtime (seconds; primary stopped → new primary accepting connections)",
        downtime_table(records),
        "",
        "### Growth of the downtime with the data",
        growth_table(records),
        "",
        "### pgleap --link --downtime minimal, per phase (seconds; **bold** = inside the downtime window)",
        phase_table(records, "link"),
    ]
    if any("link-verified" in r["methods"] for r in records):
        parts += [
            "",
            "### pgleap --link with the default --downtime verified, per phase",
            phase_table(records, "link-verified"),
        ]
    if any("proof" in r["methods"] for r in records):
        parts += ["", "### Cost of the proof: one pass over every user table (seconds)", proof_table(records)]
    if any("logical" in r["methods"] for r in records):
        parts += [
            "",
            "### --strategy logical (--verify-after): the write pause beside in-place",
            logical_table(records),
        ]
    parts += ["", "### Targets", *[f"- {t}" for t in targets(records)]]
    return "\n".join(parts)


def proof_table(records: list[dict]) -> str:
    """Row text (the old fingerprint) vs the canonical forms, measured on the same server."""
    rows = [
        "| upgrade | dataset | database | row text | canonical forms | canonical s/GB | canonical/text |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        p = r["methods"].get("proof") or {}
        if "canonical_seconds" in p:
            rows.append(
                f"| {r['pair']} | {r['dataset']} | {p['database_gb']:.2f} GB | {_s(p['text_seconds'])} | "
                f"{_s(p['canonical_seconds'])} | {_s(p['canonical_per_gb'])} | {_ratio(p['canonical_seconds'], p['text_seconds'])} |"
            )
    return "\n".join(rows)


# --strategy logical's phases outside its write pause (before the switch, and after it with --verify-after)
OUTSIDE_PAUSE = {"preflight", "restart for wal_level", "build", "sync", "prepare switch", "start old cluster",
                 "verify after the switch", "reverse replication"}  # fmt: skip


def logical_table(records: list[dict]) -> str:
    """The blue/green write pause next to the in-place floor and `--downtime minimal` on the same data."""
    rows = [
        "| upgrade | dataset | on disk | floor | pgleap --link minimal | write pause (writer) | logical write pause "
        "(pgleap) | writer/link | logical whole run | extra disk | slowest pause phase |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        m = r["methods"].get("logical") or {}
        if "downtime" not in m:
            continue
        pause = {p["name"]: p["seconds"] for p in m.get("phases", [])}
        pause = {k: v for k, v in pause.items() if k not in OUTSIDE_PAUSE}
        slowest = f"{max(pause, key=pause.get)} {max(pause.values()):.2f} s" if pause else "-"
        writer = m.get("writer_pause")
        lost = f" ({m['writer_lost']} lost)" if m.get("writer_lost") else ""
        rows.append(
            f"| {r['pair']} | {r['dataset']} | {r['facts']['volume_mb'] / 1024:.2f} GB | {_s(downtime(r, 'floor'))} s | "
            f"{_s(downtime(r, 'link'))} s | **{_s2(writer)} s**{lost} | {m['downtime']:.2f} s | "
            f"{_ratio(writer, downtime(r, 'link'))} | "
            f"{_s(m.get('whole_run'))} s | {m.get('extra_disk_mb', 0) / 1024:.2f} GB | {slowest} |"
        )
    return "\n".join(rows)
