"""The rendered Kubernetes pod specs, executed on Docker exactly as written.

No cluster runs here, so a small kubelet stand-in runs each container of the
rendered Job (init on the OLD image, main on the NEW image) and of the new
StatefulSet's pod: image, command, args, env, workingDir, runAsUser/runAsGroup,
capabilities dropped, no privilege escalation, and every volumeMount (Docker
volumes stand in for the PVC and the emptyDir, a directory for the ConfigMap).
fsGroup is applied the way the kubelet does it (group owner + g+rwX + setgid,
so directories end up 2770), which PostgreSQL refuses unless pgleap fixes it.
The result is verified by fingerprint.
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from toolkit.cli.kube import load_scripts
from toolkit.db import postupgrade, verify
from toolkit.db.sql import Server
from toolkit.kube import new_sts as sts_objects
from toolkit.kube import render
from toolkit.kube.facts import gather
from toolkit.kube.hooks import engine_post_upgrade
from toolkit.kube.model import HookContext
from toolkit.kube.plan import make_plan

pytestmark = pytest.mark.docker

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "postgis-statefulset.yaml"


class Kubelet:
    """Runs pod-spec containers on Docker; volumes by name -> Docker volume (PVC, emptyDir) or host dir."""

    def __init__(self, client, secrets_: dict[str, dict[str, str]]) -> None:
        self.docker = client
        self.secrets = secrets_
        self.made_volumes: list[str] = []
        self.made_dirs: list[str] = []
        self.aliases: dict[
            str, str
        ] = {}  # a reference no registry here serves (digest, custom host:port) -> local image

    def pvc_volume(self, claim: str) -> str:
        name = f"pgleap-kubelet-{claim}-{uuid.uuid4().hex[:6]}"
        self.docker.volumes.create(name, labels={"org.pgleap.role": "test-pvc"})
        self.made_volumes.append(name)
        return name

    def apply_fs_group(self, volume: str, fs_group: int | None) -> None:
        """What the kubelet does to a volume for fsGroup (fsGroupChangePolicy Always)."""
        if fs_group is None:
            return
        self.docker.containers.run(
            "debian:bookworm",
            [
                "sh",
                "-c",
                f"chgrp -R {fs_group} /v && chmod -R g+rwX /v && find /v -type d -exec chmod g+s {{}} +",
            ],
            volumes={volume: {"bind": "/v", "mode": "rw"}},
            remove=True,
        )

    def _env(self, container: dict) -> dict[str, str]:
        env = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
            elif "secretKeyRef" in (item.get("valueFrom") or {}):
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self.secrets[ref["name"]][ref["key"]]
        return env

    def _mounts(self, container: dict, volumes: dict[str, tuple[str, str]]) -> list:
        from docker.types import Mount

        mounts = []
        for vm in container.get("volumeMounts") or []:
            kind, source = volumes[vm["name"]]
            if vm.get("subPath"):
                # Docker 20.10 has no volume subpath: bind the directory inside the volume.
                base = self.docker.volumes.get(source).attrs["Mountpoint"] if kind == "volume" else source
                path = os.path.join(base, vm["subPath"])
                os.makedirs(path, exist_ok=True)
                kind, source = "bind", path
            mounts.append(
                Mount(target=vm["mountPath"], source=source, type=kind, read_only=vm.get("readOnly", False))
            )
        return mounts

    def run(
        self,
        pod_spec: dict,
        container: dict,
        volumes: dict[str, tuple[str, str]],
        *,
        detach: bool = False,
        network: str | None = None,
    ):
        """One container as the kubelet would start it (restricted security context honoured)."""
        sc = {**(pod_spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
        user = None
        if sc.get("runAsUser") is not None:
            user = f"{sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}"
        kwargs = dict(
            image=self.aliases.get(container["image"], container["image"]),
            environment=self._env(container),
            mounts=self._mounts(container, volumes),
            user=user,
            group_add=[str(pod_spec["securityContext"]["fsGroup"])]
            if (pod_spec.get("securityContext") or {}).get("fsGroup") is not None and user
            else None,
            cap_drop=["ALL"] if "ALL" in ((sc.get("capabilities") or {}).get("drop") or []) else None,
            security_opt=["no-new-privileges"] if sc.get("allowPrivilegeEscalation") is False else None,
            working_dir=container.get("workingDir"),
            network=network,
            labels={"org.pgleap.role": "test-pod"},
            detach=True,
        )
        if container.get("command") is not None:
            kwargs["entrypoint"] = container["command"]
            kwargs["command"] = container.get("args") or []
        elif container.get("args") is not None:
            kwargs["command"] = container["args"]
        c = self.docker.containers.run(**{k: v for k, v in kwargs.items() if v is not None})
        if detach:
            return c
        status = c.wait()["StatusCode"]
        logs = c.logs().decode(errors="replace")
        c.remove(force=True, v=True)
        assert status == 0, f"{container['name']} exited {status}:\n{logs[-3000:]}"
        return logs

    def configmap_dir(self, configmap: dict, mode: int) -> str:
        path = tempfile.mkdtemp(prefix="pgleap-cm-")
        for name, content in configmap["data"].items():
            file = Path(path, name)
            file.write_text(content)
            file.chmod(mode)
        os.chmod(path, 0o755)
        self.made_dirs.append(path)
        return path

    def cleanup(self) -> None:
        for name in self.made_volumes:
            with contextlib.suppress(Exception):  # already gone
                self.docker.volumes.get(name).remove(force=True)
        for path in self.made_dirs:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


class PodApi:
    """pods/exec and pods/portforward through the real client path (toolkit.kube.api.Kube →
    kubernetes.stream): the request the client really sends (HTTP method + subresource) is
    recorded and authorised the way an API server of `version` authorises it, against the Role
    of manifests/rbac.yaml (test_rbac.WebSocketServer: a WebSocket GET is `get` before 1.35,
    `get` + `create` from 1.35); only the answer comes from the Docker container playing the pod."""

    def __init__(self, container, version: tuple[int, int] = (1, 34)) -> None:
        from kubernetes import client

        from tests.kube.test_rbac import WebSocketServer, rules
        from toolkit.kube.api import Kube

        self.container = container
        self.server = WebSocketServer(version, rules()[0])
        api = client.ApiClient(client.Configuration(host="https://api.invalid"))
        self.kube = Kube(core=client.CoreV1Api(api), apps=None, batch=None, policy=None, custom=None)

    def _answer(self, configuration, method: str, url: str, **kw):
        """The API server's side: authorise the handshake, then let the container answer."""
        import socket
        from urllib.parse import parse_qsl, urlparse

        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream.ws_client import WSResponse

        from tests.kube.fake_api import Call
        from tests.kube.test_rbac import allowed

        parts = urlparse(url).path.split("/")  # /api/v1/namespaces/NS/pods/NAME/SUB
        namespace, resource = parts[4], f"pods/{parts[7]}"
        self.server.requests.append((method, namespace, resource))
        for verb in self.server.verbs(method):
            if not allowed(Call(verb, "", resource, namespace, None), self.server.rules):
                # what ws_client makes of a refused upgrade
                raise ApiException(status=0, reason="Handshake status 403 Forbidden -+-+- {} -+-+- None")
            self.server.authorised.append((verb, resource))
        query = kw.get("query_params") or parse_qsl(urlparse(url).query)
        if resource == "pods/exec":
            command = [v for k, v in query if k == "command"]
            result = self.container.exec_run(command, user="postgres")
            return WSResponse(data=result.output.decode(errors="replace"), status=200)
        container = self.container

        class Forward:
            def socket(self, port: int):
                container.reload()
                nets = container.attrs["NetworkSettings"]["Networks"].values()
                ip = next(n["IPAddress"] for n in nets)
                return socket.create_connection((ip, port), timeout=10)

        return Forward()

    @contextlib.contextmanager
    def _wired(self):
        import functools

        import kubernetes.stream as kstream
        from kubernetes.stream import stream as real_stream

        saved = (kstream.stream, kstream.portforward)
        inner = real_stream.func  # the client's own _websocket_request: builds the real request
        kstream.stream = functools.partial(inner, self._answer, None)
        kstream.portforward = functools.partial(inner, self._answer, {"_preload_content": False})
        try:
            yield
        finally:
            kstream.stream, kstream.portforward = saved

    @property
    def calls(self) -> list[tuple[str, str]]:
        """(HTTP method, subresource) as the API server received them."""
        return [(m, r) for m, _, r in self.server.requests]

    def exec(self, namespace: str, pod: str, container: str, command: list[str]) -> str:
        with self._wired():
            return self.kube.exec(namespace, pod, container, command)

    def port_forward(self, namespace: str, pod: str, port: int):
        with self._wired():
            return self.kube.port_forward(namespace, pod, port)


