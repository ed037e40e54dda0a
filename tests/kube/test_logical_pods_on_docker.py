"""`upgrade sts --strategy logical` 13 -> 17 end to end: the recording fake holds the objects, its
StatefulSet pods and the schema Job run on Docker (the kubelet stand-in of test_pods_on_docker:
the rendered pod spec, the user's Secret as env), pods/exec and pods/portforward reach those
containers. One run, through the CLI, with pgleap killed after each recorded phase:

  preflight, built, synced -> the old StatefulSet serves (Services unchanged, writes accepted),
                              `resume` goes on from there;
  then             -> the Services select the new pods, the data is identical, a write on the new
                      cluster reaches the old one (reverse subscription); finalize without --yes
                      deletes nothing; rollback brings the Services back with that write and
                      removes NAME-next and its PVC;
  switched         -> (a second upgrade) the new pods serve, resume has nothing left to do, and a
                      confirmed finalize deletes the old StatefulSet and its PVC.
The RBAC rules are checked against every call this run made."""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import time

import pytest
from typer.testing import CliRunner

from tests.kube.fake_api import FakeKubernetesApi
from tests.kube.test_cli_kube import build_app
from tests.kube.test_pods_on_docker import Kubelet, _sts
from tests.kube.test_rbac import check_calls
from toolkit.db.sql import Server
from toolkit.errors import Refused
from toolkit.kube import logical_objects as lo
from toolkit.kube.api import Kube
from toolkit.kube.logical import KubeState

pytestmark = pytest.mark.docker
runner = CliRunner()
NS = "geo"


class Crash(Exception):
    """Injected: pgleap dies right after recording a phase."""


class DockerPods(FakeKubernetesApi):
    """The fake API server whose StatefulSet pods and Jobs run as containers (one per pod)."""

    def __init__(self, kubelet: Kubelet) -> None:
        super().__init__()
        self.kubelet = kubelet
        self.containers: dict[str, object] = {}  # pod -> container
        self.volumes_of: dict[str, str] = {}  # PVC -> Docker volume

    def _start(self, sts: dict, pod: str) -> None:
        spec = sts["spec"]["template"]["spec"]
        ordinal = pod.rsplit("-", 1)[1]
        volumes = {}
        for t in sts["spec"].get("volumeClaimTemplates") or []:
            pvc = f"{t['metadata']['name']}-{sts['metadata']['name']}-{ordinal}"
            if pvc not in self.volumes_of:
                self.volumes_of[pvc] = self.kubelet.pvc_volume(pvc)
            volumes[t["metadata"]["name"]] = ("volume", self.volumes_of[pvc])
        c = self.kubelet.run(spec, spec["containers"][0], volumes, detach=True)
        self.containers[pod] = c
        while True:
            c.reload()
            ip = next(
                (n["IPAddress"] for n in c.attrs["NetworkSettings"]["Networks"].values() if n["IPAddress"]),
                "",
            )
            if ip:
                break
            time.sleep(0.1)
        self.set_status_for_test("Pod", NS, pod, {"podIP": ip})

    def _stop(self, pod: str) -> None:
        c = self.containers.pop(pod, None)
        if c is not None:
            c.remove(force=True)

    def _reconcile_sts(self, namespace: str, name: str, before: dict | None) -> None:
        super()._reconcile_sts(namespace, name, before)
        sts = self.get_for_test("StatefulSet", namespace, name)
        for i in range(sts["spec"].get("replicas", 1)):
            pod = f"{name}-{i}"
            if pod not in self.containers and self.get_for_test("Pod", namespace, pod):
                self._start(sts, pod)
            elif pod in self.containers:
                ip = self.containers[pod].attrs["NetworkSettings"]["Networks"]
                self.set_status_for_test(
                    "Pod", namespace, pod, {"podIP": next(iter(ip.values()))["IPAddress"]}
                )

    def delete_namespaced_pod(self, name: str, namespace: str, propagation_policy=None, **kw):
        out = super().delete_namespaced_pod(name, namespace, propagation_policy, **kw)
        self._stop(name)
        owner = name.rsplit("-", 1)[0]
        if self.get_for_test("StatefulSet", namespace, owner):  # the controller starts it again
            self._reconcile_sts(namespace, owner, None)
        return out

    def delete_namespaced_stateful_set(self, name: str, namespace: str, propagation_policy=None, **kw):
        out = super().delete_namespaced_stateful_set(name, namespace, propagation_policy, **kw)
        for pod in [p for p in self.containers if p.rsplit("-", 1)[0] == name]:
            self._stop(pod)
        return out

    def delete_namespaced_persistent_volume_claim(self, name: str, namespace: str, **kw):
        out = super().delete_namespaced_persistent_volume_claim(name, namespace, **kw)
        volume = self.volumes_of.pop(name, None)
        if volume:
            self.kubelet.docker.volumes.get(volume).remove(force=True)
        return out

    def _after_write(self, kind: str, namespace: str | None, name: str, before: dict | None = None) -> None:
        if kind == "Job" and name == lo.schema_job_name("gis"):
            job = self.get_for_test("Job", namespace, name)
            spec = job["spec"]["template"]["spec"]
            cm = self.get_for_test("ConfigMap", namespace, lo.config_map_name("gis"))
            scripts = {
                "scripts": (
                    "bind",
                    self.kubelet.configmap_dir({"data": {lo.SCRIPT_KEY: cm["data"][lo.SCRIPT_KEY]}}, 0o555),
                )
            }
            try:
                log, ok = self.kubelet.run(spec, spec["containers"][0], scripts), True
            except AssertionError as exc:
                log, ok = str(exc), False
            self.finish_job_for_test(namespace, name, succeeded=ok, log=log)
            return
        super()._after_write(kind, namespace, name, before)

    def cleanup(self) -> None:
        for pod in list(self.containers):
            self._stop(pod)


