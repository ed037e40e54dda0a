"""Rules an API server enforces that the fake models, each with the tool held to it.

Garbage collection and adoption (ownerReferences, propagationPolicy), Pod Security
admission (`restricted`), and fields the typed client does not know (the server keeps
them; a StatefulSet recreated from a typed read would silently lose them).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from tests.kube.fake_api import reconcile_for_test, restricted_violations
from tests.kube.harness import JOB_ENV, SCRIPTS, Cluster, make_cluster
from tests.kube.test_runtime import accept
from toolkit.errors import PgleapError
from toolkit.kube import render

TARGET = "pgleap/postgis:17-3.5"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def _edit_sts(c: Cluster, change: Any) -> None:
    """Change the user's StatefulSet as the server holds it, then let the controller act."""
    raw = c.fake.raw_for_test("StatefulSet", c.namespace, c.name)
    change(raw)
    c.fake._store("StatefulSet", raw)
    reconcile_for_test(c.fake, c.namespace, c.name)


def _upgrade(c: Cluster, **kw: Any):
    return c.runtime.upgrade(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, **kw)


# -- garbage collection and adoption ---------------------------------------------------------


def test_deleting_a_statefulset_collects_its_pods_and_owned_claims_unless_orphan() -> None:
    c = make_cluster("when-scaled-delete")  # whenDeleted: Delete → the claim is owned by the sts
    (pvc,) = [n for (_, k, n) in c.fake.objects if k == "PersistentVolumeClaim"]
    assert c.fake.get_for_test("PersistentVolumeClaim", c.namespace, pvc) is not None
    c.fake.delete_namespaced_stateful_set(c.name, c.namespace, propagation_policy="Orphan")
    assert c.fake.get_for_test("Pod", c.namespace, f"{c.name}-0") is not None  # orphaned, running
    claim = c.fake.get_for_test("PersistentVolumeClaim", c.namespace, pvc)
    refs = claim["metadata"].get("ownerReferences") or []
    assert refs and not [r for r in refs if r["kind"] == "StatefulSet"]  # only the pod's is left
    c = make_cluster("when-scaled-delete")
    c.fake.delete_namespaced_stateful_set(c.name, c.namespace)  # Background: the default
    assert c.fake.get_for_test("Pod", c.namespace, f"{c.name}-0") is None
    assert c.fake.get_for_test("PersistentVolumeClaim", c.namespace, pvc) is None  # the database


def test_upgrade_of_an_on_delete_statefulset_runs_the_new_image() -> None:
    """The tool stops the pods before the switch: an orphaned running pod would be adopted
    by the new StatefulSet as it is, on the old image, and never restarted (OnDelete)."""
    c = make_cluster("official-plain")
    _edit_sts(c, lambda s: s["spec"].__setitem__("updateStrategy", {"type": "OnDelete"}))
    assert _upgrade(c).phase == "done"
    pod = c.fake.get_for_test("Pod", c.namespace, "gis-0")
    assert pod["spec"]["containers"][0]["image"] == TARGET
    assert pod["metadata"]["ownerReferences"][0]["uid"] == c.sts()["metadata"]["uid"]


