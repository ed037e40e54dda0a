"""A thin layer over the official Kubernetes client: the only module that imports it.

Objects go in and come out as the API's JSON form (camelCase dicts), so the rest
of pgleap never sees client models. Every call names its RBAC verb and resource,
so a 403 can say which permission of manifests/rbac.yaml is missing.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from toolkit.errors import EnvironmentProblem, PgleapError

logger = logging.getLogger(__name__)

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
SNAPSHOT_GROUP, SNAPSHOT_VERSION = "snapshot.storage.k8s.io", "v1"
_HANDSHAKE_403 = re.compile(r"\bHandshake status 403\b")


@dataclass(frozen=True)
class KindInfo:
    """How to reach one kind through the typed client."""

    api: str  # attribute of Kube holding the API object
    group: str  # RBAC apiGroup
    resource: str  # RBAC resource (plural)
    suffix: str  # method suffix, e.g. "stateful_set"
    model: str | None  # client model class; None for custom objects (plain dicts)
    namespaced: bool = True


KINDS: dict[str, KindInfo] = {
    "StatefulSet": KindInfo("apps", "apps", "statefulsets", "stateful_set", "V1StatefulSet"),
    "Pod": KindInfo("core", "", "pods", "pod", "V1Pod"),
    "PersistentVolumeClaim": KindInfo(
        "core", "", "persistentvolumeclaims", "persistent_volume_claim", "V1PersistentVolumeClaim"
    ),
    "PersistentVolume": KindInfo(
        "core", "", "persistentvolumes", "persistent_volume", "V1PersistentVolume", namespaced=False
    ),
    "Service": KindInfo("core", "", "services", "service", "V1Service"),
    "ConfigMap": KindInfo("core", "", "configmaps", "config_map", "V1ConfigMap"),
    "Job": KindInfo("batch", "batch", "jobs", "job", "V1Job"),
    "PodDisruptionBudget": KindInfo(
        "policy", "policy", "poddisruptionbudgets", "pod_disruption_budget", "V1PodDisruptionBudget"
    ),
    "VolumeSnapshot": KindInfo("custom", SNAPSHOT_GROUP, "volumesnapshots", "", None),
    "VolumeSnapshotClass": KindInfo(
        "custom", SNAPSHOT_GROUP, "volumesnapshotclasses", "", None, namespaced=False
    ),
}


# Read undecoded and created from the dict: a typed model drops the fields its client version
# does not know, so a StatefulSet pgleap recreates would silently lose what a newer API server
# added (tests/kube/test_cluster_rules.py).
RAW_KINDS = frozenset({"StatefulSet"})


class Forbidden(EnvironmentProblem):
    """The API said 403: the message names the verb and resource to grant."""

    def __init__(self, verb: str, group: str, resource: str, namespace: str | None) -> None:
        where = f" in namespace {namespace}" if namespace else " (cluster-scoped)"
        api = f"{group}/" if group else ""
        verbs = " and ".join(f"'{v}'" for v in verb.split("+"))
        super().__init__(
            f"permission denied: pgleap needs {verbs} on {api}{resource}{where}",
            "grant it with manifests/rbac.yaml (kubectl apply -f manifests/rbac.yaml after setting the "
            "namespace), or run with a kubeconfig that has it",
        )
        self.verb, self.group, self.resource = verb, group, resource


class Conflict(PgleapError):
    """The object already exists (409): someone else made it between our check and our create."""


def _to_dict(api_client: client.ApiClient, obj: Any) -> dict[str, Any]:
    return api_client.sanitize_for_serialization(obj)


class Kube:
    """Read, create, patch, delete and wait on the objects pgleap touches."""

    def __init__(
        self,
        *,
        core: Any,
        apps: Any,
        batch: Any,
        policy: Any,
        custom: Any,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core, self.apps, self.batch, self.policy, self.custom = core, apps, batch, policy, custom
        self.sleep, self.clock = sleep, clock
        self._serializer = client.ApiClient.__new__(client.ApiClient)  # serialisation only, no config

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """Load a kubeconfig (or the in-cluster service account) and build the typed APIs."""
        from toolkit.kube import credentials

        credentials.load(kubeconfig, context)
        api = client.ApiClient()
        return cls(
            core=client.CoreV1Api(api),
            apps=client.AppsV1Api(api),
            batch=client.BatchV1Api(api),
            policy=client.PolicyV1Api(api),
            custom=client.CustomObjectsApi(api),
        )

    @staticmethod
    def default_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
        """The namespace of the kubeconfig context, as kubectl would use it."""
        try:
            contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, FileNotFoundError, TypeError):
            return "default"
        chosen = next((c for c in contexts if c["name"] == context), current) if context else current
        return ((chosen or {}).get("context") or {}).get("namespace") or "default"

    # -- plumbing -----------------------------------------------------------------------------

    def _call(
        self, verb: str, kind: str, namespace: str | None, fn: Callable[..., T], /, *a: Any, **kw: Any
    ) -> T:
        info = KINDS[kind]
        try:
            return fn(*a, **kw)
        except ApiException as exc:
            if exc.status == 403:
                resource = "pods/log" if verb == "log" else info.resource
                raise Forbidden("get" if verb == "log" else verb, info.group, resource, namespace) from exc
            raise
        except PgleapError:
            raise
        except OSError as exc:  # connection refused, DNS, TLS
            raise EnvironmentProblem(
                f"Kubernetes API unreachable: {exc}", "check the kubeconfig and network"
            ) from exc

    def _method(self, kind: str, action: str) -> Callable[..., Any]:
        info = KINDS[kind]
        scope = "namespaced_" if info.namespaced else ""
        return getattr(getattr(self, info.api), f"{action}_{scope}{info.suffix}")

    def _custom(self, kind: str, **kw: Any) -> dict[str, Any]:
        """Keyword arguments of the CustomObjectsApi methods for one kind."""
        return {"group": SNAPSHOT_GROUP, "version": SNAPSHOT_VERSION, "plural": KINDS[kind].resource, **kw}

    def _model(self, kind: str, obj: dict[str, Any]) -> Any:
        return getattr(client, KINDS[kind].model).from_dict(obj)  # type: ignore[arg-type]

    def _out(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else _to_dict(self._serializer, obj)

    # -- verbs --------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            if KINDS[kind].model is None:
                fn = self.custom.get_namespaced_custom_object
                obj = self._call(
                    "get", kind, namespace, fn, **self._custom(kind, namespace=namespace, name=name)
                )
            elif kind in RAW_KINDS:
                resp = self._call(
                    "get",
                    kind,
                    namespace,
                    self._method(kind, "read"),
                    name,
                    namespace,
                    _preload_content=False,
                )
                obj = json.loads(resp.data)
            elif KINDS[kind].namespaced:
                obj = self._call("get", kind, namespace, self._method(kind, "read"), name, namespace)
            else:
                obj = self._call("get", kind, None, self._method(kind, "read"), name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._problem("get", kind, namespace, name, exc) from exc
        return self._out(obj)

    def list(
        self, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace (or cluster-wide for cluster-scoped kinds)."""
        kw = {"label_selector": label_selector} if label_selector else {}
        try:
            if KINDS[kind].model is None:
                if KINDS[kind].namespaced:
                    fn = self.custom.list_namespaced_custom_object
                    res = self._call(
                        "list", kind, namespace, fn, **self._custom(kind, namespace=namespace, **kw)
                    )
                else:
                    fn = self.custom.list_cluster_custom_object
                    res = self._call("list", kind, None, fn, **self._custom(kind, **kw))
                return list(res.get("items") or [])
            res = self._call("list", kind, namespace, self._method(kind, "list"), namespace, **kw)
        except ApiException as exc:
            raise self._problem("list", kind, namespace, "", exc) from exc
        return [self._out(item) for item in res.items or []]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create; `Conflict` when it already exists."""
        kind, ns, name = obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]
        try:
            if KINDS[kind].model is None:
                fn = self.custom.create_namespaced_custom_object
                res = self._call("create", kind, ns, fn, **self._custom(kind, namespace=ns, body=obj))
            else:
                body = obj if kind in RAW_KINDS else self._model(kind, obj)
                res = self._call("create", kind, ns, self._method(kind, "create"), ns, body)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(
                    f"{kind} {ns}/{name} already exists", "another pgleap run may be active"
                ) from exc
            raise self._problem("create", kind, ns, name, exc) from exc
        logger.info("created %s %s/%s", kind, ns, name)
        return self._out(res)

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace the whole object (the `update` verb)."""
        kind, ns, name = obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]
        try:
            res = self._call(
                "update", kind, ns, self._method(kind, "replace"), name, ns, self._model(kind, obj)
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(
                    f"{kind} {ns}/{name} changed meanwhile", "another pgleap run may be active"
                ) from exc
            raise self._problem("update", kind, ns, name, exc) from exc
        logger.info("replaced %s %s/%s", kind, ns, name)
        return self._out(res)

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON merge patch (RFC 7386); the client would otherwise send a JSON-patch header."""
        try:
            res = self._call(
                "patch",
                kind,
                namespace,
                self._method(kind, "patch"),
                name,
                namespace,
                patch,
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            if exc.status == 409:  # a resourceVersion in the patch no longer matches
                raise Conflict(
                    f"{kind} {namespace}/{name} changed meanwhile", "another pgleap run may be active"
                ) from exc
            raise self._problem("patch", kind, namespace, name, exc) from exc
        logger.info("patched %s %s/%s: %s", kind, namespace, name, sorted(patch))
        return self._out(res)

    def delete(self, kind: str, namespace: str, name: str, *, propagation: str | None = None) -> bool:
        """Delete; False when it was already gone."""
        kw = {"propagation_policy": propagation} if propagation else {}
        try:
            if KINDS[kind].model is None:
                fn = self.custom.delete_namespaced_custom_object
                self._call(
                    "delete", kind, namespace, fn, **self._custom(kind, namespace=namespace, name=name, **kw)
                )
            else:
                self._call("delete", kind, namespace, self._method(kind, "delete"), name, namespace, **kw)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise self._problem("delete", kind, namespace, name, exc) from exc
        logger.info("deleted %s %s/%s (propagation %s)", kind, namespace, name, propagation or "default")
        return True

    def logs(self, namespace: str, pod: str, container: str, *, follow: bool = True) -> Iterator[str]:
        """Lines of a container's log; with `follow`, until the container exits."""
        try:
            resp = self._call(
                "log",
                "Pod",
                namespace,
                self.core.read_namespaced_pod_log,
                pod,
                namespace,
                container=container,
                follow=follow,
                _preload_content=False,
            )
        except ApiException as exc:
            raise self._problem("get", "Pod", namespace, f"{pod}/log", exc) from exc
        buf = b""
        try:
            for chunk in resp.stream():
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
            if buf:
                yield buf.decode("utf-8", "replace")
        finally:
            resp.release_conn()

    def exec(self, namespace: str, pod: str, container: str, command: list[str]) -> str:
        """Run a command in a container (pods/exec); its output. Used to read the superuser's
        password from the running pod's own environment: it never leaves this process."""
        from kubernetes.stream import stream

        return self._subresource(
            "pods/exec", namespace, stream, self.core.connect_get_namespaced_pod_exec, pod, namespace,
            container=container, command=command, stderr=True, stdin=False, stdout=True, tty=False,
        )  # fmt: skip

    def port_forward(self, namespace: str, pod: str, port: int) -> Any:
        """A socket to `port` of the pod (pods/portforward), like `kubectl port-forward`."""
        from kubernetes.stream import portforward

        forward = self._subresource(
            "pods/portforward", namespace, portforward, self.core.connect_get_namespaced_pod_portforward,
            pod, namespace, ports=str(port),
        )  # fmt: skip
        return forward.socket(port)

    @staticmethod
    def _subresource(resource: str, namespace: str, fn: Callable[..., T], /, *a: Any, **kw: Any) -> T:
        # The client opens both subresources with a WebSocket GET: API servers before 1.35
        # authorise it as `get`, from 1.35 as `get` and `create`. A refused handshake does not
        # arrive as a 403 but as ApiException(status=0, reason="Handshake status 403 Forbidden…").
        try:
            return fn(*a, **kw)
        except ApiException as exc:
            if exc.status == 403 or (exc.status == 0 and _HANDSHAKE_403.search(str(exc.reason or ""))):
                raise Forbidden("get+create", "", resource, namespace) from exc
            raise
        except OSError as exc:
            raise EnvironmentProblem(
                f"Kubernetes API unreachable: {exc}", "check the kubeconfig and network"
            ) from exc

    def wait(self, what: str, probe: Callable[[], T | None], *, timeout: float, interval: float = 2.0) -> T:
        """Poll `probe` until it returns something other than None; PgleapError on timeout."""
        deadline = self.clock() + timeout
        while True:
            result = probe()
            if result is not None:
                return result
            if self.clock() >= deadline:
                raise PgleapError(
                    f"timed out after {timeout:.0f}s waiting for {what}",
                    "nothing was rolled back; check `kubectl get events`, then `pgleap resume` or "
                    "`pgleap rollback`",
                )
            logger.debug("waiting for %s", what)
            self.sleep(interval)

    @staticmethod
    def _problem(verb: str, kind: str, namespace: str | None, name: str, exc: ApiException) -> PgleapError:
        where = f"{namespace}/{name}" if namespace else name
        return EnvironmentProblem(
            f"Kubernetes API refused {verb} {kind} {where}: {exc.status} {exc.reason}",
            (exc.body or "")[:300] or "see the API server's message",
        )
