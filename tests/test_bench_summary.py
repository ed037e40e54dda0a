"""The benchmark's table and target verdicts, from hand-made records (no Docker)."""

from __future__ import annotations

from devtools.bench import summary
from devtools.bench.__main__ import median_run, parse


def _rec(size: float, floor: float, link: float, naive: float) -> dict:
    phases = [
        {"name": "collect old binaries", "seconds": 2.0, "in_downtime": False},
        {"name": "stop the database", "seconds": 0.2, "in_downtime": True},
        {"name": "pg_upgrade --link", "seconds": link - 0.6, "in_downtime": True},
        {"name": "start the upgraded database", "seconds": 0.4, "in_downtime": True},
        {"name": "rebuild collation-dependent indexes", "seconds": 30.0, "in_downtime": False},
    ]
    return {
        "pair": "13→17", "dataset": f"postgis-{size:g}GB", "family": "postgis", "size": size,
        "facts": {"volume_mb": size * 1024},
        "methods": {
            "floor": {"downtime": floor, "stop": 0.2, "pg_upgrade": floor - 0.6, "start": 0.4},
            "link": {"downtime": link, "whole_run": 60.0, "phases": phases,
                     "upgrade_results": {"pg_upgrade_seconds": "3.0"}},
            "naive": {"downtime": naive},
        },
    }  # fmt: skip


def test_targets_and_tables():
    records = [_rec(1.5, 4.0, 4.4, 50.0), _rec(6, 4.2, 4.6, 100.0)]
    text = summary.render(records)
    assert "| 13→17 | postgis-1.5GB |" in text
    assert "1.10x" in text  # pgleap/floor at 1.5 GB
    verdicts = summary.targets(records)
    assert any(v.startswith("pgleap --link downtime ≤ 1.25x floor") and "MET" in v for v in verdicts)
    assert any("~1.5 GB" in v and "MET" in v for v in verdicts)  # 50 / 4.4 = 11x >= 6
    assert any("~6 GB" in v and "MISSED" in v for v in verdicts)  # 100 / 4.6 = 22x < 25
    assert any("growth" in v and "MET" in v and "+5 %" in v for v in verdicts)


def test_phase_table_marks_the_window_and_the_slowest_phases():
    row = summary.phase_table([_rec(1.5, 4.0, 4.4, 50.0)]).splitlines()[-1]
    assert "**0.2**" in row and "**3.8**" in row  # stop and pg_upgrade inside the window
    assert row.endswith("| pg_upgrade | reindex |")


def test_median_run_keeps_every_run():
    runs = [{"downtime": 5.0}, {"error": "x"}, {"downtime": 4.0}, {"downtime": 9.0}]
    best = median_run(runs)
    assert best["downtime"] == 5.0 and best["runs"] == [4.0, 5.0, 9.0] and best["failed_runs"] == 1


def test_quick_defaults():
    args = parse(["--quick"])
    assert args.sources == "13-3.1" and args.repeat == 2 and "link-verified" not in args.methods


def test_logical_column_beside_in_place_with_the_slowest_pause_phase():
    record = _rec(1.5, 4.0, 4.4, 50.0)
    record["methods"]["logical"] = {
        "downtime": 2.2, "writer_pause": 2.6, "writer_lost": 0, "whole_run": 90.0, "extra_disk_mb": 1536.0,
        "phases": [{"name": "build", "seconds": 30.0}, {"name": "pause writes", "seconds": 0.1},
                   {"name": "switch", "seconds": 1.8}, {"name": "verify after the switch", "seconds": 9.0}],
    }  # fmt: skip
    text = summary.render([record])
    assert "--strategy logical" in text
    row = summary.logical_table([record]).splitlines()[-1]
    assert (
        "| 4.0 s | 4.4 s | **2.60 s** | 2.20 s | 0.59x | 90.0 s | 1.50 GB | switch 1.80 s |" in row
    )  # not build, not verify after
    assert "logical write pause (writer) < 2 s at every size: MISSED (worst 2.60 s" in text
    assert "--strategy logical" not in summary.render([_rec(1.5, 4.0, 4.4, 50.0)])
