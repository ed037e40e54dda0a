"""Parity: the same refusal, with the same message, from `upgrade docker` and `upgrade sts`.

Docker: the real CLI against a real running 15 cluster (or an empty volume where the refusal
needs no data). Kubernetes: the recording fake API, its probe Pods run on Docker by the
pods-on-docker kubelet stand-in, its exec and port-forward reaching the same running 15
cluster as the StatefulSet's pod. For Kubernetes the recorded calls hold no mutating call
except the probe Pods' own create and delete.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import pytest

from tests.kube.harness import make_cluster
from tests.kube.test_pods_on_docker import PodApi
from tests.kube.test_probe import non_probe_writes, probe_calls
from toolkit.cli.kube import load_scripts
from toolkit.errors import EXIT_REFUSED, Refused
from toolkit.kube.inspect import engine_preflight

pytestmark = pytest.mark.docker

DIGEST_OLD = "registry.example.com:5000/postgis/postgis@sha256:" + "1" * 64
DIGEST_NEW = "postgis/postgis@sha256:" + "2" * 64


def pgleap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def db15(docker_client, image_names):
    from tests.conftest import remove_old, start_old
    from toolkit.docker.runtime import DockerRuntime

    db = start_old(DockerRuntime(docker_client), image_names["15-3.3"], "15-3.3", rows=200)
    yield db
    remove_old(db)


def docker_runner(kubelet, aliases: dict[str, str]):
    """Run each probe Pod's container on Docker as the kubelet would (restricted context)."""

    def run(pod: dict) -> tuple[str, str]:
        container = dict(pod["spec"]["containers"][0])
        container["image"] = aliases.get(container["image"], container["image"])
        try:
            return "Succeeded", kubelet.run(pod["spec"], container, {})
        except AssertionError as exc:  # the container exited non-zero: its log is in the message
            return "Failed", str(exc)

    return run


def kube_run(
    db, kubelet, image_names, target: str, *, image: str | None = None, mode: str = "link", plan=False
):
    """`upgrade sts` (or `plan sts`) of a StatefulSet whose pod is the running Docker cluster `db`."""
    c = make_cluster("official-plain")
    sts = c.sts()
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = image or db.image
    c.fake.seed_for_test(sts)
    aliases = {DIGEST_OLD: image_names["15-3.3"], DIGEST_NEW: image_names["17-3.5"]}
    c.fake.pod_runner = docker_runner(kubelet, aliases)
    pod = PodApi(db.runtime.docker.containers.get(db.name))
    c.kube.exec, c.kube.port_forward = pod.exec, pod.port_forward  # type: ignore[method-assign]
    scripts = load_scripts()
    env = {"PGLEAP_SUPERUSER": db.superuser}
    if plan:
        return c, c.runtime.plan(
            c.namespace, c.name, target, job_env=env, scripts=scripts, preflight=engine_preflight
        )
    with pytest.raises(Refused) as exc:
        c.runtime.upgrade(
            c.namespace, c.name, target, scripts=scripts, job_env=env, mode=mode, preflight=engine_preflight
        )
    return c, exc.value


def flat(text: str) -> str:
    return " ".join(text.split())


# (id, target tag, mode, SQL run first on the old cluster, the message's start, a name it must hold)
CASES = [
    ("downgrade", "13-3.1", "link", None, "target PostgreSQL 13 is older than the source 15", "15"),
    ("swap-before-18", "17-3.5", "swap", None, "--mode swap needs PostgreSQL 18 or newer as target", "17"),
    (
        "not-postgres",
        "debian:bookworm",
        "link",
        None,
        "debian:bookworm does not look like a PostgreSQL image",
        "",
    ),
    # whichever check sees it first (preflight: its library is missing from the new image)
    (
        "target-lacks-extension",
        "17-3.5",
        "link",
        "CREATE EXTENSION IF NOT EXISTS old_snapshot",
        "",
        "old_snapshot",
    ),
]


