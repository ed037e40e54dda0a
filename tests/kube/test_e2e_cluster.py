"""A real-cluster upgrade (kind or any test cluster), skipped unless PGLEAP_E2E_KUBECONFIG is set.

It creates its own namespace, applies manifests/examples/postgis-statefulset.yaml
on PGLEAP_E2E_OLD_IMAGE, seeds a table, upgrades to PGLEAP_E2E_NEW_IMAGE with the
runtime acting as manifests/rbac.yaml's ServiceAccount (a token, not the admin
kubeconfig) with the real post-upgrade hook, checks the fingerprint, the data and
PostGIS at the target's version, finalizes, and deletes the namespace.
scripts/kind-rehearsal.sh runs it with RUN_E2E=1.
"""

from __future__ import annotations

import contextlib
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
        with contextlib.suppress(client.ApiException):  # made by _role_kube, cluster-scoped
            client.RbacAuthorizationV1Api().delete_cluster_role_binding(f"pgleap-read-volumes-{ns}")


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


def _role_kube(namespace: str):
    """A Kube that acts as manifests/rbac.yaml's ServiceAccount (a short-lived token), not as admin.

    The Role, RoleBinding and ClusterRole(Binding) are applied by the admin with NAMESPACE set;
    every call of the upgrade and of the real post-upgrade hook then meets the Role's rules."""
    from kubernetes import client, utils

    from toolkit.kube.api import Kube

    admin = client.ApiClient()
    text = (ROOT / "manifests" / "rbac.yaml").read_text().replace("NAMESPACE", namespace)
    for doc in yaml.safe_load_all(text):
        try:
            utils.create_from_dict(admin, doc, namespace=namespace)
        except utils.FailToCreateError as exc:  # the ClusterRole is shared by every test namespace
            if any(e.status != 409 for e in exc.api_exceptions):
                raise
    token = (
        client.CoreV1Api(admin)
        .create_namespaced_service_account_token(
            "pgleap",
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
            ),
        )
        .status.token
    )
    conf = client.Configuration.get_default_copy()
    conf.api_key = {"authorization": f"Bearer {token}"}
    conf.cert_file = conf.key_file = None  # not the admin's client certificate
    conf.username = conf.password = None
    api = client.ApiClient(conf)
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(verb="delete", resource="namespaces")
            )
        )
    )
    assert not review.status.allowed, "the token must not be an admin's"
    return Kube(
        core=client.CoreV1Api(api),
        apps=client.AppsV1Api(api),
        batch=client.BatchV1Api(api),
        policy=client.PolicyV1Api(api),
        custom=client.CustomObjectsApi(api),
    )


def test_upgrade_on_a_real_cluster(namespace: str) -> None:
    """The upgrade as the Role's ServiceAccount, with the real post-upgrade hook: PostGIS at the
    target's version, the fingerprint identical, the PVC the same."""
    from kubernetes import client

    from toolkit.cli.kube import load_scripts
    from toolkit.db import verify
    from toolkit.kube.hooks import engine_fingerprint, engine_post_upgrade
    from toolkit.kube.runtime import HookContext, KubeRuntime

    core = client.CoreV1Api()
    _deploy(namespace)
    before = _psql(namespace, "SELECT count(*), sum(ST_X(g)) FROM t")
    pvc_uid = core.read_namespaced_persistent_volume_claim("data-gis-0", namespace).metadata.uid

    kube = _role_kube(namespace)
    runtime = KubeRuntime(kube)
    job_env = {"PGLEAP_SUPERUSER": "gis"}
    plan, _, _ = runtime.plan(namespace, "gis", NEW_IMAGE, job_env=job_env, snapshot=False)
    lines: list[str] = []

    def ctx() -> HookContext:
        return HookContext(kube, plan, namespace, "gis", "gis-0", "postgres", lines.append)

    fp_before = engine_fingerprint(ctx())
    fingerprints: list[verify.Fingerprint] = []

    def hook(c: HookContext) -> None:
        fingerprints.append(engine_fingerprint(c))  # right after pg_upgrade, before any repair
        engine_post_upgrade(c)  # the real hook: extensions, indexes, statistics, amcheck, PostGIS

    out = runtime.upgrade(
        namespace,
        "gis",
        NEW_IMAGE,
        scripts=load_scripts(SCRIPTS_DIR),
        job_env=job_env,
        snapshot=False,
        post_upgrade=hook,
    )
    assert out.phase == "done", out
    _wait_ready(namespace, NEW_IMAGE)
    assert any(line.startswith("extensions updated: ") for line in lines), lines
    assert fingerprints and verify.compare(fp_before, fingerprints[-1]).identical
    assert core.read_namespaced_persistent_volume_claim("data-gis-0", namespace).metadata.uid == pvc_uid
    assert _psql(namespace, "SELECT count(*), sum(ST_X(g)) FROM t") == before
    installed = _psql(namespace, "SELECT extversion FROM pg_extension WHERE extname = 'postgis'")
    available = _psql(namespace, "SELECT default_version FROM pg_available_extensions WHERE name = 'postgis'")
    assert installed == available, f"PostGIS {installed}, the target image offers {available}"
    assert "need upgrade" not in _psql(namespace, "SELECT postgis_full_version()")
    # a rerun changes nothing
    assert runtime.upgrade(namespace, "gis", NEW_IMAGE, scripts=load_scripts(SCRIPTS_DIR)).changed == []
    runtime.finalize(namespace, "gis", scripts=load_scripts(SCRIPTS_DIR))
    assert runtime.status(namespace, "gis")["phase"] is None


def test_rehearsal_on_a_real_cluster(namespace: str) -> None:
    """pg_basebackup clone of the running pod, upgraded on the side: go, production untouched."""
    from kubernetes import client

    from toolkit.cli.kube import load_scripts
    from toolkit.kube.hooks import engine_rehearsal_hooks
    from toolkit.kube.rehearsal import KubeRehearsal
    from toolkit.kube.runtime import KubeRuntime

    core = client.CoreV1Api()
    _deploy(namespace)
    _exec(namespace, ["sh", "-c", 'echo "host replication gis all md5" >> "$PGDATA/pg_hba.conf"'])
    _psql(namespace, "SELECT pg_reload_conf()")
    pod_uid = core.read_namespaced_pod("gis-0", namespace).metadata.uid
    result = KubeRehearsal(KubeRuntime(_role_kube(namespace))).rehearse(  # as the Role, too
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
