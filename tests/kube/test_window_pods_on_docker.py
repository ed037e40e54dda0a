"""The `--downtime minimal` window on Kubernetes (the rendered prepare/upgrade Jobs and the new
StatefulSet's pod, run on Docker) against Docker's own minimal window, on the same seed.

A measurement, not a CI test: `PGLEAP_KUBE_WINDOW=1` runs it; it prints both windows (and the
Kubernetes verified window) and holds the issue's bound, Kubernetes within 1.5x of Docker.
Numbers go to docs/benchmark.md.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from tests.kube.test_fingerprint_pods_on_docker import _run_job, _serve
from tests.kube.test_pods_on_docker import _start_pod, _sts
from toolkit.core.report import Report
from toolkit.docker.target import DockerTarget
from toolkit.engine import runner as engine
from toolkit.engine.state import RunState
from toolkit.kube import new_sts
from toolkit.kube.facts import gather
from toolkit.kube.hooks import engine_data_proof
from toolkit.kube.plan import make_plan

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        not os.environ.get("PGLEAP_KUBE_WINDOW"), reason="a measurement: PGLEAP_KUBE_WINDOW=1"
    ),
]
ROWS, POLYGONS = 3000, 300
OLD, NEW = "13-3.1", "17-3.5"


STEPS: dict[str, float] = {}  # the verified window's Jobs, seconds each (printed with the windows)


def _timed(step: str, call):
    began = time.monotonic()
    try:
        return call()
    finally:
        STEPS[step] = round(time.monotonic() - began, 1)


def _kube_window(kubelet, image_names, downtime: str) -> float:
    """Seconds from the stop of the old pod to the new StatefulSet's pod accepting connections."""
    from toolkit.db.seed import seed

    sts = _sts(image_names[OLD])
    pvc = kubelet.pvc_volume("data-gis-0")
    pod, server = _start_pod(kubelet, sts, pvc)
    seed(server, "gis", rows=ROWS, polygons=POLYGONS)
    env = {"PGLEAP_SUPERUSER": "gis", "PGLEAP_SERVE_PORT": str(20000 + hash(pvc) % 20000)}
    plan = make_plan(gather(sts), image_names[NEW], snapshot=False, job_env=env)
    plan = dataclasses.replace(plan, core=dataclasses.replace(plan.core, downtime=downtime))
    if downtime == "minimal":
        _run_job(kubelet, plan, sts, "prepare", pvc)  # beside the serving pod
    start = time.monotonic()
    pod.kill(signal="SIGINT")  # the kubelet's stop, fast and clean (no clients)
    pod.wait()
    pod.remove(force=True, v=True)
    proof = engine_data_proof()
    before = (
        _timed("serve-old", lambda: _serve(kubelet, plan, sts, "serve-old", pvc, proof.fingerprint))
        if downtime == "verified"
        else None
    )
    _timed(f"upgrade ({downtime})", lambda: _run_job(kubelet, plan, sts, "upgrade", pvc))
    if before is not None:
        after = _timed("serve-new", lambda: _serve(kubelet, plan, sts, "serve-new", pvc, proof.fingerprint))
        assert proof.compare(before, after) == []
    new, _ = _start_pod(kubelet, new_sts.new_statefulset(plan, sts), pvc)
    window = time.monotonic() - start
    new.remove(force=True, v=True)
    return window


def test_kube_minimal_window_within_one_and_a_half_docker_minimal(
    kubelet, runtime, image_names, old_db_factory
):
    db = old_db_factory(OLD, rows=ROWS)
    target = DockerTarget(runtime, container=db.name)
    result = engine.upgrade(
        target, image_names[NEW], downtime="minimal", report=Report(quiet=True), state=RunState(target.key)
    )
    docker = result["downtime_seconds"]
    kube_minimal = _kube_window(kubelet, image_names, "minimal")
    kube_verified = _kube_window(kubelet, image_names, "verified")
    load = os.getloadavg()[0]
    print(
        f"\nwindow {OLD} -> {NEW}, {ROWS} rows: docker minimal {docker:.1f} s, kube minimal {kube_minimal:.1f} s "
        f"({kube_minimal / docker:.2f}x), kube verified {kube_verified:.1f} s; load {load:.1f}\n"
        f"Jobs (pod start to end, seconds): {STEPS}"
    )
    assert kube_minimal <= 1.5 * docker