@pytest.mark.parametrize(
    ("target", "mode", "setup", "start", "name"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_docker_and_kubernetes_refuse_alike(db15, kubelet, image_names, target, mode, setup, start, name):
    target = image_names.get(target, target)
    if setup:
        with db15.server().connect(db15.superuser) as conn:
            conn.execute(setup)
    try:
        proc = pgleap("upgrade", "docker", "--container", db15.name, "--to", target, "--mode", mode, "--yes")
        c, refused = kube_run(db15, kubelet, image_names, target, mode=mode)
    finally:
        if setup:
            with db15.server().connect(db15.superuser) as conn:
                conn.execute("DROP EXTENSION IF EXISTS old_snapshot")
    assert proc.returncode == EXIT_REFUSED, proc.stderr
    docker_text = flat(proc.stderr)
    kube_message = flat(refused.message)
    assert name in kube_message, kube_message
    assert kube_message.startswith(start), kube_message
    if start.endswith("PostgreSQL image"):  # the detail in parentheses is each runtime's own log
        kube_message = kube_message.split(" (", 1)[0]
    assert kube_message in docker_text, (kube_message, docker_text)
    assert non_probe_writes(c) == []
    assert [v for v, _ in probe_calls(c)] in (["create", "delete"], ["create", "delete"] * 2)
    assert db15.runtime.docker.containers.get(db15.name).status == "running"


def test_the_known_bad_pair_is_refused_alike(docker_client, kubelet, image_names):
    """17.12 → 18.6 (pg_attver): refused from the images alone, before any data is read."""
    volume = f"pgleap-test-empty-{uuid.uuid4().hex[:6]}"
    docker_client.volumes.create(volume)
    try:
        proc = pgleap(
            "upgrade",
            "docker",
            "--volume",
            volume,
            "--from",
            image_names["17-3.5"],
            "--to",
            image_names["18-3.x"],
            "--yes",
        )
    finally:
        docker_client.volumes.get(volume).remove(force=True)
    c = make_cluster("official-plain")
    sts = c.sts()
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = image_names["17-3.5"]
    c.fake.seed_for_test(sts)
    c.fake.pod_runner = docker_runner(kubelet, {})
    with pytest.raises(Refused) as exc:
        c.runtime.upgrade(c.namespace, c.name, image_names["18-3.x"], scripts=load_scripts(), job_env={})
    assert proc.returncode == EXIT_REFUSED, proc.stderr
    assert re.match(r"PostgreSQL 17\.\d+ -> 18\.\d+ breaks pg_upgrade", exc.value.message)
    assert flat(exc.value.message) in flat(proc.stderr)
    assert non_probe_writes(c) == []


def test_a_digest_pinned_statefulset_is_planned_and_read_live(db15, kubelet, image_names):
    """Neither reference names a version; the probe Pods (on Docker) and the live cluster decide."""
    c, (plan, _, _) = kube_run(db15, kubelet, image_names, DIGEST_NEW, image=DIGEST_OLD, plan=True)
    assert (plan.core.old_major, plan.core.new_major) == (15, 17)
    assert plan.core.glibc == ("2.36", "2.41") and plan.core.icu == ("72", "76")
    assert plan.job_env["PGLEAP_MAX_LOCKS"] == "0"  # decided by the live read: 200 rows need no more
    assert non_probe_writes(c) == []


# (id, extension, version written into pg_extension of the running 15 cluster, the message's start)
# A superuser's catalog edit stands in for versions no test image has: the live read of both
# runtimes sees the installed version in pg_extension, the probe of 17-3.5 what the target ships.
CATALOG_CASES = [
    (
        "target-ships-older",
        "hstore",
        "9.9",
        "the target image has hstore 1.8, older than the 9.9 installed in 'gis'",
    ),
    ("postgis-2", "postgis", "2.5.5", "PostGIS 2.x -> 3.x with pg_upgrade needs a manual step"),
]


@pytest.mark.parametrize(
    ("ext", "version", "start"), [c[1:] for c in CATALOG_CASES], ids=[c[0] for c in CATALOG_CASES]
)
def test_extension_versions_are_refused_alike(db15, kubelet, image_names, ext, version, start):
    target = image_names["17-3.5"]
    with db15.server().connect(db15.superuser) as conn:
        (was,) = conn.execute("SELECT extversion FROM pg_extension WHERE extname = %s", (ext,)).fetchone()
        conn.execute("UPDATE pg_extension SET extversion = %s WHERE extname = %s", (version, ext))
    try:
        proc = pgleap("upgrade", "docker", "--container", db15.name, "--to", target, "--yes")
        c, refused = kube_run(db15, kubelet, image_names, target)
    finally:
        with db15.server().connect(db15.superuser) as conn:
            conn.execute("UPDATE pg_extension SET extversion = %s WHERE extname = %s", (was, ext))
    assert proc.returncode == EXIT_REFUSED == refused.exit_code, proc.stderr
    kube_message = flat(refused.message)
    assert kube_message.startswith(start), kube_message
    assert kube_message in flat(proc.stderr), (kube_message, proc.stderr)
    assert flat(refused.hint) in flat(proc.stderr)
    assert non_probe_writes(c) == []
    assert db15.runtime.docker.containers.get(db15.name).status == "running"


def test_copy_mode_without_space_is_refused_alike(docker_client, kubelet, image_names):
    """A 15 cluster on a small tmpfs volume: --mode copy needs the data's size again, free."""
    from tests.conftest import remove_old, start_old
    from toolkit.docker.runtime import DockerRuntime

    rt = DockerRuntime(docker_client)
    name = f"pgleap-test-15-{uuid.uuid4().hex[:6]}"
    docker_client.volumes.create(name, driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=256m"})
    db = start_old(rt, image_names["15-3.3"], "15-3.3", seed_data=False, name=name)
    try:
        container = docker_client.containers.get(db.name)
        size = """df -Pk "$PGDATA" | awk 'NR == 2 {print $4}'; du -sk "$PGDATA" | cut -f1"""
        with db.server().connect(db.superuser) as conn:  # fill until the data needs more than is free
            conn.execute("CREATE TABLE filler (g int, pad text)")
            while True:
                free, used = map(int, container.exec_run(["sh", "-c", size]).output.split())
                if used * 1.1 > free * 1.3:
                    break
                conn.execute("INSERT INTO filler SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
                conn.execute("CHECKPOINT")
        target = image_names["17-3.5"]
        proc = pgleap("upgrade", "docker", "--container", db.name, "--to", target, "--mode", "copy", "--yes")
        c, refused = kube_run(db, kubelet, image_names, target, mode="copy")
    finally:
        remove_old(db)
    assert proc.returncode == EXIT_REFUSED == refused.exit_code, proc.stderr
    kube_message = flat(refused.message)
    assert "copy" in kube_message and "free" in kube_message, kube_message
    assert re.sub(r"\d[\d.,]* ?[KMG]i?B", "N", kube_message) in re.sub(
        r"\d[\d.,]* ?[KMG]i?B", "N", flat(proc.stderr)
    )
    assert non_probe_writes(c) == []
