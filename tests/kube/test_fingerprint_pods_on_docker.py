"""The Kubernetes data proof's data part: the rendered serve-old, upgrade and serve-new Jobs run
on Docker (the kubelet stand-in of test_pods_on_docker), read through a port-forward by the
engine's own fingerprint (hooks.engine_data_proof); serve-new runs read-write on loopback for the
post-upgrade before the switch (`proved`): PostGIS 3.1 -> 3.7 crosses the TopoGeometry trap, whose
repair switched off is exit 4 as on Docker; then a changed value after the post-upgrade makes the
runtime (recording fake) stop with exit 4 before anything opens."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from tests.kube.harness import JOB_ENV, SCRIPTS, make_cluster
from tests.kube.test_fingerprint_kube import TARGET, serving
from tests.kube.test_pods_on_docker import _start_pod, _sts
from toolkit.cli.kube import load_scripts
from toolkit.core.facts import parse_results
from toolkit.errors import VerificationFailed
from toolkit.kube import render
from toolkit.kube.facts import gather
from toolkit.kube.hooks import engine_data_proof
from toolkit.kube.model import DataProof, HookContext
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
    return "".join(kubelet.run(pod, c, volumes) for c in pod.get("initContainers", []) + pod["containers"])


def _serve(kubelet, plan, sts, action: str, pvc: str, read) -> Any:
    """Run the rendered serve Job (no init container: its image's own server), detached, `read`, SIGINT."""
    job = render.upgrade_job(plan, sts, action)
    pod = job["spec"]["template"]["spec"]
    assert "initContainers" not in pod  # nothing collected inside the downtime window
    volumes = _job_volumes(
        kubelet, job, render.scripts_configmap(plan, load_scripts()), pvc, kubelet.pvc_volume("x")
    )
    (main,) = pod["containers"]
    assert main["image"] == (plan.core.old_image if action == "serve-old" else plan.core.new_image)
    c = kubelet.run(pod, main, volumes, detach=True, network="host")
    try:
        ctx = HookContext(HostPod(c), plan, "geo", "gis", f"{action}-pod", "upgrade", lambda line: None)
        result = read(ctx)
        ctx.kube.exec("geo", ctx.pod, "upgrade", ["sh", "-c", "kill -INT 1"])  # as the runtime stops it
        assert c.wait(timeout=60)["StatusCode"] == 0, c.logs().decode(errors="replace")[-2000:]
        return result
    finally:
        c.remove(force=True, v=True)


def test_serve_jobs_prove_a_13_to_18_upgrade_before_the_switch(kubelet, image_names):
    from toolkit.db.seed import seed

    old_image, new_image = image_names["13-3.1"], image_names["18-3.x"]
    sts = _sts(old_image)
    pvc = kubelet.pvc_volume("data-gis-0")
    pod, server = _start_pod(kubelet, sts, pvc)
    seed(server, "gis", rows=300, polygons=30)
    port = str(20000 + (hash(pvc) % 20000))
    # initdb options as `upgrade sts` reads them from the live cluster (the prepare Job cannot
    # ask the running server; 18 would otherwise turn checksums on)
    ((enc, collate, ctype),) = server.query(
        "gis",
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = 'template1'",
    )
    ((walseg, checksums),) = server.query(
        "gis",
        "SELECT pg_size_bytes(current_setting('wal_segment_size')) / 1048576, current_setting('data_checksums')",
    )
    initdb = f"--encoding={enc} --lc-collate={collate} --lc-ctype={ctype} --wal-segsize={walseg} " + (
        "--data-checksums" if checksums == "on" else "--no-data-checksums"
    )
    env = {"PGLEAP_SUPERUSER": "gis", "PGLEAP_SERVE_PORT": port, "PGLEAP_INITDB_ARGS": initdb}
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

    def post_upgrade_then_corrupt(ctx):
        """serve-new, read-write on loopback: the first comparison's read, the post-upgrade with
        the topology trap's repair off (exit 4, rolled back), again with it, then a corruption."""
        from toolkit.kube.hooks import served_server

        after = proof.fingerprint(ctx)
        os.environ["PGLEAP_TEST_SKIP_REPAIRS"] = "1"
        try:
            with pytest.raises(VerificationFailed, match=r"city\.streets\.topo") as trapped:
                proof.post_upgrade(ctx)
        finally:
            del os.environ["PGLEAP_TEST_SKIP_REPAIRS"]
        done = proof.post_upgrade(ctx)
        proved = proof.fingerprint(ctx)
        with served_server(ctx) as srv, srv.connect("gis") as conn:
            conn.execute(
                "UPDATE parcels SET owner = owner || '!' WHERE ctid = (SELECT ctid FROM parcels LIMIT 1)"
            )
            conn.commit()
        return after, trapped.value, done, proved, proof.fingerprint(ctx)

    after, trapped, done, proved, corrupted = _serve(
        kubelet, plan, sts, "serve-new", pvc, post_upgrade_then_corrupt
    )
    assert proof.compare(before, after) == []  # pg_upgrade kept every row, sequence, role
    # Copy mode: the new cluster served pgleap only (serve-new recorded its clean shutdown), so
    # a rollback drops nothing a client wrote and asks no one to accept a loss.
    verdict = dict(parse_results(_run_job(kubelet, plan, sts, "rollback-check", pvc)))
    assert verdict["new_ran"] == "no" and "refused" not in verdict, verdict
    assert verdict["new_state"] == "shut down" and verdict["now_checkpoint"] != verdict["switch_checkpoint"]
    assert trapped.exit_code == 4  # as Docker's test_verified_topology_trap_fails_without_repair…
    assert any("city.streets.topo" in r for r in done["trap_repairs"]), done["trap_repairs"]
    assert any("postgis" in u for u in done["extensions_updated"]), done["extensions_updated"]
    user, extension_tables = proof.compare_user(before, proved)
    assert user == [], user  # repaired: the user data reads as on 13
    differences, _ = proof.compare_user(before, corrupted)
    assert differences and any("parcels" in d for d in differences), differences

    # The runtime, with only the API stood in for, given those fingerprints: the second
    # comparison (`proved`) stops with exit 4 before the switch.
    c = make_cluster("official-plain")
    serving(c)
    served = iter([before, after, corrupted])
    c.runtime.proof = DataProof(
        lambda ctx: next(served), proof.compare, lambda ctx: {"trap_repairs": []}, proof.compare_user
    )
    with pytest.raises(VerificationFailed) as exc:
        c.runtime.upgrade(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, mode="copy")
    assert exc.value.exit_code == 4 and "parcels" in exc.value.message
    assert "after the extension updates" in exc.value.message
    assert c.sts()["spec"]["replicas"] == 0
