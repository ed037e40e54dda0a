"""`upgrade sts --strategy logical` 15 -> 18 of a StatefulSet with two ordinals (gis-0 the primary,
gis-1 a standby by its pod spec), end to end on Docker: the recording fake holds the objects, its
pods, the schema Job and the reseed Job run as containers on one Docker network where each pod
has its StatefulSet DNS name (`<pod>.gis.geo.svc`, what the headless Service gives it). pgleap is
killed right after the switch is recorded, then again inside the re-seed (the Job done, NAME-next not
scaled); `resume` finishes the re-seed: NAME-next-1's claim is
seeded from NAME-next-0 by the reseed Job, NAME-next is scaled to 2, and gis-next-1 streams from
gis-next-0 (pg_stat_replication on the new primary) with the primary's rows; the per-standby
Service moved to gis-next-1. Rollback puts every Service back and removes NAME-next with both
claims; the old StatefulSet (both pods) never stopped.

The old gis-1 runs here as a plain server (the harness starts no init container): pgleap never
touches the old standbys, it only needs the pod spec to say they replicate."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time
import uuid

import pytest

from tests.kube.test_logical_pods_on_docker import NS, Crash, DockerPods, _cli, _server, crash_after
from tests.kube.test_pods_on_docker import Kubelet, _replicated_sts
from tests.kube.test_rbac import check_calls
from toolkit.db.sql import Server
from toolkit.kube import logical_objects as lo
from toolkit.kube.api import Kube
from toolkit.kube.objects import replica_job_name
from toolkit.resources import container_dir

pytestmark = pytest.mark.docker
POD_NAME = "statefulset.kubernetes.io/pod-name"


class NetworkPods(DockerPods):
    """DockerPods whose pods have their StatefulSet DNS names and whose reseed Jobs really run."""

    def __init__(self, kubelet: Kubelet, network) -> None:
        super().__init__(kubelet)
        self.network = network

    def _start(self, sts: dict, pod: str) -> None:
        super()._start(sts, pod)
        self.network.connect(self.containers[pod], aliases=[f"{pod}.gis.{NS}.svc"])

    def _after_write(self, kind: str, namespace: str | None, name: str, before: dict | None = None) -> None:
        job = self.get_for_test("Job", namespace, name) if kind == "Job" and before is None else None
        if job is not None and name.endswith("-reseed"):
            spec = job["spec"]["template"]["spec"]
            cm = self.get_for_test("ConfigMap", namespace, lo.config_map_name("gis"))
            volumes = {}
            for v in spec["volumes"]:
                if v.get("configMap"):
                    volumes[v["name"]] = ("bind", self.kubelet.configmap_dir(cm, 0o555))
                else:
                    pvc = v["persistentVolumeClaim"]["claimName"]
                    if pvc not in self.volumes_of:
                        self.volumes_of[pvc] = self.kubelet.pvc_volume(pvc)
                    volumes[v["name"]] = ("volume", self.volumes_of[pvc])
                    self.kubelet.apply_fs_group(self.volumes_of[pvc], spec["securityContext"].get("fsGroup"))
            try:
                log, ok = (
                    self.kubelet.run(spec, spec["containers"][0], volumes, network=self.network.name),
                    True,
                )
            except AssertionError as exc:
                log, ok = str(exc), False
                print("RESEED-JOB-FAILED", log)
            self.finish_job_for_test(namespace or "", name, succeeded=ok, log=log)
            return
        super()._after_write(kind, namespace, name, before)


@contextlib.contextmanager
def network_cluster(docker_client, objects: list[dict], statefulsets: tuple[str, ...]):
    """The recording fake with `objects` seeded, its pods (of `statefulsets`) and Jobs as containers on
    one network with their StatefulSet DNS names: (fake, kube, the user's Secret)."""
    kubelet = Kubelet(docker_client, {"gis-db": {"password": secrets.token_urlsafe(12),
                                                 "replication-password": secrets.token_urlsafe(12)}})  # fmt: skip
    net = docker_client.networks.create(
        f"pgleap-kubelet-{uuid.uuid4().hex[:6]}", labels={"org.pgleap.role": "test"}
    )
    fake = NetworkPods(kubelet, net)
    fake.seed_for_test(*objects)
    kube = Kube(
        core=fake, apps=fake, batch=fake, policy=fake, custom=fake, sleep=lambda s: time.sleep(min(s, 0.2))
    )
    kube.port_forward = lambda namespace, pod, port: socket.create_connection(  # type: ignore[method-assign]
        (fake.get_for_test("Pod", namespace, pod)["status"]["podIP"], port), timeout=10
    )
    kube.exec = lambda namespace, pod, container, command: (
        fake.containers[pod].exec_run(command).output.decode()
    )  # type: ignore[method-assign]
    try:
        for sts in statefulsets:
            fake._reconcile_sts(NS, sts, None)
        yield fake, kube, kubelet.secrets["gis-db"]
    finally:
        fake.cleanup()
        with contextlib.suppress(Exception):
            net.remove()
        kubelet.cleanup()


def services(*specs: tuple[str, dict, dict]) -> list[dict]:
    """Services (name, selector, more of their spec) in the test's namespace."""
    return [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
             "spec": {"selector": selector, "ports": [{"port": 5432}], **extra}} for name, selector, extra in specs]  # fmt: skip