def _sts(image: str) -> dict:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    sts["metadata"]["namespace"] = "geo"
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return sts


def _start_pod(kubelet: Kubelet, sts: dict, pvc_volume: str):
    pod = sts["spec"]["template"]["spec"]
    kubelet.apply_fs_group(pvc_volume, (pod.get("securityContext") or {}).get("fsGroup"))
    container = next(c for c in pod["containers"] if c["name"] == "postgres")
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    c = kubelet.run(pod, container, {claim: ("volume", pvc_volume)}, detach=True)
    password = kubelet.secrets["gis-db"]["password"]
    import time

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        c.reload()
        if c.status == "exited":
            raise AssertionError(c.logs().decode(errors="replace")[-3000:])
        ip = next(
            (n["IPAddress"] for n in c.attrs["NetworkSettings"]["Networks"].values() if n["IPAddress"]), None
        )
        if ip:
            server = Server(ip, 5432, "gis", password, label="pod")
            server.wait_ready(timeout=deadline - time.monotonic())
            return c, server
        time.sleep(0.2)
    raise AssertionError("pod did not start")


DIGEST = "@sha256:" + "1" * 64
REGISTRY = "registry.example.com:5000/postgis/postgis"  # a custom registry (host:port) of the family


# References no tag parsing can read: the StatefulSet pinned by digest upgraded to a custom
# registry's tag (host:port, a date for a tag), and the reverse; the probe Pods say the majors.
@pytest.mark.parametrize(
    ("old_tag", "new_tag", "old_ref", "new_ref"),
    [
        ("13-3.1", "17-3.5", "postgis/postgis" + DIGEST, REGISTRY + ":2024.10"),
        (
            "13-3.1",
            "18-3.x",
            REGISTRY + ":2023.04",
            REGISTRY + DIGEST,
        ),
    ],
    ids=["13-17-digest-pinned", "13-18-custom-registry"],
)
def test_rendered_job_and_statefulset_upgrade_a_volume(
    kubelet, runtime, image_names, old_tag, new_tag, old_ref, new_ref
):
    from tests.kube.harness import make_cluster
    from tests.kube.test_fingerprint_pods_on_docker import _serve
    from tests.kube.test_probe import non_probe_writes
    from toolkit.core.upgrade import MajorUpgrade
    from toolkit.db.seed import seed
    from toolkit.kube.hooks import engine_data_proof
    from toolkit.kube.inspect import engine_preflight

    old_image, new_image = image_names[old_tag], image_names[new_tag]
    kubelet.aliases = {old_ref: old_image, new_ref: new_image}
    sts = _sts(old_ref)
    pvc = kubelet.pvc_volume("data-gis-0")

    # 1. The user's StatefulSet pod on the old image, seeded.
    pod, server = _start_pod(kubelet, sts, pvc)
    seed(server, "gis", rows=500, polygons=50)
    before = verify.fingerprint(server)

    # 2. Planned as `upgrade sts` plans it, before the stop: the recording fake API holds the
    # StatefulSet, its probe Pods run on Docker, exec and port-forward reach the running pod.
    try:
        c = make_cluster("official-plain")
        c.fake.seed_for_test(copy.deepcopy(sts))
        c.fake.pod_runner = lambda p: ("Succeeded", kubelet.run(p["spec"], p["spec"]["containers"][0], {}))
        api = PodApi(pod)
        c.kube.exec, c.kube.port_forward = api.exec, api.port_forward  # type: ignore[method-assign]
        plan, _, _ = c.runtime.plan(
            "geo",
            "gis",
            new_ref,
            job_env={"PGLEAP_SUPERUSER": "gis", "PGLEAP_SERVE_PORT": str(20000 + hash(pvc) % 20000)},
            scripts=load_scripts(),
            preflight=engine_preflight,
        )
        assert non_probe_writes(c) == []
        assert (plan.core.old_major, plan.core.new_major) == (13, int(new_tag.split("-")[0]))
        # Docker's own probe of the same images: the same glibc/ICU, so the same reindex decision.
        old_facts, new_facts = runtime.probe_image(old_image), runtime.probe_image(new_image)
        assert plan.core.glibc == (old_facts.glibc, new_facts.glibc) and plan.core.icu == (
            old_facts.icu,
            new_facts.icu,
        )
    except BaseException:  # the running pod goes with a failed plan (its volume is in use)
        pod.remove(force=True, v=True)
        raise
    pod.kill(signal="SIGINT")  # scale to 0: the kubelet's SIGTERM/grace, here a fast clean stop
    pod.wait()
    pod.remove(force=True, v=True)
    # --downtime verified: the rendered serve-old Job (old image, read-only) and pgleap's fingerprint
    proof = engine_data_proof()
    served_old = _serve(kubelet, plan, sts, "serve-old", pvc, proof.fingerprint)

    # 3. The rendered Job, run container by container.
    job = render.upgrade_job(plan, sts, "upgrade")
    scripts_cm = render.scripts_configmap(plan, load_scripts())
    job_pod = job["spec"]["template"]["spec"]
    scripts_volume = next(v for v in job_pod["volumes"] if v.get("configMap"))
    mode = scripts_volume["configMap"].get("defaultMode", 0o644)
    volumes: dict[str, tuple[str, str]] = {}
    for v in job_pod["volumes"]:
        if v.get("configMap"):
            volumes[v["name"]] = ("bind", kubelet.configmap_dir(scripts_cm, mode))
        elif "emptyDir" in v:
            volumes[v["name"]] = ("volume", kubelet.pvc_volume("emptydir"))
        elif v.get("persistentVolumeClaim"):
            assert v["persistentVolumeClaim"]["claimName"] == "data-gis-0"
            volumes[v["name"]] = ("volume", pvc)
    fs_group = job_pod["securityContext"].get("fsGroup")
    for kind, source in volumes.values():
        if kind == "volume":
            kubelet.apply_fs_group(source, fs_group)
    assert job_pod["securityContext"]["runAsNonRoot"] is True
    for init in job_pod["initContainers"]:
        kubelet.run(job_pod, init, volumes)
    logs = "".join(kubelet.run(job_pod, c, volumes) for c in job_pod["containers"])
    assert f"PostgreSQL {plan.core.new_major} cluster ready" in logs
    # pgleap's own comparison, right after pg_upgrade, with the rendered serve-new Job (new image)
    assert proof.compare(served_old, _serve(kubelet, plan, sts, "serve-new", pvc, proof.fingerprint)) == []

    # 4. The new StatefulSet's pod, as rendered, on the same volume.
    new_sts = sts_objects.new_statefulset(plan, sts)
    assert new_sts["spec"]["template"]["spec"]["containers"][0]["image"] == new_ref
    pod, server = _start_pod(kubelet, copy.deepcopy(new_sts), pvc)
    try:
        after_pg = verify.fingerprint(server)
        assert verify.compare(before, after_pg).identical
        # The Kubernetes post-upgrade hook, with only the API boundary stood in for:
        # exec -> docker exec in the pod's container, port-forward -> a TCP socket to it.
        lines: list[str] = []
        api = PodApi(pod)
        ctx = HookContext(api, plan, "geo", "gis", "gis-0", "postgres", lines.append)
        engine_post_upgrade(ctx)
        # what the client really sent, authorised as an API server does against the Role
        assert {("GET", "pods/exec"), ("GET", "pods/portforward")} <= set(api.calls)
        assert {("get", "pods/exec"), ("get", "pods/portforward")} <= set(api.server.authorised)
        assert any(line.startswith("extensions updated: ") and not line.endswith(": 0") for line in lines), (
            lines
        )
        assert not any(line.startswith("FAIL") for line in lines), lines
        assert any("amcheck" in line for line in lines)
        # glibc 2.31 -> 2.41/2.43 changed: the collation-dependent indexes were rebuilt; the
        # statistics ran as Docker's (18: missing ones first, then the rest).
        # What Docker's engine rebuilds on this data: its plan's decision (MajorUpgrade from its own
        # probe of the images) through the one selection query, on the data as its reindex meets
        # it (after the extension updates, which may add indexes; a rebuild keeps the set).
        probed = SimpleNamespace(glibc=(old_facts.glibc, new_facts.glibc), icu=(old_facts.icu, new_facts.icu))
        libc, icu = MajorUpgrade.libc_changed.fget(probed), MajorUpgrade.icu_changed.fget(probed)
        docker_count = sum(
            len(postupgrade.collation_indexes(server, db, libc_changed=libc, icu_changed=icu))
            for db in server.databases()
        )
        rebuilt = next(line for line in lines if line.startswith("collation-dependent indexes rebuilt: "))
        assert rebuilt == f"collation-dependent indexes rebuilt: {docker_count}" and docker_count > 0, lines
        runs = " then ".join(" ".join(r) for r in postupgrade.analyze_runs(plan.core.new_major))
        assert f"statistics: vacuumdb {runs}" in lines, lines
        # The same libraries on both sides (a forced equal probe): nothing to rebuild.
        same = replace(plan, core=replace(plan.core, glibc=(new_facts.glibc,) * 2, icu=(new_facts.icu,) * 2))
        again: list[str] = []
        engine_post_upgrade(HookContext(api, same, "geo", "gis", "gis-0", "postgres", again.append))
        assert "collation-dependent indexes rebuilt: 0" in again, again
        with server.connect("gis") as conn:
            full = conn.execute("SELECT postgis_full_version()").fetchone()[0]
        assert "need upgrade" not in full
        version = server.query("gis", "SHOW server_version_num")[0][0]
        assert int(version) // 10000 == plan.core.new_major
        data_dir = server.query("gis", "SHOW data_directory")[0][0]
        expected = (
            "/var/lib/postgresql/18/docker" if plan.core.new_major >= 18 else "/var/lib/postgresql/data"
        )
        assert data_dir == expected
    finally:
        pod.remove(force=True, v=True)