def test_the_fake_catches_a_switch_without_the_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break the rule (switch while the pod runs): the pod is adopted on the old image."""
    c = make_cluster("official-plain")
    _edit_sts(c, lambda s: s["spec"].__setitem__("updateStrategy", {"type": "OnDelete"}))
    monkeypatch.setattr(type(c.runtime), "_wait_pod_gone", lambda *a, **k: None)
    real_patch = c.kube.patch

    def no_scale_down(kind, ns, name, body, *a, **k):
        if kind == "StatefulSet" and (body.get("spec") or {}).get("replicas") == 0:
            return c.kube.get(kind, ns, name)
        return real_patch(kind, ns, name, body, *a, **k)

    monkeypatch.setattr(c.kube, "patch", no_scale_down)
    with contextlib.suppress(PgleapError):
        _upgrade(c)
    pod = c.fake.get_for_test("Pod", c.namespace, "gis-0")
    assert pod["spec"]["containers"][0]["image"] == "pgleap/postgis:13-3.1"  # caught: never restarted


# -- Pod Security admission --------------------------------------------------------------------


def _restricted_cluster() -> Cluster:
    """official-plain in a namespace enforcing `restricted`, its own pod template compliant."""
    c = make_cluster("official-plain")

    def comply(s: dict[str, Any]) -> None:
        spec = s["spec"]["template"]["spec"]
        spec["securityContext"] = {
            "runAsNonRoot": True,
            "runAsUser": 999,
            "runAsGroup": 999,
            "fsGroup": 999,
        }
        for ctr in spec["containers"]:  # seccomp per container: a Job's containers need their own
            ctr["securityContext"] = {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            }

    _edit_sts(c, comply)
    c.fake.namespace_labels[c.namespace] = dict(RESTRICTED)
    return c


def test_every_pod_pgleap_makes_passes_restricted_admission() -> None:
    c = _restricted_cluster()
    assert _upgrade(c, mode="copy").phase == "done"
    assert c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept).phase == "rolled-back"
    assert c.fake.denied == []


@pytest.mark.parametrize("dropped", ["allowPrivilegeEscalation", "capabilities"])
def test_a_job_breaking_restricted_is_refused_in_a_restricted_namespace(
    dropped: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break the rule (a container securityContext short of `restricted`): the Job gets no pod.

    (seccompProfile is set at the pod level of every Job template, which also satisfies it.)"""
    c = _restricted_cluster()
    real = render.container_security

    def short(plan):
        sc = real(plan)
        sc.pop(dropped)
        return sc

    monkeypatch.setattr(render, "container_security", short)
    with pytest.raises(PgleapError):
        _upgrade(c)  # the Job never gets a pod: the wait for it times out
    assert c.fake.denied and all(dropped in d or "drop lacks ALL" in d for d in c.fake.denied)
    assert c.fake.get_for_test("Job", c.namespace, "pgleap-gis-upgrade") is not None


def test_restricted_violations_named() -> None:
    spec = {
        "hostPID": True,
        "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
        "containers": [{"name": "x", "securityContext": {"runAsUser": 0, "privileged": True}}],
    }
    bad = " | ".join(restricted_violations(spec))
    for word in ("hostPID", "hostPath", "privileged", "runAsUser=0", "seccompProfile", "drop lacks ALL"):
        assert word in bad


# -- fields the client does not know -----------------------------------------------------------


def _with_unknown_field(c: Cluster) -> None:
    _edit_sts(c, lambda s: s["spec"]["template"]["spec"].__setitem__("futureField", {"keep": "me"}))


def test_the_fake_keeps_fields_the_client_drops() -> None:
    c = make_cluster("official-plain")
    _with_unknown_field(c)
    assert c.fake.raw_for_test("StatefulSet", c.namespace, c.name)["spec"]["template"]["spec"]["futureField"]
    typed = c.fake.get_for_test("StatefulSet", c.namespace, c.name)
    assert "futureField" not in typed["spec"]["template"]["spec"]  # what a typed read gives


def test_upgrade_and_rollback_keep_a_field_the_client_does_not_know() -> None:
    c = make_cluster("official-plain")
    _with_unknown_field(c)
    assert _upgrade(c, mode="copy").phase == "done"
    raw = c.fake.raw_for_test("StatefulSet", c.namespace, c.name)
    assert raw["spec"]["template"]["spec"].get("futureField") == {"keep": "me"}  # the new StatefulSet
    c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    raw = c.fake.raw_for_test("StatefulSet", c.namespace, c.name)
    assert raw["spec"]["template"]["spec"].get("futureField") == {"keep": "me"}  # the original again