def replicating_primary(fake, secret: dict) -> Server:
    """gis-0 with the replication role, a `host replication` line and 300 rows in gis.place."""
    old = _server(fake, "gis-0", secret["password"])
    with old.connect("gis") as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(
            f"CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '{secret['replication-password']}'"
        )
        conn.execute("CREATE TABLE place (id serial PRIMARY KEY, note text)")
        conn.execute("INSERT INTO place (note) SELECT 'p' || i FROM generate_series(1, 300) i")
    fake.containers["gis-0"].exec_run(
        ["sh", "-c", 'echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"'],
        user="postgres",
    )
    old.query("postgres", "SELECT pg_reload_conf()")
    return old


@pytest.fixture
def cluster(docker_client, image_names):
    svcs = services(("gis", {"app": "gis"}, {"clusterIP": "None"}), ("gis-read-1", {POD_NAME: "gis-1"}, {}))
    with network_cluster(docker_client, [_replicated_sts(image_names["15-3.3"]), *svcs], ("gis",)) as c:
        yield c


def resume_crashing_on_scale(fake, kube, statefulset: str, replicas: int) -> None:
    """`resume sts gis`, pgleap killed when it scales `statefulset` to `replicas` (the reseed Job done)."""
    real_patch = fake.patch_namespaced_stateful_set

    def crash_on_scale(name, namespace, body, **kw):
        if name == statefulset and (body.get("spec") or {}).get("replicas") == replicas:
            raise Crash("scale-up")
        return real_patch(name, namespace, body, **kw)

    fake.patch_namespaced_stateful_set = crash_on_scale  # type: ignore[method-assign]
    try:
        result = _cli(kube, "resume", "sts", "gis", "--yes")
    finally:
        fake.patch_namespaced_stateful_set = real_patch  # type: ignore[method-assign]
    assert isinstance(result.exception, Crash), result.output


def _selector(fake, svc: str) -> dict:
    return fake.get_for_test("Service", NS, svc)["spec"]["selector"]


def test_logical_upgrade_reseeds_the_standby_into_next_and_rollback_removes_it(cluster, image_names) -> None:
    fake, kube, secret = cluster
    replicating_primary(fake, secret)
    planned = json.loads(
        _cli(kube, "plan", "sts", "gis", "--to", image_names["18-3.x"], "--strategy", "logical").stdout
    )
    assert planned["plan"]["standbys"] == ["gis-1"]
    assert any(line.startswith("Service gis-read-1: selects gis-next-1") for line in planned["objects"])
    upgrade = ("upgrade", "sts", "gis", "--to", image_names["18-3.x"], "--strategy", "logical",
               "--restart-for-wal-level", "--yes")  # fmt: skip
    with crash_after("switched"):
        result = _cli(kube, *upgrade)
    assert isinstance(result.exception, Crash), result.output
    assert fake.get_for_test("StatefulSet", NS, "gis-next")["spec"]["replicas"] == 1  # not re-seeded yet
    assert _selector(fake, "gis-read-1") == {POD_NAME: "gis-1"}  # still the old standby

    # killed again inside the re-seed: the Job has placed the copy, NAME-next is not scaled yet
    resume_crashing_on_scale(fake, kube, "gis-next", 2)
    assert fake.get_for_test("Job", NS, replica_job_name("gis-next-1", "reseed"))["status"]["succeeded"] == 1
    assert fake.get_for_test("StatefulSet", NS, "gis-next")["spec"]["replicas"] == 1

    result = _cli(kube, "resume", "sts", "gis", "--yes")  # the Job again (the copy is kept), then the rest
    assert result.exit_code == 0, result.output
    (info,) = json.loads(result.stdout)["standbys"]
    print(f"standby re-seed (pods on Docker): {info['seconds']:.1f} s, lag {info['lag_bytes']} bytes")
    assert fake.get_for_test("StatefulSet", NS, "gis-next")["spec"]["replicas"] == 2
    new = _server(fake, "gis-next-0", secret["password"])
    streaming = new.query("postgres", "SELECT slot_name FROM pg_replication_slots s JOIN pg_stat_replication r "
                          "ON r.pid = s.active_pid WHERE r.state = 'streaming'")  # fmt: skip
    assert streaming == [("pgleap_gis_next_1",)]
    standby = _server(fake, "gis-next-1", secret["password"])
    assert standby.query("postgres", "SELECT pg_is_in_recovery()")[0][0] is True
    new.query("gis", "INSERT INTO place (note) VALUES ('on new') RETURNING id")
    deadline = time.monotonic() + 30
    while standby.query("gis", "SELECT count(*) FROM place")[0][0] != 301:
        assert time.monotonic() < deadline, "the new standby does not replay the new primary's writes"
        time.sleep(0.2)
    assert _selector(fake, "gis-read-1") == {**lo.next_labels("gis"), POD_NAME: "gis-next-1"}
    assert fake.get_for_test("Job", NS, replica_job_name("gis-next-1", "reseed")) is None

    result = _cli(kube, "rollback", "sts", "gis", "--yes")
    assert result.exit_code == 0, result.output
    assert _selector(fake, "gis") == {"app": "gis"} and _selector(fake, "gis-read-1") == {POD_NAME: "gis-1"}
    assert fake.get_for_test("StatefulSet", NS, "gis-next") is None
    for claim in ("data-gis-next-0", "data-gis-next-1"):
        assert fake.get_for_test("PersistentVolumeClaim", NS, claim) is None
    assert {"gis-0", "gis-1"} <= set(fake.containers)  # the old pods never stopped
    old = _server(fake, "gis-0", secret["password"])
    assert old.query("gis", "SELECT note FROM place ORDER BY id DESC LIMIT 1") == [("on new",)]
    check_calls(fake.calls)


