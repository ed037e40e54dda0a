"""Check the shape of a StatefulSet before anything reads it (pure).

A manifest from a file (`render -f`) or a hand-edited object can hold a string where
Kubernetes wants an integer, `null` where it wants a mapping, or a name that is not a
DNS-1123 name. Such a value must never reach a template or a header comment, and it
must not end in a traceback: one `Refused` names the field and what to do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from toolkit.errors import Refused

# DNS-1123 label (namespaces, container and claim names) and subdomain (object names).
LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_label(value: Any, what: str) -> str:
    """A DNS-1123 label (namespace, container name); `Refused` otherwise."""
    if not isinstance(value, str) or not LABEL.match(value):
        raise Refused(
            f"{what} {value!r} is not a valid Kubernetes name",
            "use lower-case letters, digits and '-', at most 63 characters (DNS-1123 label)",
        )
    return value


def check_name(value: Any, what: str) -> str:
    """A DNS-1123 subdomain (object names); `Refused` otherwise."""
    if not isinstance(value, str) or not SUBDOMAIN.match(value):
        raise Refused(
            f"{what} {value!r} is not a valid Kubernetes name",
            "use lower-case letters, digits, '-' and '.', at most 253 characters (DNS-1123 subdomain)",
        )
    return value


def _bad(path: str, want: str, value: Any) -> Refused:
    return Refused(
        f"StatefulSet field {path} must be {want}, found {type(value).__name__} {value!r:.60}",
        "fix the manifest (kubectl/helm would reject it too) and run again",
    )


def _mapping(value: Any, path: str, *, required: bool = False) -> Mapping[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, Mapping):
        raise _bad(path, "a mapping", value)
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(path, "a list", value)
    return value


def _int(value: Any, path: str, *, low: int = 0, high: int = 2**31 - 1) -> None:
    # bool is an int in Python, but `true` is not an integer in YAML or Kubernetes.
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(path, f"an integer from {low} to {high}", value)


def _str(value: Any, path: str, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value):
        raise _bad(path, "a non-empty string" if required else "a string", value)


def _security(sc: Any, path: str) -> None:
    sc = _mapping(sc, path)
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        _int(sc.get(key), f"{path}.{key}")
    _str(sc.get("fsGroupChangePolicy"), f"{path}.fsGroupChangePolicy")


def _container(c: Any, path: str) -> None:
    c = _mapping(c, path, required=True)
    check_label(c.get("name"), f"{path}.name")
    _str(c.get("image"), f"{path}.image", required=True)
    for i, env in enumerate(_list(c.get("env"), f"{path}.env")):
        env = _mapping(env, f"{path}.env[{i}]", required=True)
        _str(env.get("name"), f"{path}.env[{i}].name", required=True)
        _str(env.get("value"), f"{path}.env[{i}].value")
    for i, m in enumerate(_list(c.get("volumeMounts"), f"{path}.volumeMounts")):
        m = _mapping(m, f"{path}.volumeMounts[{i}]", required=True)
        _str(m.get("name"), f"{path}.volumeMounts[{i}].name", required=True)
        _str(m.get("mountPath"), f"{path}.volumeMounts[{i}].mountPath", required=True)
        _str(m.get("subPath"), f"{path}.volumeMounts[{i}].subPath")
    _security(c.get("securityContext"), f"{path}.securityContext")
    _mapping(c.get("resources"), f"{path}.resources")


def check_statefulset(sts: Any) -> None:
    """Every field pgleap reads has the type Kubernetes gives it; `Refused` names the first that
    does not. Names are DNS-1123, so they are safe in labels, comments and Job names."""
    sts = _mapping(sts, "(the object)", required=True)
    meta = _mapping(sts.get("metadata"), "metadata", required=True)
    check_name(meta.get("name"), "StatefulSet name")
    if meta.get("namespace") is not None:
        check_label(meta.get("namespace"), "namespace")
    for key in ("labels", "annotations"):
        for k, v in _mapping(meta.get(key), f"metadata.{key}").items():
            _str(v, f"metadata.{key}.{k}")
    spec = _mapping(sts.get("spec"), "spec", required=True)
    _int(spec.get("replicas"), "spec.replicas")
    _mapping(spec.get("persistentVolumeClaimRetentionPolicy"), "spec.persistentVolumeClaimRetentionPolicy")
    for i, t in enumerate(_list(spec.get("volumeClaimTemplates"), "spec.volumeClaimTemplates")):
        t = _mapping(t, f"spec.volumeClaimTemplates[{i}]", required=True)
        tmeta = _mapping(t.get("metadata"), f"spec.volumeClaimTemplates[{i}].metadata", required=True)
        check_label(tmeta.get("name"), f"spec.volumeClaimTemplates[{i}].metadata.name")
    template = _mapping(spec.get("template"), "spec.template", required=True)
    tmeta = _mapping(template.get("metadata"), "spec.template.metadata")
    for k, v in _mapping(tmeta.get("labels"), "spec.template.metadata.labels").items():
        _str(v, f"spec.template.metadata.labels.{k}")
    pod = _mapping(template.get("spec"), "spec.template.spec", required=True)
    _int(pod.get("terminationGracePeriodSeconds"), "spec.template.spec.terminationGracePeriodSeconds")
    _security(pod.get("securityContext"), "spec.template.spec.securityContext")
    _mapping(pod.get("nodeSelector"), "spec.template.spec.nodeSelector")
    _mapping(pod.get("affinity"), "spec.template.spec.affinity")
    _list(pod.get("tolerations"), "spec.template.spec.tolerations")
    _list(pod.get("imagePullSecrets"), "spec.template.spec.imagePullSecrets")
    _str(pod.get("priorityClassName"), "spec.template.spec.priorityClassName")
    containers = _list(pod.get("containers"), "spec.template.spec.containers")
    for i, c in enumerate(containers):
        _container(c, f"spec.template.spec.containers[{i}]")
    for i, c in enumerate(_list(pod.get("initContainers"), "spec.template.spec.initContainers")):
        _container(c, f"spec.template.spec.initContainers[{i}]")
