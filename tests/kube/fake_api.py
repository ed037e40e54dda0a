"""A stateful, recording fake of the Kubernetes API at the client boundary (safir-style).

One object stands in for CoreV1Api, AppsV1Api, BatchV1Api, PolicyV1Api and
CustomObjectsApi. Built-in objects are kept as real client models by
namespace/kind/name, custom objects as dicts; misses and clashes raise the
client's own `ApiException` (404/409). Every call is logged with its RBAC verb
and resource, `error_hook` can make any call fail, and a small controller
simulation (StatefulSet pods, Job completion, snapshot readiness) can be turned
off to drive those transitions by hand through the `*_for_test` helpers.

Jobs do not simply succeed: the main container of an upgrade/rollback/rollback-check/
finalize Job follows a model of upgrade.sh's rules on its data volume (`volumes`),
so a link rollback after the new cluster ran fails as it does on a cluster;
`job_results` still forces an outcome by Job name.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

MERGE_PATCH = "application/merge-patch+json"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})

# kind → (RBAC group, resource, model class name or None for custom objects, namespaced)
KINDS: dict[str, tuple[str, str, str | None, bool]] = {
    "StatefulSet": ("apps", "statefulsets", "V1StatefulSet", True),
    "Pod": ("", "pods", "V1Pod", True),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims", "V1PersistentVolumeClaim", True),
    "PersistentVolume": ("", "persistentvolumes", "V1PersistentVolume", False),
    "Service": ("", "services", "V1Service", True),
    "ConfigMap": ("", "configmaps", "V1ConfigMap", True),
    "Job": ("batch", "jobs", "V1Job", True),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets", "V1PodDisruptionBudget", True),
    "VolumeSnapshot": ("snapshot.storage.k8s.io", "volumesnapshots", None, True),
    "VolumeSnapshotClass": ("snapshot.storage.k8s.io", "volumesnapshotclasses", None, False),
}
_API_VERSION = {
    "StatefulSet": "apps/v1",
    "Job": "batch/v1",
    "PodDisruptionBudget": "policy/v1",
    "VolumeSnapshot": "snapshot.storage.k8s.io/v1",
    "VolumeSnapshotClass": "snapshot.storage.k8s.io/v1",
}
# What an API server lets a StatefulSet update change (apps/v1 validation).
_STS_MUTABLE = frozenset(
    {
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
        "revisionHistoryLimit",
    }
)
_PLURAL_KIND = {"volumesnapshots": "VolumeSnapshot", "volumesnapshotclasses": "VolumeSnapshotClass"}


@dataclass(frozen=True)
class Call:
    """One API call as RBAC sees it."""

    verb: str
    group: str
    resource: str
    namespace: str | None
    name: str | None
    detail: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS


class _LogResponse:
    """What `read_namespaced_pod_log(..., _preload_content=False)` hands back: a stream."""

    def __init__(self, text: str) -> None:
        self._data = text.encode()

    def stream(self, amt: int = 2**16) -> Any:
        for i in range(0, len(self._data), 7):  # small chunks: exercise line reassembly
            yield self._data[i : i + 7]

    def release_conn(self) -> None:
        pass


class _RawResponse:
    """What a read with `_preload_content=False` hands back: the JSON body, undecoded."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj).encode()

    def release_conn(self) -> None:
        pass


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _api_error(status: int, reason: str, message: str = "") -> ApiException:
    return ApiException(status=status, reason=reason, body=message or reason)


