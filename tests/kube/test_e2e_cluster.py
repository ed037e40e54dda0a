"""A real-cluster upgrade (kind or any test cluster), skipped unless PGLEAP_E2E_KUBECONFIG is set.

It creates its own namespace, applies manifests/examples/postgis-statefulset.yaml
on PGLEAP_E2E_OLD_IMAGE, seeds a table, upgrades to PGLEAP_E2E_NEW_IMAGE with the
runtime, checks the data and PostGIS, finalizes, and deletes the namespace.
scripts/kind-rehearsal.sh runs it with RUN_E2E=1.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

KUBECONFIG = os.environ.get("PGLEAP_E2E_KUBECONFIG")
OLD_IMAGE = os.environ.get("PGLEAP_E2E_OLD_IMAGE", "pgleap/postgis:13-3.1")
NEW_IMAGE = os.environ.get("PGLEAP_E2E_NEW_IMAGE", "pgleap/postgis:17-3.5")
ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = ROOT / "toolkit" / "container"

pytestmark = [
    pytest.mark.skipif(
        not KUBECONFIG, reason="set PGLEAP_E2E_KUBECONFIG to a test cluster's kubeconfig to run"
    ),
    pytest.mark.skipif(
        not (SCRIPTS_DIR / "upgrade.sh").is_file(),
        reason="toolkit/container/upgrade.sh is not on this branch yet (the Job has nothing to run)",
    ),
    pytest.mark.slow,
]


@pytest.fixture
def namespace() -> Iterator[str]:
    from kubernetes import client, config

    config.load_kube_config(config_file=KUBECONFIG)
    core = client.CoreV1Api()
    ns = f"pgleap-e2e-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        yield ns
    finally:
        core.delete_namespace(ns)


def _psql(ns: str, sql: str) -> str:
    return _exec(ns, ["psql", "-U", "gis", "-d", "gis", "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])


def _exec(ns: str, cmd: list[str]) -> str:
    from kubernetes import client
    from kubernetes.stream import stream

    return stream(
        client.CoreV1Api().connect_get_namespaced_pod_exec,
        "gis-0",
        ns,
        container="postgres",
        command=cmd,
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    ).strip()


def _wait_ready(ns: str, image: str, timeout: float = 300) -> None:
    from kubernetes import client

    apps = client.AppsV1Api()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sts = apps.read_namespaced_stateful_set("gis", ns)
        if sts.status.ready_replicas == 1 and sts.spec.template.spec.containers[0].image == image:
            return
        time.sleep(3)
    raise AssertionError(f"gis in {ns} not ready on {image} after {timeout}s")


def _deploy(namespace: str) -> None:
    """The example StatefulSet on OLD_IMAGE with a fresh password Secret, ready, seeded."""
    from kubernetes import client, utils

    core = client.CoreV1Api()
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="gis-db"), string_data={"password": uuid.uuid4().hex}
        ),
    )
    docs = list(yaml.safe_load_all((ROOT / "manifests/examples/postgis-statefulset.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "StatefulSet":
            doc["spec"]["template"]["spec"]["containers"][0]["image"] = OLD_IMAGE
        utils.create_from_dict(client.ApiClient(), doc, namespace=namespace)
    _wait_ready(namespace, OLD_IMAGE)
    _psql(
        namespace,
        "CREATE EXTENSION postgis; "
        "CREATE TABLE t AS SELECT i, ST_MakePoint(i, i) AS g FROM generate_series(1, 1000) i",
    )


def test_upgrade_on_a_real_cluster(namespace: str) -> None:
    from kubernetes import client

    from toolkit.cli_kube import load_scripts
    from toolkit.kube import Kube
    from toolkit.runtimes.kube import KubeRuntime

    core = client.CoreV1Api()
    _deploy(namespace)
    before = _psql(namespace, "SELECT count(*), sum(ST_X(g)) FROM t")
    pvc_uid = core.read_namespaced_persistent_volume_claim("data-gis-0", namespace).metadata.uid

    runtime = KubeRuntime(Kube.connect(KUBECONFIG))
    out = runtime.upgrade(
        namespace,
        "gis",
        NEW_IMAGE,
        scripts=load_scripts(SCRIPTS_DIR),
        job_env={"PGLEAP_SUPERUSER": "gis"},
        snapshot=False,
    )
    assert out.phase == "done"
    _wait_ready(namespace, NEW_IMAGE)
    assert core.read_namespaced_persistent_volume_claim("data-gis-0", namespace).metadata.uid == pvc_uid
    assert _psql(namespace, "SELECT count(*), sum(ST_X(g)) FROM t") == before
    assert "POSTGIS=" in _psql(namespace, "SELECT postgis_full_version()")
    # a rerun changes nothing
    assert runtime.upgrade(namespace, "gis", NEW_IMAGE, scripts=load_scripts(SCRIPTS_DIR)).changed == []
    runtime.finalize(namespace, "gis", scripts=load_scripts(SCRIPTS_DIR))
    assert runtime.status(namespace, "gis")["phase"] is None


def test_rehearsal_on_a_real_cluster(namespace: str) -> None:
    """pg_basebackup clone of the running pod, upgraded on the side: go, production untouched."""
    from kubernetes import client

    from toolkit.cli_kube import load_scripts
    from toolkit.kube import Kube
    from toolkit.kube_hook import engine_rehearsal_hooks
    from toolkit.runtimes.kube import KubeRuntime
    from toolkit.runtimes.kube_rehearsal import KubeRehearsal

    core = client.CoreV1Api()
    _deploy(namespace)
    _exec(namespace, ["sh", "-c", 'echo "host replication gis all md5" >> "$PGDATA/pg_hba.conf"'])
    _psql(namespace, "SELECT pg_reload_conf()")
    pod_uid = core.read_namespaced_pod("gis-0", namespace).metadata.uid
    result = KubeRehearsal(KubeRuntime(Kube.connect(KUBECONFIG))).rehearse(
        namespace,
        "gis",
        NEW_IMAGE,
        scripts=load_scripts(SCRIPTS_DIR),
        hooks=engine_rehearsal_hooks(),
        job_env={"PGLEAP_SUPERUSER": "gis"},
    )
    assert result["verdict"] == "go", result
    assert result["fingerprint"]["identical"] and result["predicted_downtime_seconds"] > 0
    assert core.read_namespaced_pod("gis-0", namespace).metadata.uid == pod_uid
    left = core.list_namespaced_persistent_volume_claim(
        namespace, label_selector="pgleap.io/rehearsal-of=gis"
    )
    assert left.items == []