def _replicated_sts(image: str) -> dict:
    """The example StatefulSet with two ordinals: gis-0 the primary, gis-1 a standby."""
    sts = _sts(image)
    sts["spec"]["replicas"] = 2
    sts["spec"]["template"]["spec"]["containers"][0]["env"] += [
        {"name": "POSTGRES_REPLICATION_USER", "value": "replicator"},
        {
            "name": "POSTGRES_REPLICATION_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "gis-db", "key": "replication-password"}},
        },
    ]
    return sts


def _job_volumes(kubelet: Kubelet, job: dict, scripts_cm: dict, pvc: str) -> dict[str, tuple[str, str]]:
    pod = job["spec"]["template"]["spec"]
    volumes: dict[str, tuple[str, str]] = {}
    for v in pod["volumes"]:
        if v.get("configMap"):
            volumes[v["name"]] = ("bind", kubelet.configmap_dir(scripts_cm, v["configMap"]["defaultMode"]))
        elif v.get("persistentVolumeClaim"):
            volumes[v["name"]] = ("volume", pvc)
    kubelet.apply_fs_group(pvc, pod["securityContext"].get("fsGroup"))
    return volumes


def _stop(pod) -> None:
    pod.kill(signal="SIGINT")
    pod.wait()
    pod.remove(force=True, v=True)