class FakeKubernetesApi:
    """The fake cluster. Pass it as every API object of `toolkit.kube.api.Kube`."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str | None, str, str], Any] = {}
        # what the API server holds, every field kept: `objects` is what a typed client read
        # deserializes (from_dict drops fields its model lacks, as the real client does)
        self.raw: dict[tuple[str | None, str, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.logs: dict[tuple[str, str, str], str] = {}
        self.error_hook: Callable[[Call], Exception | None] | None = None
        self.simulate = True  # StatefulSet/Job/snapshot controllers act at once
        self.namespace_labels: dict[str, dict[str, str]] = {}  # Pod Security admission reads these
        self.denied: list[str] = []  # pods Pod Security admission refused (a controller's FailedCreate)
        self.job_results: dict[str, str] = {}  # job name → "Complete" | "Failed" | "Running"
        # (namespace, claim) → upgrade.sh's state on that volume: placed, mode, new_ran
        self.volumes: dict[tuple[str, str], dict[str, Any]] = {}
        self.node = "node-a"
        self.nodes: dict[str, str] = {}  # pod name → node, where it differs from `node`
        # Bare Pods pgleap creates (the image probes): pod → (phase, log of its one container).
        # None leaves them Pending, as a cluster that cannot pull the image would.
        self.pod_runner: Callable[[dict[str, Any]], tuple[str, str]] | None = None
        self._serial = itertools.count(1)
        self._serializer = client.ApiClient.__new__(client.ApiClient)

    # -- storage ----------------------------------------------------------------------------

    def _dict(self, obj: Any) -> dict[str, Any]:
        return (
            copy.deepcopy(obj) if isinstance(obj, dict) else self._serializer.sanitize_for_serialization(obj)
        )

    def _store(self, kind: str, data: dict[str, Any]) -> Any:
        model = KINDS[kind][2]
        data = copy.deepcopy(data)
        data.setdefault("apiVersion", _API_VERSION.get(kind, "v1"))
        data.setdefault("kind", kind)
        meta = data.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._serial))
        meta.setdefault("uid", f"uid-{next(self._serial)}")
        ns = meta.get("namespace") if KINDS[kind][3] else None
        obj = data if model is None else getattr(client, model).from_dict(data)
        self.objects[(ns, kind, meta["name"])] = obj
        self.raw[(ns, kind, meta["name"])] = copy.deepcopy(data)
        return copy.deepcopy(obj)

    def _find(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        key = (namespace if KINDS[kind][3] else None, kind, name)
        if key not in self.objects:
            raise _api_error(404, "Not Found", f'{KINDS[kind][1]} "{name}" not found')
        return self._dict(self.objects[key])

    def _record(
        self, verb: str, kind: str, namespace: str | None, name: str | None, sub: str = "", **detail: Any
    ):
        group, resource, _, namespaced = KINDS[kind]
        call = Call(
            verb,
            group,
            resource + (f"/{sub}" if sub else ""),
            namespace if namespaced else None,
            name,
            detail,
        )
        self.calls.append(call)
        if self.error_hook:
            exc = self.error_hook(call)
            if exc is not None:
                call.detail["injected"] = True  # the call failed before reaching the "server"
                raise exc

    def _create(self, kind: str, namespace: str | None, body: Any) -> Any:
        data = self._dict(body)
        meta = data.setdefault("metadata", {})
        if KINDS[kind][3]:
            if meta.get("namespace") not in (None, namespace):
                raise _api_error(400, "Bad Request", "the namespace of the object does not match the request")
            meta["namespace"] = namespace
        self._record("create", kind, namespace, meta.get("name"), body=copy.deepcopy(data))
        if not meta.get("name"):
            raise _api_error(422, "Unprocessable Entity", "metadata.name: Required value")
        if (namespace if KINDS[kind][3] else None, kind, meta["name"]) in self.objects:
            raise _api_error(409, "Conflict", f'{KINDS[kind][1]} "{meta["name"]}" already exists')
        if kind == "Pod":
            self._admit_pod(namespace or "", meta["name"], data.get("spec") or {})
        meta["uid"] = f"uid-{next(self._serial)}"
        meta["creationTimestamp"] = dt.datetime(2026, 11, 25, tzinfo=dt.UTC).isoformat()
        stored = self._store(kind, data)
        self._after_write(kind, namespace, meta["name"])
        return self._read_back(kind, namespace, meta["name"], stored)

    def _raw(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.raw[(namespace if KINDS[kind][3] else None, kind, name)])

    def _read_back(self, kind: str, namespace: str | None, name: str, fallback: Any) -> Any:
        key = (namespace if KINDS[kind][3] else None, kind, name)
        return copy.deepcopy(self.objects.get(key, fallback))

    def _get(self, kind: str, namespace: str | None, name: str) -> Any:
        self._record("get", kind, namespace, name)
        self._find(kind, namespace, name)
        return copy.deepcopy(self.objects[(namespace if KINDS[kind][3] else None, kind, name)])

    def _list(self, kind: str, namespace: str | None, label_selector: str | None = None) -> list[Any]:
        self._record("list", kind, namespace, None)
        wanted = dict(p.split("=", 1) for p in label_selector.split(",")) if label_selector else {}
        out = []
        for (ns, k, _), obj in sorted(self.objects.items(), key=lambda kv: str(kv[0])):
            if k != kind or (KINDS[kind][3] and namespace is not None and ns != namespace):
                continue
            labels = (self._dict(obj).get("metadata") or {}).get("labels") or {}
            if all(labels.get(a) == b for a, b in wanted.items()):
                out.append(copy.deepcopy(obj))
        return out

    def _patch(self, kind: str, namespace: str, name: str, body: Any, content_type: str | None) -> Any:
        self._record("patch", kind, namespace, name, patch=copy.deepcopy(body))
        if content_type != MERGE_PATCH or not isinstance(body, dict):
            # The real client defaults to application/json-patch+json, which a dict body breaks.
            raise _api_error(400, "Bad Request", f"unsupported patch (content type {content_type})")
        self._find(kind, namespace, name)
        current = self._raw(kind, namespace, name)  # the server patches what it holds, all fields
        self._check_precondition(kind, name, current, body)
        merged = _merge_patch(current, body)
        self._check_immutable(kind, name, current, merged)
        self._store(kind, merged)
        self._after_write(kind, namespace, name, before=current)
        return self._read_back(kind, namespace, name, None)

    @staticmethod
    def _check_precondition(kind: str, name: str, current: dict[str, Any], body: dict[str, Any]) -> None:
        """A write that names a resourceVersion applies only to that version (optimistic locking)."""
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        have = (current.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != have:
            raise _api_error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {KINDS[kind][1]} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )

    @staticmethod
    def _check_immutable(kind: str, name: str, current: dict[str, Any], new: dict[str, Any]) -> None:
        """The API server refuses changes to a StatefulSet's spec outside the mutable fields."""
        if kind != "StatefulSet":
            return
        old_spec, new_spec = current.get("spec") or {}, new.get("spec") or {}
        changed = sorted(
            k
            for k in set(old_spec) | set(new_spec)
            if k not in _STS_MUTABLE and old_spec.get(k) != new_spec.get(k)
        )
        if changed:
            raise _api_error(
                422,
                "Unprocessable Entity",
                f'StatefulSet.apps "{name}" is invalid: spec: Forbidden: updates to statefulset spec for '
                f"fields other than {', '.join(sorted(_STS_MUTABLE))} are forbidden (changed: {changed})",
            )

    def _replace(self, kind: str, namespace: str, name: str, body: Any) -> Any:
        self._record("update", kind, namespace, name)
        current = self._find(kind, namespace, name)
        data = self._dict(body)
        self._check_precondition(kind, name, current, data)
        self._check_immutable(kind, name, current, data)
        data.setdefault("metadata", {})["namespace"] = namespace
        self._store(kind, data)
        return self._read_back(kind, namespace, name, None)

    def _delete(self, kind: str, namespace: str, name: str, propagation_policy: str | None = None) -> Any:
        self._record("delete", kind, namespace, name, propagation=propagation_policy)
        self._find(kind, namespace, name)
        key = (namespace if KINDS[kind][3] else None, kind, name)
        uid = (self.raw[key].get("metadata") or {}).get("uid")
        self._drop(key)
        # The garbage collector: dependents (ownerReferences to the deleted uid) go with it,
        # or lose that reference with Orphan. An API delete of a Job orphans its pods unless
        # told otherwise (batch/v1's legacy default); other kinds default to Background.
        policy = propagation_policy or ("Orphan" if kind == "Job" else "Background")
        for dkey, dep in list(self.raw.items()):
            refs = (dep.get("metadata") or {}).get("ownerReferences") or []
            if not uid or not any(r.get("uid") == uid for r in refs):
                continue
            if policy == "Orphan":
                dep["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid] or None
                self._store(dkey[1], dep)
            else:
                self._drop(dkey)
        return client.V1Status(status="Success")

    def _drop(self, key: tuple[str | None, str, str]) -> None:
        self.objects.pop(key, None)
        self.raw.pop(key, None)

    # -- AppsV1Api --------------------------------------------------------------------------

    def read_namespaced_stateful_set(self, name: str, namespace: str, **kw: Any) -> Any:
        obj = self._get("StatefulSet", namespace, name)
        if kw.get("_preload_content") is False:  # the undecoded response: every field the server has
            return _RawResponse(self._raw("StatefulSet", namespace, name))
        return obj

    def create_namespaced_stateful_set(self, namespace: str, body: Any, **_: Any) -> Any:
        # the client serializes a V1StatefulSet (fields its model lacks are gone) or a dict as it is
        assert isinstance(body, client.V1StatefulSet | dict), "the client takes a V1StatefulSet or a dict"
        return self._create("StatefulSet", namespace, body)

    def patch_namespaced_stateful_set(
        self, name: str, namespace: str, body: Any, _content_type=None, **_: Any
    ):
        return self._patch("StatefulSet", namespace, name, body, _content_type)

    def delete_namespaced_stateful_set(self, name: str, namespace: str, propagation_policy=None, **_: Any):
        return self._delete("StatefulSet", namespace, name, propagation_policy)

    # -- CoreV1Api --------------------------------------------------------------------------

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> Any:
        return self._get("Pod", namespace, name)

    def list_namespaced_pod(self, namespace: str, label_selector: str | None = None, **_: Any) -> Any:
        return client.V1PodList(items=self._list("Pod", namespace, label_selector))

    def create_namespaced_pod(self, namespace: str, body: client.V1Pod, **_: Any) -> Any:
        assert isinstance(body, client.V1Pod), "the client takes a V1Pod"
        return self._create("Pod", namespace, body)

    def delete_namespaced_pod(self, name: str, namespace: str, propagation_policy=None, **_: Any):
        return self._delete("Pod", namespace, name, propagation_policy)

    def read_namespaced_pod_log(
        self, name: str, namespace: str, container: str | None = None, follow: bool | None = None, **kw: Any
    ) -> Any:
        self._record("get", "Pod", namespace, name, sub="log", container=container, follow=follow)
        self._find("Pod", namespace, name)
        text = self.logs.get((namespace, name, container or ""), "")
        return _LogResponse(text) if kw.get("_preload_content") is False else text

    def read_namespaced_persistent_volume_claim(self, name: str, namespace: str, **_: Any) -> Any:
        return self._get("PersistentVolumeClaim", namespace, name)

    def list_namespaced_persistent_volume_claim(
        self, namespace: str, label_selector: str | None = None, **_: Any
    ) -> Any:
        return client.V1PersistentVolumeClaimList(
            items=self._list("PersistentVolumeClaim", namespace, label_selector)
        )

    def create_namespaced_persistent_volume_claim(
        self, namespace: str, body: client.V1PersistentVolumeClaim, **_: Any
    ) -> Any:
        assert isinstance(body, client.V1PersistentVolumeClaim)
        return self._create("PersistentVolumeClaim", namespace, body)

    def delete_namespaced_persistent_volume_claim(
        self, name: str, namespace: str, propagation_policy=None, **_: Any
    ):
        return self._delete("PersistentVolumeClaim", namespace, name, propagation_policy)

    def read_persistent_volume(self, name: str, **_: Any) -> Any:
        return self._get("PersistentVolume", None, name)

    def list_namespaced_service(self, namespace: str, label_selector: str | None = None, **_: Any) -> Any:
        return client.V1ServiceList(items=self._list("Service", namespace, label_selector))

    def read_namespaced_service(self, name: str, namespace: str, **_: Any) -> Any:
        return self._get("Service", namespace, name)

    def create_namespaced_service(self, namespace: str, body: client.V1Service, **_: Any) -> Any:
        assert isinstance(body, client.V1Service)
        return self._create("Service", namespace, body)

    def patch_namespaced_service(self, name: str, namespace: str, body: Any, _content_type=None, **_: Any):
        return self._patch("Service", namespace, name, body, _content_type)

    def delete_namespaced_service(self, name: str, namespace: str, propagation_policy=None, **_: Any):
        return self._delete("Service", namespace, name, propagation_policy)

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> Any:
        return self._get("ConfigMap", namespace, name)

    def create_namespaced_config_map(self, namespace: str, body: client.V1ConfigMap, **_: Any) -> Any:
        assert isinstance(body, client.V1ConfigMap)
        return self._create("ConfigMap", namespace, body)

    def replace_namespaced_config_map(self, name: str, namespace: str, body: client.V1ConfigMap, **_: Any):
        assert isinstance(body, client.V1ConfigMap)
        return self._replace("ConfigMap", namespace, name, body)

    def patch_namespaced_config_map(self, name: str, namespace: str, body: Any, _content_type=None, **_: Any):
        return self._patch("ConfigMap", namespace, name, body, _content_type)

    def delete_namespaced_config_map(self, name: str, namespace: str, propagation_policy=None, **_: Any):
        return self._delete("ConfigMap", namespace, name, propagation_policy)

    # -- BatchV1Api -------------------------------------------------------------------------

    def read_namespaced_job(self, name: str, namespace: str, **_: Any) -> Any:
        return self._get("Job", namespace, name)

    def create_namespaced_job(self, namespace: str, body: client.V1Job, **_: Any) -> Any:
        assert isinstance(body, client.V1Job)
        return self._create("Job", namespace, body)

    def delete_namespaced_job(self, name: str, namespace: str, propagation_policy=None, **_: Any):
        return self._delete("Job", namespace, name, propagation_policy)

    # -- PolicyV1Api ------------------------------------------------------------------------

    def list_namespaced_pod_disruption_budget(self, namespace: str, label_selector=None, **_: Any) -> Any:
        return client.V1PodDisruptionBudgetList(
            items=self._list("PodDisruptionBudget", namespace, label_selector)
        )

    # -- CustomObjectsApi -------------------------------------------------------------------

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **_
    ):
        return self._dict(self._get(_PLURAL_KIND[plural], namespace, name))

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body, **_
    ):
        assert isinstance(body, dict)
        return self._dict(self._create(_PLURAL_KIND[plural], namespace, body))

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, propagation_policy=None, **_
    ):
        self._delete(_PLURAL_KIND[plural], namespace, name, propagation_policy)
        return {"status": "Success"}

    def list_cluster_custom_object(
        self, group: str, version: str, plural: str, label_selector=None, **_: Any
    ):
        return {"items": [self._dict(o) for o in self._list(_PLURAL_KIND[plural], None, label_selector)]}

    # -- controller simulation --------------------------------------------------------------

    def _after_write(self, kind: str, namespace: str | None, name: str, before: dict | None = None) -> None:
        if not self.simulate:
            return
        if kind == "StatefulSet":
            self._reconcile_sts(namespace or "", name, before)
        elif kind == "Job":
            result = self.job_results.get(name)
            job = self.get_for_test("Job", namespace, name) or {}
            if not self._admitted(namespace or "", name, job["spec"]["template"]["spec"]):
                return  # the Job controller cannot create its pod: the Job never runs
            if result is None:
                ok, log = self._run_job_model(namespace or "", name)
                self.finish_job_for_test(namespace or "", name, succeeded=ok, log=log)
            elif result != "Running":
                self.finish_job_for_test(namespace or "", name, succeeded=result == "Complete")
        elif kind == "VolumeSnapshot":
            self.set_status_for_test("VolumeSnapshot", namespace, name, {"readyToUse": True})
        elif kind == "Pod" and before is None and self.pod_runner is not None:
            pod = self._dict(self.objects[(namespace, "Pod", name)])
            phase, text = self.pod_runner(pod)
            container = pod["spec"]["containers"][0]["name"]
            self.logs[(namespace or "", name, container)] = text
            self.set_status_for_test("Pod", namespace, name, {"phase": phase})

    def _enforced(self, namespace: str) -> str | None:
        return self.namespace_labels.get(namespace, {}).get("pod-security.kubernetes.io/enforce")

    def _admitted(self, namespace: str, pod: str, spec: dict[str, Any]) -> bool:
        """Whether Pod Security admission lets a controller create this pod (denials recorded)."""
        if self._enforced(namespace) != "restricted":
            return True
        bad = restricted_violations(spec)
        if bad:
            self.denied.append(f"{namespace}/{pod}: {'; '.join(bad)}")
        return not bad

    def _admit_pod(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        if not self._admitted(namespace, name, spec):
            raise _api_error(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": {self.denied[-1]}',
            )

    def _reconcile_sts(self, namespace: str, name: str, before: dict | None) -> None:
        """Pods `<name>-0..N-1` (Running and Ready), a PVC per ordinal from each claim template,
        the claims' ownerReferences from the retention policy; scaled-down pods go away (and
        their PVCs with whenScaled: Delete)."""
        sts = self._find("StatefulSet", namespace, name)
        sts_uid = sts["metadata"].get("uid")
        spec = sts["spec"]
        replicas = spec.get("replicas", 1)
        policy = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        templates = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []]
        prefix = f"{name}-"
        ordinals = {
            int(n[len(prefix) :])
            for (ns, k, n) in self.objects
            if ns == namespace and k == "Pod" and n.startswith(prefix) and n[len(prefix) :].isdigit()
        }
        for i in sorted(o for o in ordinals if o >= replicas):
            self._drop((namespace, "Pod", f"{name}-{i}"))
            if policy.get("whenScaled") == "Delete":  # the database goes with it
                for t in templates:
                    self._drop((namespace, "PersistentVolumeClaim", f"{t}-{name}-{i}"))
        template = spec["template"]
        owner = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": name,
            "uid": sts_uid,
            "controller": True,
        }
        on_delete = (spec.get("updateStrategy") or {}).get("type") == "OnDelete"
        for i in range(replicas):
            for t in templates:
                key = (namespace, "PersistentVolumeClaim", f"{t}-{name}-{i}")
                if key not in self.objects:
                    self._store(
                        "PersistentVolumeClaim",
                        {
                            "metadata": {"name": f"{t}-{name}-{i}", "namespace": namespace},
                            "spec": {"accessModes": ["ReadWriteOnce"]},
                        },
                    )
            existing = self.raw.get((namespace, "Pod", f"{name}-{i}"))
            others = [
                r
                for r in ((existing or {}).get("metadata") or {}).get("ownerReferences") or []
                if r.get("controller") and r.get("uid") != sts_uid
            ]
            if existing and others:
                continue  # another controller's pod: never taken over
            if existing and on_delete:
                # OnDelete: a running pod is adopted as it is (old template, old image) until deleted
                existing["metadata"]["ownerReferences"] = [owner]
                self._store("Pod", existing)
                continue
            pod = {
                "metadata": {
                    "name": f"{name}-{i}",
                    "namespace": namespace,
                    "ownerReferences": [owner],
                    "labels": {
                        **(template["metadata"].get("labels") or {}),
                        "statefulset.kubernetes.io/pod-name": f"{name}-{i}",
                    },
                },
                "spec": {
                    **copy.deepcopy(template["spec"]),
                    "nodeName": self.nodes.get(f"{name}-{i}", self.node),
                },
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            }
            if not self._admitted(namespace, f"{name}-{i}", pod["spec"]):
                continue  # the StatefulSet controller's create is refused: no pod
            self._store("Pod", pod)  # a changed template rolls the pod
            for t in templates:  # a server started on a placed new cluster: it "has run"
                vol = self.volumes.get((namespace, f"{t}-{name}-{i}"))
                if vol and vol.get("placed"):
                    vol["new_ran"] = True
        # the controller keeps (and rewrites, when the retention policy changes) the claims' ownerReferences
        for t in templates:
            for i in sorted(ordinals | set(range(max(replicas, 1)))):
                key = (namespace, "PersistentVolumeClaim", f"{t}-{name}-{i}")
                if key in self.objects:
                    pvc = self._dict(self.objects[key])
                    refs = []
                    if policy.get("whenScaled") == "Delete":
                        refs.append(
                            {"apiVersion": "v1", "kind": "Pod", "name": f"{name}-{i}", "uid": "pod-uid"}
                        )
                    if policy.get("whenDeleted") == "Delete":
                        refs.append(
                            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": sts_uid}
                        )
                    pvc["metadata"]["ownerReferences"] = refs or None
                    self._store("PersistentVolumeClaim", pvc)
        ready = sum(1 for i in range(replicas) if (namespace, "Pod", f"{name}-{i}") in self.objects)
        self.set_status_for_test(
            "StatefulSet",
            namespace,
            name,
            {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready},
        )

    def _run_job_model(self, namespace: str, name: str) -> tuple[bool, str | None]:
        """upgrade.sh's volume rules, modelled on `volumes` (see the class docstring).

        The upgrade action leaves the new cluster placed (mode recorded); a StatefulSet pod
        started on a placed volume makes the new cluster "run"; rollback and rollback-check
        apply upgrade.sh's rollback_verdict (link + ran: refused); rollback and finalize
        clear the volume's state; cleanup refuses a placed new cluster. Jobs without a main `upgrade` container (standbys) succeed.
        """
        job = self.get_for_test("Job", namespace, name) or {}
        spec = job["spec"]["template"]["spec"]
        main = next((c for c in spec["containers"] if c["name"] == "upgrade"), None)
        claim = next(
            (
                v["persistentVolumeClaim"]["claimName"]
                for v in spec.get("volumes") or []
                if v["name"] == "data"
            ),
            None,
        )
        if main is None or claim is None:
            return True, None
        env = {e["name"]: e.get("value") for e in main.get("env") or []}
        action, key = env.get("PGLEAP_ACTION"), (namespace, claim)
        vol = self.volumes.get(key, {})
        ran_link = vol.get("placed") and vol.get("new_ran") and vol.get("mode") == "link"
        refusal = (
            "the new cluster has been started (state: in production; checkpoint 0/A after pg_upgrade, "
            "0/B now); with --link the old cluster shares its files and can no longer be used safely"
        )
        if vol.get("mode") == "swap" and vol.get("placed"):
            ran_link, refusal = (
                True,
                (
                    "pg_upgrade --swap has run: the old cluster's files now belong to the new cluster; "
                    "restore from a snapshot or backup instead"
                ),
            )
        if action == "upgrade":
            self.volumes[key] = {"placed": True, "new_ran": False, "mode": env.get("PGLEAP_MODE", "link")}
            return True, None
        if action == "rollback-check":
            ran = "yes" if vol.get("placed") and vol.get("new_ran") else "no"
            lines = [f"PGLEAP new_ran={ran}", "PGLEAP switch_checkpoint=0/A"]
            if ran == "yes":
                lines += ["PGLEAP now_checkpoint=0/B", "PGLEAP new_state=in production"]
            if ran_link:
                lines.append(f"PGLEAP refused={refusal}")
            return True, "\n".join(lines) + "\n"
        if action == "rollback":
            if ran_link:
                return False, f"upgrade.sh: error: {refusal}. Restore from a snapshot or backup\n"
            self.volumes.pop(key, None)
            return True, None
        if action == "finalize":
            self.volumes.pop(key, None)
        if action == "cleanup":  # upgrade.sh refuses while its markers say an upgrade is under way or done
            if vol.get("placed"):
                return False, "upgrade.sh: error: an upgrade is under way or done on this volume\n"
            return True, "PGLEAP cleaned=1\n"
        return True, None

    # -- helpers for tests ------------------------------------------------------------------

    def seed_for_test(self, *objs: dict[str, Any]) -> None:
        """Put objects in place without recording calls (what the cluster held before)."""
        for obj in objs:
            obj = copy.deepcopy(obj)
            obj.setdefault("metadata", {}).setdefault("uid", f"uid-{next(self._serial)}")
            self._store(obj["kind"], obj)

    def get_for_test(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (namespace if KINDS[kind][3] else None, kind, name)
        return self._dict(self.objects[key]) if key in self.objects else None

    def set_status_for_test(
        self, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        key = (namespace if KINDS[kind][3] else None, kind, name)
        assert key in self.raw, f"{kind} {namespace}/{name} does not exist"
        obj = copy.deepcopy(self.raw[key])
        obj["status"] = {**(obj.get("status") or {}), **status}
        self._store(kind, obj)

    def raw_for_test(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object as the API server holds it, fields unknown to the client included."""
        key = (namespace if KINDS[kind][3] else None, kind, name)
        return copy.deepcopy(self.raw[key]) if key in self.raw else None

    def delete_pod_for_test(self, namespace: str, name: str) -> None:
        self._drop((namespace, "Pod", name))

    def finish_job_for_test(
        self, namespace: str, name: str, *, succeeded: bool = True, log: str | None = None
    ) -> None:
        """Run the Job to its end: a pod with both containers terminated, logs, conditions."""
        job = self.get_for_test("Job", namespace, name)
        assert job is not None
        pod_name = f"{name}-x{next(self._serial)}"
        code = 0 if succeeded else 1
        containers = [c["name"] for c in job["spec"]["template"]["spec"]["containers"]]
        inits = [c["name"] for c in job["spec"]["template"]["spec"].get("initContainers") or []]
        terminated = {"terminated": {"exitCode": 0, "reason": "Completed"}}
        self._store(
            "Pod",
            {
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "labels": {"job-name": name},
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": name,
                            "uid": job["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": copy.deepcopy(job["spec"]["template"]["spec"]),
                "status": {
                    "phase": "Succeeded" if succeeded else "Failed",
                    "initContainerStatuses": [
                        {
                            "name": c,
                            "image": "x",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": terminated,
                        }
                        for c in inits
                    ],
                    "containerStatuses": [
                        {
                            "name": c,
                            "image": "x",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {
                                "terminated": {
                                    "exitCode": code,
                                    "reason": "Completed" if succeeded else "Error",
                                }
                            },
                        }
                        for c in containers
                    ],
                },
            },
        )
        for c in inits + containers:
            text = log if log is not None and c == "upgrade" else f"{name} {c}: step one\n{name} {c}: done\n"
            self.logs.setdefault((namespace, pod_name, c), text)
        cond = "Complete" if succeeded else "Failed"
        status = {"conditions": [{"type": cond, "status": "True"}]}
        status["succeeded" if succeeded else "failed"] = 1
        self.set_status_for_test("Job", namespace, name, status)

    def writes_for_test(self) -> list[Call]:
        return [c for c in self.calls if c.write]


_RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """The Pod Security Standards' `restricted` level (the checks pgleap's pods can meet or break)."""
    bad = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    pod_sc = spec.get("securityContext") or {}
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            bad.append(f"volume {v.get('name')} uses {sorted(kinds - _RESTRICTED_VOLUMES)}")
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("privileged"):
            bad.append(f"container {name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"container {name}: allowPrivilegeEscalation != false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"container {name}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad.append(f"container {name}: capabilities.add {caps.get('add')}")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            bad.append(f"container {name}: runAsNonRoot != true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            bad.append(f"container {name}: runAsUser=0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"container {name}: seccompProfile.type not RuntimeDefault or Localhost")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            bad.append(f"container {name}: hostPort")
    return bad


def reconcile_for_test(fake: FakeKubernetesApi, namespace: str, name: str) -> None:
    """Let the simulated StatefulSet controller bring a seeded StatefulSet to its running state."""
    fake._reconcile_sts(namespace, name, None)
