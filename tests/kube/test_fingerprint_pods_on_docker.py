"""The Kubernetes data proof's data part: the rendered serve-old, upgrade and serve-new Jobs run
on Docker (the kubelet stand-in of test_pods_on_docker), read through a port-forward by the
engine's own fingerprint (hooks.engine_data_proof); then a changed value in the new cluster
makes the runtime (recording fake) stop with exit 4 before anything opens."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.kube.harness import make_cluster
from tests.kube.test_fingerprint_kube import run, serving
from tests.kube.test_pods_on_docker import _start_pod, _sts
from toolkit.cli.kube import load_scripts
from toolkit.errors import VerificationFailed
from toolkit.kube import render
from toolkit.kube.facts import gather
from toolkit.kube.hooks import engine_data_proof
from toolkit.kube.model import HookContext
from toolkit.kube.plan import make_plan

pytestmark = pytest.mark.docker


class HostPod:
    """The API boundary for a Job pod run with the host's network: port-forward = loopback."""

    def __init__(self, container) -> None:
        self.container = container

    def port_forward(self, namespace: str, pod: str, port: int) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=10)

    def exec(self, namespace: str, pod: str, container: str, command: list[str]) -> str:
        return self.container.exec_run(command).output.decode(errors="replace")


def _job_volumes(kubelet, job: dict, scripts_cm: dict, pvc: str, scratch: str) -> dict[str, tuple[str, str]]:
    pod = job["spec"]["template"]["spec"]
    volumes: dict[str, tuple[str, str]] = {}
    for v in pod["volumes"]:
        if v.get("configMap"):
            volumes[v["name"]] = ("bind", kubelet.configmap_dir(scripts_cm, v["configMap"]["defaultMode"]))
        elif "emptyDir" in v:
            volumes[v["name"]] = ("volume", scratch)
        else:
            volumes[v["name"]] = ("volume", pvc)
    for kind, source in volumes.values():
        if kind == "volume":
            kubelet.apply_fs_group(source, pod["securityContext"].get("fsGroup"))
    return volumes


def _run_job(kubelet, plan, sts, action: str, pvc: str) -> str:
    """The rendered Job for `action`, container by container; the logs."""
    job = render.upgrade_job(plan, sts, action)
    pod = job["spec"]["template"]["spec"]
    scripts = render.scripts_configmap(plan, load_scripts())
    volumes = _job_volumes(kubelet, job, scripts, pvc, kubelet.pvc_volume("x"))
    return "".join(kubelet.run(pod, c, volumes) for c in pod["initContainers"] + pod["containers"])


def _serve(kubelet, plan, sts, action: str, pvc: str, read) -> Any:
    """Run the rendered serve Job: init (collect) to its end, the server detached, `read`, SIGINT."""
    job = render.upgrade_job(plan, sts, action)
    pod = job["spec"]["template"]["spec"]
    volumes = _job_volumes(
        kubelet, job, render.scripts_configmap(plan, load_scripts()), pvc, kubelet.pvc_volume("x")
    )
    for init in pod["initContainers"]:
        kubelet.run(pod, init, volumes)
    (main,) = pod["containers"]
    c = kubelet.run(pod, main, volumes, detach=True, network="host")
    try:
        ctx = HookContext(HostPod(c), plan, "geo", "gis", f"{action}-pod", "upgrade", lambda line: None)
        result = read(ctx)
        ctx.kube.exec("geo", ctx.pod, "upgrade", ["sh", "-c", "kill -INT 1"])  # as the runtime stops it
        assert c.wait(timeout=60)["StatusCode"] == 0, c.logs().decode(errors="replace")[-2000:]
        return result
    finally:
        c.remove(force=True, v=True)


def test_serve_jobs_prove_a_13_to_17_upgrade_and_catch_a_changed_value(kubelet, image_names):
    from toolkit.db.seed import seed

    old_image, new_image = image_names["13-3.1"], image_names["17-3.5"]
    sts = _sts(old_image)
    pvc = kubelet.pvc_volume("data-gis-0")
    pod, server = _start_pod(kubelet, sts, pvc)
    seed(server, "gis", rows=300, polygons=30)
    port = str(20000 + (hash(pvc) % 20000))
    env = {"PGLEAP_SUPERUSER": "gis", "PGLEAP_SERVE_PORT": port}
    plan = make_plan(gather(sts), new_image, snapshot=False, job_env=env, mode="copy")
    # --downtime minimal's prepare Job (collect, initdb) beside the serving pod; the upgrade Job
    # then finds the staging cluster, which the kubelet's fsGroup made group-writable since.
    _run_job(kubelet, plan, sts, "prepare", pvc)
    pod.kill(signal="SIGINT")
    pod.wait()
    pod.remove(force=True, v=True)

    proof = engine_data_proof()

    def read_only_write(ctx):
        from toolkit.kube.hooks import served_server

        with (
            served_server(ctx) as srv,
            srv.connect("gis") as conn,
            pytest.raises(Exception, match="read-only transaction"),
        ):
            conn.execute("CREATE TABLE must_fail (x int)")
        return proof.fingerprint(ctx)

    before = _serve(kubelet, plan, sts, "serve-old", pvc, read_only_write)
    assert sum(len(t) for t in before["tables"].values()) > 5

    logs = _run_job(kubelet, plan, sts, "upgrade", pvc)
    assert "new cluster already initialised" in logs

    def corrupt_after_reading(ctx):
        from toolkit.kube.hooks import served_server

        after = proof.fingerprint(ctx)
        with served_server(ctx) as srv, srv.connect("gis") as conn:  # a session may still write
            conn.execute("SET default_transaction_read_only = off")
            conn.execute(
                "UPDATE parcels SET owner = owner || '!' WHERE ctid = (SELECT ctid FROM parcels LIMIT 1)"
            )
            conn.commit()
        return after, proof.fingerprint(ctx)

    after, corrupted = _serve(kubelet, plan, sts, "serve-new", pvc, corrupt_after_reading)
    assert proof.compare(before, after) == []  # pg_upgrade kept every row, sequence, role
    differences = proof.compare(before, corrupted)
    assert differences and any("parcels" in d for d in differences), differences

    # The runtime, with only the API stood in for, given those two fingerprints: exit 4.
    c = make_cluster("official-plain")
    serving(c)
    with pytest.raises(VerificationFailed) as exc:
        run(c, corrupted, before=before, compare=proof.compare)
    assert exc.value.exit_code == 4 and "parcels" in exc.value.message
    assert c.sts()["spec"]["replicas"] == 0