@pytest.fixture
def cluster(docker_client, image_names):
    kubelet = Kubelet(docker_client, {"gis-db": {"password": secrets.token_urlsafe(12)}})
    fake = DockerPods(kubelet)
    sts = _sts(image_names["13-3.1"])
    services = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
         "spec": {"selector": {"app": "gis"}, "ports": [{"port": 5432}], **extra}}
        for name, extra in (("gis", {"clusterIP": "None"}), ("gis-rw", {}))
    ]  # fmt: skip
    fake.seed_for_test(sts, *services)
    kube = Kube(
        core=fake, apps=fake, batch=fake, policy=fake, custom=fake, sleep=lambda s: time.sleep(min(s, 0.2))
    )

    def forward(namespace: str, pod: str, port: int) -> socket.socket:
        ip = fake.get_for_test("Pod", namespace, pod)["status"]["podIP"]
        return socket.create_connection((ip, port), timeout=10)

    def exec_(namespace: str, pod: str, container: str, command: list[str]) -> str:
        return fake.containers[pod].exec_run(command).output.decode()

    kube.port_forward, kube.exec = forward, exec_  # type: ignore[method-assign]
    try:
        fake._reconcile_sts(NS, "gis", None)
        yield fake, kube, kubelet.secrets["gis-db"]["password"]
    finally:
        fake.cleanup()
        kubelet.cleanup()


def _server(fake, pod: str, password: str) -> Server:
    ip = fake.get_for_test("Pod", NS, pod)["status"]["podIP"]
    server = Server(ip, 5432, "gis", password, label=pod)
    server.wait_ready(timeout=180)
    return server


def _cli(kube, *args: str, output: str = "json"):
    app = build_app(type("C", (), {"kube": kube})())  # type: ignore[arg-type]
    return runner.invoke(app, [*args, "-n", NS, "-o", output])


@contextlib.contextmanager
def crash_after(phase: str):
    """pgleap dies right after recording `phase` (the state ConfigMap written, nothing after)."""
    real = KubeState.save

    def save(self, **changes):
        real(self, **changes)
        if changes.get("phase") == phase:
            raise Crash(phase)

    KubeState.save = save  # type: ignore[method-assign]
    try:
        yield
    finally:
        KubeState.save = real  # type: ignore[method-assign]


def _selectors(fake) -> set[str]:
    return {
        json.dumps(fake.get_for_test("Service", NS, s)["spec"]["selector"], sort_keys=True)
        for s in ("gis", "gis-rw")
    }


def _rows(server: Server) -> list[tuple]:
    return server.query("gis", "SELECT id, note, ST_AsText(geom) FROM place ORDER BY id")


