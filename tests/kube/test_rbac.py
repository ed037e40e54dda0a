"""Every API call pgleap makes is allowed by manifests/rbac.yaml, and the fake matches the client."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream as real_stream
from kubernetes.stream import ws_client
from websocket import WebSocketBadStatusException

from tests.kube.fake_api import Call, FakeKubernetesApi
from tests.kube.harness import SCRIPTS, make_cluster
from tests.kube.test_replicas import REPLICA_CASES
from tests.kube.test_replicas import upgrade as upgrade_with_standbys
from tests.kube.test_runtime import CASES, Crash, crash_after_phase, upgrade
from tests.kube.validation import validate_strict
from toolkit.kube import render
from toolkit.kube.api import Forbidden, Kube
from toolkit.kube.model import Outcome

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
        upgrade(c, fixture, mode="copy")  # copy: a rollback after the new cluster ran is allowed
        upgrade(c, fixture, mode="copy")
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=lambda _loss: True)
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
        upgrade_with_standbys(c, fixture, standby_probe=lambda ctx, slots: slots, mode="copy")
        upgrade_with_standbys(c, fixture, mode="copy")
        c.runtime.status(c.namespace, c.name)
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=lambda _loss: True)
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
    out += probe_calls()
    return out


def probe_calls() -> list[Call]:
    """Calls of a probed plan and a probed upgrade: the probe Pods (create, get, log, delete)."""
    from tests.kube.probes import PROBE_SCRIPTS, recorded_runner

    c = make_cluster("official-plain")
    c.fake.pod_runner = recorded_runner()
    c.runtime.plan(c.namespace, c.name, "pgleap/postgis:17-3.5", scripts=PROBE_SCRIPTS)
    c.runtime.upgrade(c.namespace, c.name, "pgleap/postgis:17-3.5", scripts=PROBE_SCRIPTS)
    return c.fake.calls


def rehearsal_calls() -> list[Call]:
    """Calls of `rehearse sts`: pg_basebackup, --from-snapshot with --keep, then --remove."""
    from tests.kube.test_rehearsal import Hooks, rehearse
    from toolkit.kube.rehearsal import KubeRehearsal

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
        ("create", "", "pods"),
        ("delete", "", "pods"),
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
    # pods/exec and pods/portforward: the post-upgrade hook's subresource calls, as the real
    # client sends them and API servers of both generations authorise them.
    hook: set[tuple[str, str, str]] = set()
    for version in SERVER_VERSIONS:
        server = WebSocketServer(version, namespaced)
        subresource_calls(server)
        hook |= {(v, "", r) for v, r in server.authorised}
    assert hook == {(v, "", r) for v in ("get", "create") for r in ("pods/exec", "pods/portforward")}
    unused = granted - seen - {("update", "", "configmaps")} - hook
    assert unused == set(), f"rbac.yaml grants more than pgleap uses: {sorted(unused)}"


SERVER_VERSIONS = [(1, 34), (1, 35)]


class Opened(Exception):
    """The handshake was authorised: stop here (no frames are modelled)."""


class WebSocketServer:
    """The API server's side of `kubernetes.stream`: records each request the client really sends
    (HTTP method + subresource) and authorises it as an API server of `version` would: a WebSocket
    GET on pods/exec|portforward needs `get` before 1.35 and `get` + `create` from 1.35."""

    def __init__(self, version: tuple[int, int], rule_set: list[dict[str, Any]]) -> None:
        self.version, self.rules = version, rule_set
        self.requests: list[tuple[str, str, str]] = []  # (method, namespace, subresource)
        self.authorised: list[tuple[str, str]] = []

    def verbs(self, method: str) -> list[str]:
        assert method == "GET", method  # a WebSocket opening handshake is an HTTP GET (RFC 6455)
        return ["get"] if self.version < (1, 35) else ["get", "create"]

    def websocket_request(self, real: Any, configuration: Any, method: str, url: str, **kw: Any) -> Any:
        parts = urlparse(url).path.split("/")  # /api/v1/namespaces/NS/pods/NAME/SUB
        assert parts[1:4] == ["api", "v1", "namespaces"] and parts[5] == "pods", url
        namespace, resource = parts[4], f"pods/{parts[7]}"
        self.requests.append((method, namespace, resource))
        for verb in self.verbs(method):
            if not allowed(Call(verb, "", resource, namespace, None), self.rules):
                # what websocket-client raises for a refused upgrade (ws_client wraps it: status=0)
                msg = "Handshake status 403 Forbidden -+-+- {} -+-+- None"
                self.handshake_error = WebSocketBadStatusException(msg, 403, "Forbidden")
                break
            self.authorised.append((verb, resource))
        else:
            self.handshake_error = Opened("handshake accepted")
        return real(configuration, method, url, **kw)

    def create_websocket(self, configuration: Any, url: str, headers: Any = None) -> Any:
        raise self.handshake_error


def subresource_calls(server: WebSocketServer) -> list[Exception]:
    """Run Kube.exec and Kube.port_forward through the real client against `server`."""
    import kubernetes.stream as kstream

    api = client.ApiClient(client.Configuration(host="https://api.invalid"))
    kube = Kube(core=client.CoreV1Api(api), apps=None, batch=None, policy=None, custom=None)
    wrap = functools.partial
    saved = (kstream.stream, kstream.portforward, ws_client.create_websocket)
    inner = real_stream.func  # _websocket_request
    kstream.stream = wrap(inner, wrap(server.websocket_request, ws_client.websocket_call), None)
    kstream.portforward = wrap(
        inner, wrap(server.websocket_request, ws_client.portforward_call), {"_preload_content": False}
    )
    ws_client.create_websocket = server.create_websocket
    errors: list[Exception] = []
    try:
        for call in (
            lambda: kube.exec("geo", "gis-0", "postgres", ["printenv", "POSTGRES_PASSWORD"]),
            lambda: kube.port_forward("geo", "gis-0", 5432),
        ):
            try:
                call()
            except (ApiException, Forbidden) as exc:
                errors.append(exc)
    finally:
        kstream.stream, kstream.portforward, ws_client.create_websocket = saved
    return errors


@pytest.mark.parametrize("version", SERVER_VERSIONS)
def test_exec_and_port_forward_are_authorised_by_the_role(version: tuple[int, int]) -> None:
    server = WebSocketServer(version, rules()[0])
    errors = subresource_calls(server)
    assert server.requests == [("GET", "geo", "pods/exec"), ("GET", "geo", "pods/portforward")]
    assert [getattr(e, "reason", None) for e in errors] == ["handshake accepted"] * 2, errors


@pytest.mark.parametrize("version", SERVER_VERSIONS)
def test_a_refused_handshake_names_the_missing_verb(version: tuple[int, int]) -> None:
    """The Role of before (only `create`): the 403 arrives as status 0 and must still be named."""
    old_role = [{**r, "verbs": ["create"]} if "pods/exec" in r["resources"] else r for r in rules()[0]]
    errors = subresource_calls(WebSocketServer(version, old_role))
    assert [type(e) for e in errors] == [Forbidden, Forbidden], errors
    assert "needs 'get' and 'create' on pods/exec in namespace geo" in str(errors[0])
    assert "pods/portforward" in str(errors[1])


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
