"""CI runs what a laptop may skip: `.ci/run` sets CI, and CI turns those skips into failures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ci import skip_unless_ci

ROOT = Path(__file__).resolve().parents[1]


def test_ci_run_exports_ci(tmp_path: Path) -> None:
    (tmp_path / ".ci").mkdir()
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    dev = tmp_path / "scripts" / "dev"
    dev.write_text('#!/usr/bin/env bash\necho "CI=${CI:-unset} $*"\n')
    dev.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    out = subprocess.run([tmp_path / ".ci" / "run"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "CI=true test"
    out = subprocess.run(
        [tmp_path / ".ci" / "run"], env={**env, "CI": "1"}, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "CI=1 test"  # a CI system's own value is kept


def test_skips_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test: needs root"):
        skip_unless_ci("needs root")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        skip_unless_ci("needs root")


def test_markers_are_strict_and_image_tests_need_docker() -> None:
    """`-m 'not docker'` (the fast selection) must not start image containers."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not docker", "tests/test_images.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 5 and "deselected" in proc.stdout, proc.stdout + proc.stderr
    bad = ROOT / "tests" / "_tmp_marker_probe_test.py"
    bad.write_text("import pytest\n\n\n@pytest.mark.dockr\ndef test_x():\n    pass\n")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", str(bad)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        bad.unlink()
    assert proc.returncode != 0 and "'dockr' not found in `markers`" in proc.stdout + proc.stderr