def test_rendered_reseed_job_makes_a_streaming_standby(kubelet, image_names, docker_client):
    """An upgraded primary (gis-0) and an old standby volume (gis-1): the rendered re-seed Job
    copies the primary with pg_basebackup (password through secretKeyRef), places it, and the new
    StatefulSet's pod streams on the Job's slot; the rendered rollback Job puts the old data back."""
    import time

    from toolkit.db.seed import seed
    from toolkit.kube.hooks import engine_standby_probe
    from toolkit.kube.topology import detect

    kubelet.secrets["gis-db"]["replication-password"] = secrets.token_urlsafe(12)
    old_image, new_image = image_names["13-3.1"], image_names["17-3.5"]
    old_sts = _replicated_sts(old_image)
    facts = gather(old_sts)
    topology = detect(old_sts, facts)
    assert topology.kind == "ordinals" and topology.problem is None
    plan = make_plan(facts, new_image, snapshot=False, job_env={"PGLEAP_SUPERUSER": "gis"}, topology=topology)
    assert plan.replicas is not None
    standby = plan.replicas.standbys[0]
    new_sts = sts_objects.primary_statefulset(plan, old_sts)
    net = docker_client.networks.create(
        f"pgleap-kubelet-{uuid.uuid4().hex[:6]}", labels={"org.pgleap.role": "test"}
    )
    pods = []
    try:
        # The old standby's volume: a PostgreSQL 13 cluster with a marker only it has.
        standby_pvc = kubelet.pvc_volume(standby.pvc)
        pod, server = _start_pod(kubelet, copy.deepcopy(old_sts), standby_pvc)
        with server.connect("gis") as conn:
            conn.execute("CREATE TABLE old_standby_marker (x int)")
        _stop(pod)

        # The upgraded primary, with a replication role and a pg_hba line for it.
        primary_pvc = kubelet.pvc_volume(plan.data_pvc)
        primary, pserver = _start_pod(kubelet, copy.deepcopy(new_sts), primary_pvc)
        pods.append(primary)
        net.connect(primary, aliases=[plan.replicas.primary_host])
        seed(pserver, "gis", rows=300, polygons=30)
        with pserver.connect("gis") as conn:
            password = kubelet.secrets["gis-db"]["replication-password"]
            conn.execute(f"CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '{password}'")
        primary.exec_run(
            ["sh", "-c", 'echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"'],
            user="postgres",
        )
        pserver.query("postgres", "SELECT pg_reload_conf()")
        before = verify.fingerprint(pserver)

        # The rendered re-seed Job on the standby's volume.
        job = render.replica_job(plan, old_sts, standby)
        scripts_cm = render.scripts_configmap(plan, load_scripts())
        job_pod = job["spec"]["template"]["spec"]
        (container,) = job_pod["containers"]
        assert next(e for e in container["env"] if e["name"] == "PGPASSWORD")["valueFrom"]["secretKeyRef"]
        volumes = _job_volumes(kubelet, job, scripts_cm, standby_pvc)
        logs = kubelet.run(job_pod, container, volumes, network=net.name)
        assert "copy complete: 17" in logs and "PGLEAP new_pgdata=" in logs

        # The new StatefulSet's pod on the standby volume: a standby of the new primary.
        spod, sserver = _start_pod(kubelet, copy.deepcopy(new_sts), standby_pvc)
        pods.append(spod)
        net.connect(spod, aliases=[f"{standby.pod}.gis.geo.svc"])
        assert sserver.query("gis", "SELECT pg_is_in_recovery()")[0][0] is True
        ctx = HookContext(PodApi(primary), plan, "geo", "gis", "gis-0", "postgres", lambda line: None)
        deadline = time.monotonic() + 120
        while standby.slot not in engine_standby_probe(ctx, (standby.slot,)):
            assert time.monotonic() < deadline, "the standby does not stream"
            time.sleep(1)
        assert verify.compare(before, verify.fingerprint(sserver)).identical
        assert not sserver.query("gis", "SELECT to_regclass('old_standby_marker') IS NOT NULL")[0][0]
        pods.remove(spod)
        _stop(spod)

        # The rendered rollback Job puts the old standby back; the old image starts on it.
        job = render.replica_job(plan, old_sts, standby, "rollback")
        job_pod = job["spec"]["template"]["spec"]
        logs = kubelet.run(
            job_pod, job_pod["containers"][0], _job_volumes(kubelet, job, scripts_cm, standby_pvc)
        )
        assert "PGLEAP rolled_back=" in logs
        pod, server = _start_pod(kubelet, copy.deepcopy(old_sts), standby_pvc)
        pods.append(pod)
        assert server.query("gis", "SELECT to_regclass('old_standby_marker') IS NOT NULL")[0][0]
        assert int(server.query("gis", "SHOW server_version_num")[0][0]) // 10000 == 13
    finally:
        for p in pods:
            with contextlib.suppress(Exception):
                p.remove(force=True, v=True)
        net.remove()