def test_logical_upgrade_13_to_17_crash_after_every_phase_then_rollback(cluster, image_names) -> None:
    fake, kube, password = cluster
    new_image = image_names["17-3.5"]
    old = _server(fake, "gis-0", password)
    with old.connect("gis") as conn:
        conn.execute("CREATE TABLE place (id serial PRIMARY KEY, note text, geom geometry(Point, 4326))")
        conn.execute("CREATE INDEX ON place USING gist (geom)")
        conn.execute("INSERT INTO place (note, geom) SELECT 'p' || i, ST_SetSRID(ST_MakePoint(i, i), 4326) "
                     "FROM generate_series(1, 500) i")  # fmt: skip
    original = _selectors(fake)
    planned = _cli(kube, "plan", "sts", "gis", "--to", new_image, "--strategy", "logical")
    assert planned.exit_code == 0, planned.output
    shown = json.loads(planned.stdout)  # read from the live server, nothing written
    assert shown["services"] == {"gis": {"app": "gis"}, "gis-rw": {"app": "gis"}}
    assert any("wal_level" in r["message"] for r in shown["plan"]["refusals"])
    assert any(line.startswith("StatefulSet gis-next") for line in shown["objects"])
    text = _cli(
        kube, "upgrade", "sts", "gis", "--to", new_image, "--strategy", "logical", "--dry-run", output="text"
    )
    assert text.exit_code == 0, text.output
    assert "Service gis-rw: selector {app=gis} -> {" in text.stdout and "refused: wal_level" in text.stdout
    assert not fake.writes_for_test()
    upgrade = (
        "upgrade",
        "sts",
        "gis",
        "--to",
        new_image,
        "--strategy",
        "logical",
        "--restart-for-wal-level",
        "--yes",
    )

    for phase, args in (("preflight", upgrade), ("built", ("resume", "sts", "gis", "--yes")),
                        ("synced", ("resume", "sts", "gis", "--yes"))):  # fmt: skip
        with crash_after(phase):
            result = _cli(kube, *args)
        assert isinstance(result.exception, Crash), result.output
        assert _selectors(fake) == original  # the old StatefulSet serves: Services unchanged
        old = _server(fake, "gis-0", password)  # and takes writes
        old.query("gis", "INSERT INTO place (note) VALUES (%s) RETURNING id", (f"after {phase}",))
    result = _cli(kube, "resume", "sts", "gis", "--yes")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["phase"] == "switched" and done["proof"]["rows"] >= 502
    print(f"write pause (pods on Docker, 13 -> 17): {done['pause_seconds']} s")
    assert _selectors(fake) == {json.dumps(lo.next_labels("gis"), sort_keys=True)}
    old, new = _server(fake, "gis-0", password), _server(fake, "gis-next-0", password)
    assert _rows(new) == _rows(old) and new.query("gis", "SHOW server_version_num")[0][0].startswith("17")
    # a client write on the new cluster (serial from the copied sequence) reaches the old one
    new.query("gis", "INSERT INTO place (note) VALUES ('on new') RETURNING id")
    deadline = time.monotonic() + 30
    while _rows(old) != _rows(new) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _rows(old) == _rows(new)
    status = json.loads(_cli(kube, "status", "sts", "gis").stdout)
    assert status["phase"] == "switched" and status["services"] == ["gis", "gis-rw"]

    without_yes = _cli(kube, "finalize", "sts", "gis")  # finalize deletes the old data: asked first
    assert isinstance(without_yes.exception, Refused) and "not confirmed" in without_yes.exception.message
    assert fake.get_for_test("PersistentVolumeClaim", NS, "data-gis-0") is not None

    result = _cli(kube, "rollback", "sts", "gis", "--yes")
    assert result.exit_code == 0, result.output
    assert _selectors(fake) == original
    assert fake.get_for_test("StatefulSet", NS, "gis-next") is None
    assert fake.get_for_test("PersistentVolumeClaim", NS, "data-gis-next-0") is None
    assert fake.get_for_test("ConfigMap", NS, lo.config_map_name("gis")) is None
    old = _server(fake, "gis-0", password)
    assert [r[1] for r in _rows(old)][-1] == "on new"  # the write made on the new cluster came back
    old.query("gis", "INSERT INTO place (note) VALUES ('after rollback') RETURNING id")  # writable again
    seen = check_calls(fake.calls)
    assert ("patch", "", "services") in seen and ("create", "batch", "jobs") in seen

    # again, killed right after the switch was recorded (before the reverse subscription): the new
    # pods serve; resume has nothing left to do; finalize (confirmed) deletes the old StatefulSet
    with crash_after("switched"):
        result = _cli(kube, *upgrade)
    assert isinstance(result.exception, Crash), result.output
    assert _selectors(fake) == {json.dumps(lo.next_labels("gis"), sort_keys=True)}
    again = _cli(kube, "resume", "sts", "gis", "--yes")
    assert isinstance(again.exception, Refused) and "already switched" in again.exception.message
    result = _cli(kube, "finalize", "sts", "gis", "--yes")
    assert result.exit_code == 0, result.output
    assert fake.get_for_test("StatefulSet", NS, "gis") is None
    assert fake.get_for_test("PersistentVolumeClaim", NS, "data-gis-0") is None
    assert fake.get_for_test("ConfigMap", NS, lo.config_map_name("gis")) is None
    new = _server(fake, "gis-next-0", password)
    assert [r[1] for r in _rows(new)][-2:] == ["on new", "after rollback"]
    assert not new.query("gis", "SELECT subname FROM pg_subscription") and not new.query(
        "postgres", "SELECT slot_name FROM pg_replication_slots"
    )
    check_calls(fake.calls)
