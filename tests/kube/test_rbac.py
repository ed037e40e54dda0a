"""Every API call pgleap makes is allowed by manifests/rbac.yaml, and the fake matches the client."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.kube.fake_api import Call, FakeKubernetesApi
from tests.kube.harness import SCRIPTS, make_cluster
from tests.kube.test_replicas import REPLICA_CASES
from tests.kube.test_replicas import upgrade as upgrade_with_standbys
from tests.kube.test_runtime import CASES, Crash, crash_after_phase, upgrade
from tests.kube.validation import validate_strict
from toolkit import render
from toolkit.runtimes.kube import Outcome

RBAC = Path(__file__).resolve().parents[2] / "manifests" / "rbac.yaml"


def rules() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    docs = list(yaml.safe_load_all(RBAC.read_text()))
    role = next(d for d in docs if d["kind"] == "Role")
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
    return role["rules"], cluster_role["rules"]


def allowed(call: Call, rule_set: list[dict[str, Any]]) -> bool:
    return any(
        call.group in r["apiGroups"] and call.resource in r["resources"] and call.verb in r["verbs"]
        for r in rule_set
    )


def check_calls(calls: list[Call]) -> set[tuple[str, str, str]]:
    namespaced, cluster = rules()
    seen = set()
    for call in calls:
        rule_set = namespaced if call.namespace is not None else cluster
        assert allowed(call, rule_set), (
            f"{call.verb} {call.group}/{call.resource} is not in manifests/rbac.yaml"
        )
        seen.add((call.verb, call.group, call.resource))
    return seen


def every_path_calls() -> list[Call]:
    """Calls of: inspect, plan, status, upgrade, rerun, a crash + resume, rollback, finalize."""
    out: list[Call] = []
    for fixture in ("bitnami", "when-scaled-delete"):
        c = make_cluster(fixture)
        c.runtime.inspect(c.namespace, c.name)
        c.runtime.status(c.namespace, c.name)
        upgrade(c, fixture)
        upgrade(c, fixture)
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS)
        c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
        out += c.fake.calls
        c = make_cluster(fixture)
        crash_after_phase(c, "upgraded")
        with pytest.raises(Crash):
            upgrade(c, fixture, snapshot=True)
        c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
        c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
        out += [x for x in c.fake.calls if not x.detail.get("injected")]
    for fixture in REPLICA_CASES:  # standbys: read StatefulSet, re-seed/rollback/finalize Jobs
        c = make_cluster(fixture)
        c.runtime.plan(c.namespace, c.name, REPLICA_CASES[fixture][0], overrides=REPLICA_CASES[fixture][1])
        upgrade_with_standbys(c, fixture, standby_probe=lambda ctx, slots: slots)
        upgrade_with_standbys(c, fixture)
        c.runtime.status(c.namespace, c.name)
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS)
        c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
        out += c.fake.calls
        c = make_cluster(fixture)
        crash_after_phase(c, "reseeded")
        with pytest.raises(Crash):
            upgrade_with_standbys(c, fixture)
        c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
        c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
        out += [x for x in c.fake.calls if not x.detail.get("injected")]
    out += rehearsal_calls()
    return out


def rehearsal_calls() -> list[Call]:
    """Calls of `rehearse sts`: pg_basebackup, --from-snapshot with --keep, then --remove."""
    from tests.kube.test_rehearsal import Hooks, rehearse
    from toolkit.runtimes.kube_rehearsal import KubeRehearsal

    out: list[Call] = []
    c = make_cluster("official-plain")
    assert rehearse(c, Hooks())["verdict"] == "go"
    out += c.fake.calls
    c = make_cluster("bitnami")
    target = "docker.io/bitnamilegacy/postgresql:17.2.0-debian-12-r8"
    assert rehearse(c, Hooks(), target=target, from_snapshot=True, keep=True)["verdict"] == "go"
    KubeRehearsal(c.runtime).remove(c.namespace, c.name)
    out += c.fake.calls
    return out


def test_every_recorded_call_is_in_the_role() -> None:
    seen = check_calls(every_path_calls())
    # the run covered the interesting permissions (a test that checked nothing would pass too)
    for needed in [
        ("delete", "apps", "statefulsets"),
        ("create", "batch", "jobs"),
        ("get", "", "pods/log"),
        ("create", "snapshot.storage.k8s.io", "volumesnapshots"),
        ("get", "", "persistentvolumes"),
        ("list", "snapshot.storage.k8s.io", "volumesnapshotclasses"),
        ("patch", "", "configmaps"),
        ("create", "", "persistentvolumeclaims"),
        ("delete", "snapshot.storage.k8s.io", "volumesnapshots"),
        ("create", "", "services"),
    ]:
        assert needed in seen


def test_role_grants_nothing_unused() -> None:
    seen = check_calls(every_path_calls())
    namespaced, cluster = rules()
    granted = {
        (v, g, r)
        for rule in namespaced + cluster
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    # `update` on configmaps: used when the scripts change between runs (test below);
    # pods/exec and pods/portforward: the engine's post-upgrade hook (toolkit/kube_hook.py), which
    # tests/kube/test_pods_on_docker.py runs against real PostgreSQL and asserts it calls both.
    hook = {("create", "", "pods/exec"), ("create", "", "pods/portforward")}
    assert hook <= granted
    unused = granted - seen - {("update", "", "configmaps")} - hook
    assert unused == set(), f"rbac.yaml grants more than pgleap uses: {sorted(unused)}"


def test_changed_scripts_are_replaced_with_update() -> None:
    c = make_cluster("official-plain")
    plan, _, _ = c.runtime.plan(c.namespace, c.name, "pgleap/postgis:17-3.5")
    c.fake.seed_for_test(render.scripts_configmap(plan, SCRIPTS))
    out = Outcome("upgrade", "upgraded")
    c.runtime.ensure_scripts(plan, {**SCRIPTS, "lib.sh": "changed"}, out)
    assert [x.verb for x in c.fake.calls if x.resource == "configmaps"] == ["get", "update"]
    assert c.fake.get_for_test("ConfigMap", "geo", "pgleap-gis-scripts")["data"]["lib.sh"] == "changed"
    check_calls(c.fake.calls)
    c.runtime.ensure_scripts(plan, {**SCRIPTS, "lib.sh": "changed"}, out)
    assert out.unchanged == ["ConfigMap pgleap-gis-scripts up to date"]


def test_rbac_manifest_validates() -> None:
    for doc in yaml.safe_load_all(RBAC.read_text()):
        validate_strict(doc)


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_example_and_fixtures_parse(fixture: str) -> None:
    assert make_cluster(fixture).sts() is not None


def test_example_manifest_validates() -> None:
    path = RBAC.parent / "examples" / "postgis-statefulset.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert {d["kind"] for d in docs} == {"Service", "StatefulSet"}
    for doc in docs:
        validate_strict(doc)
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "value" not in env["POSTGRES_PASSWORD"] and env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]


API_CLASSES = (
    client.CoreV1Api,
    client.AppsV1Api,
    client.BatchV1Api,
    client.PolicyV1Api,
    client.CustomObjectsApi,
)


def test_fake_methods_match_the_client_signatures() -> None:
    """The fake takes its arguments in the client's order, so kube.py cannot drift from the real API."""
    checked = 0
    for name, method in inspect.getmembers(FakeKubernetesApi, inspect.isfunction):
        if name.startswith("_") or name.endswith("_for_test"):
            continue
        real = next((getattr(cls, name) for cls in API_CLASSES if hasattr(cls, name)), None)
        assert real is not None, f"{name} is not a client method"
        fake_params = [
            p for p in inspect.signature(method).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD
        ]
        real_params = list(inspect.signature(real).parameters)
        for p in fake_params[1:]:
            assert p.name in real_params, f"{name}: the client has no parameter {p.name}"
        positional = [p.name for p in fake_params[1:] if p.default is p.empty]
        assert real_params[1 : 1 + len(positional)] == positional, f"{name}: argument order differs"
        checked += 1
    assert checked >= 20
