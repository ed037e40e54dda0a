"""Fault injection on real containers: run the real CLI, stop it at a named point, kill something.

`PGLEAP_FAULT=<point>` (toolkit/db/faults.py, lib.sh `fault`) makes pgleap or the
container script freeze at that point and print ``PGLEAP fault=<point>``; the
harness sees the line (on pgleap's stderr, or in the logs of pgleap's helper
container) and then SIGKILLs what the test names: the container that is working
at that point, or the pgleap process itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from toolkit.docker.refs import LABEL, VOLUME_LABEL

# Points in the Python process (toolkit/db/faults.py); every other point is in a container script,
# except the logical strategy's (`logical-*`, toolkit/engine/logical.py), all in pgleap's process.
PYTHON_POINTS = {"after-collected", "after-upgraded", "after-rollback-started", "extensions", "reindex"}


def in_pgleap(point: str) -> bool:
    return point in PYTHON_POINTS or point.startswith("logical-")


def pgleap(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        stdin=subprocess.DEVNULL,  # never a terminal: nothing may wait for an answer
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@dataclass
class Running:
    """A pgleap run in the background, its stderr collected line by line."""

    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def stderr(self) -> str:
        return "".join(self.lines)


def start(*args: str, env: dict | None = None) -> Running:
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    run = Running(proc)

    def pump() -> None:
        for line in proc.stderr:
            run.lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    return run


def helpers(rt, volume_key: str, role: str | None = None) -> list:
    """pgleap's helper containers on this volume (those that vanish while we look are skipped)."""
    import docker.errors

    found = []
    for row in rt.docker.api.containers(all=True, filters={"label": f"{VOLUME_LABEL}={volume_key}"}):
        if role is not None and (row.get("Labels") or {}).get(LABEL) != role:
            continue
        try:
            found.append(rt.docker.containers.get(row["Id"]))
        except docker.errors.NotFound:
            continue
    return found


def wait_for_point(rt, run: Running, volume_key: str, point: str, timeout: float = 300):
    """Block until the point is reached; return the script container that froze there (or None)."""
    marker = f"PGLEAP fault={point}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if in_pgleap(point):
            if marker in run.stderr():
                return None
        else:
            for c in helpers(rt, volume_key, "script"):
                try:
                    if marker in c.logs(stdout=True, stderr=False).decode(errors="replace"):
                        return c
                except Exception:  # the container went away between list and logs
                    continue
        if run.proc.poll() is not None:
            raise AssertionError(f"pgleap ended (exit {run.proc.returncode}) before {point}:\n{run.stderr()}")
        time.sleep(0.1)
    run.proc.kill()
    raise AssertionError(f"fault point {point} not reached in {timeout:.0f} s:\n{run.stderr()}")


def kill_container_at(rt, run: Running, volume_key: str, point: str, release_dir) -> int:
    """SIGKILL the container working at `point`; pgleap sees it die. Returns pgleap's exit code."""
    frozen = wait_for_point(rt, run, volume_key, point)
    if frozen is not None:
        frozen.kill(signal="SIGKILL")
    else:  # a Python point: the container working then is the temporary server of the new cluster
        servers = [c for c in helpers(rt, volume_key, "temp-server") if c.status == "running"]
        assert len(servers) == 1, [c.name for c in servers]
        servers[0].kill(signal="SIGKILL")
        (release_dir / "release").touch()
    run.proc.wait(timeout=300)
    run.proc.stdout.close()
    return run.proc.returncode


def kill_pgleap_at(rt, run: Running, volume_key: str, point: str) -> None:
    """SIGKILL pgleap itself at `point` (its frozen helper container, if any, is left behind)."""
    wait_for_point(rt, run, volume_key, point)
    run.proc.kill()
    run.proc.wait(timeout=60)
    run.proc.stdout.close()


def fault_env(point: str, tmp_path) -> dict:
    return {"PGLEAP_FAULT": point, "PGLEAP_FAULT_RELEASE": str(tmp_path / "release")}


def result_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