def test_schema_job_logs_in_with_the_password_file_of_the_users_secret(kubelet, image_names) -> None:
    """POSTGRES_PASSWORD_FILE: the rendered schema Job (new image) mounts the user's Secret volume
    and logical-schema.sh reads the file: roles and schema reach the new server. (The test images'
    entrypoint takes POSTGRES_PASSWORD only, so the servers get the same password that way.)"""
    from tests.kube.test_pods_on_docker import _start_pod, _stop, _sts

    pods = []
    try:
        old_pod, old = _start_pod(kubelet, _sts(image_names["13-3.1"]), kubelet.pvc_volume("data-gis-0"))
        pods.append(old_pod)
        new_pod, new = _start_pod(kubelet, _sts(image_names["17-3.5"]), kubelet.pvc_volume("data-gis-next-0"))
        pods.append(new_pod)
        with old.connect("postgres") as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute("CREATE ROLE reader LOGIN PASSWORD 'r'")
            conn.execute("CREATE DATABASE app TEMPLATE template0")
        with old.connect("app") as conn:
            conn.execute("CREATE TABLE place (id serial PRIMARY KEY, note text)")
        with new.connect("postgres") as conn:  # empty, as the build makes it
            conn.execute("CREATE DATABASE app TEMPLATE template0")
        sts = _sts(image_names["13-3.1"])
        pod = sts["spec"]["template"]["spec"]
        main = pod["containers"][0]
        main["env"] = [e for e in main["env"] if e["name"] != "POSTGRES_PASSWORD"] + [
            {"name": "POSTGRES_PASSWORD_FILE", "value": "/run/secrets/gis-db/password"}]  # fmt: skip
        main["volumeMounts"].append({"name": "db", "mountPath": "/run/secrets/gis-db", "readOnly": True})
        pod["volumes"] = [{"name": "db", "secret": {"secretName": "gis-db"}}]
        job = lo.schema_job(sts, container="postgres", image=image_names["17-3.5"], superuser="gis",
                            old_host=old.host, new_host=new.host, databases=["app"])  # fmt: skip
        spec = job["spec"]["template"]["spec"]
        script = (container_dir() / lo.SCRIPT_KEY).read_text()
        volumes = {"scripts": ("bind", kubelet.configmap_dir({"data": {lo.SCRIPT_KEY: script}}, 0o555)),
                   "pgleap-password": ("bind", kubelet.configmap_dir({"data": kubelet.secrets["gis-db"]}, 0o444))}  # fmt: skip
        kubelet.run(spec, spec["containers"][0], volumes)  # exit 0, or its log in the assertion
        assert new.query("postgres", "SELECT rolname FROM pg_roles WHERE rolname = 'reader'") == [("reader",)]
        assert new.query("app", "SELECT to_regclass('place') IS NOT NULL")[0][0]
    finally:
        for p in pods:
            with contextlib.suppress(Exception):
                _stop(p)
