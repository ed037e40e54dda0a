"""Probe an image on Kubernetes: run probe.sh as a short Pod, parse it as Docker does (ImageFacts).

The tag says little (`postgis/postgis@sha256:…`, `registry:5000/geo/db:2024.10`); the image
itself says which PostgreSQL, PostGIS, glibc and ICU it ships. The Pod is the smallest thing
that can ask it: restricted Pod Security Standard, the StatefulSet's uid, no volume, no
service-account token, deleted afterwards, whatever happened. It is created before anything
else changes, so a refused plan leaves only its create and delete in the API's record.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from toolkit.core.facts import DataFacts, ImageFacts
from toolkit.core.plan import check_mode, check_versions, not_postgres
from toolkit.errors import PgleapError, Refused
from toolkit.kube.api import Kube
from toolkit.kube.facts import _security, find_postgres_container
from toolkit.kube.image_ref import ImageRef, parse_image
from toolkit.kube.objects import short_name

LABEL_PROBE_OF = "pgleap.io/probe-of"
PROBE_SCRIPTS = ("lib.sh", "probe.sh")
PROBE_TIMEOUT = 300.0  # an image pull of a PostGIS image on a slow node
_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
NOBODY = 65534
_SOURCE_LIB = '. "$(dirname "$0")/lib.sh"'


def can_probe(scripts: Mapping[str, str]) -> bool:
    """The shipped scripts include probe.sh (the CLI always loads them)."""
    return all(name in scripts for name in PROBE_SCRIPTS)


def inline_script(scripts: Mapping[str, str]) -> str:
    """probe.sh with lib.sh in place of its `source` line: one `bash -c` argument, no volume."""
    probe = scripts["probe.sh"]
    if _SOURCE_LIB not in probe:
        raise ValueError("probe.sh no longer sources lib.sh the expected way")
    return probe.replace(_SOURCE_LIB, scripts["lib.sh"], 1)


def running_image(sts: Mapping[str, Any]) -> str:
    """The image of the StatefulSet's PostgreSQL container."""
    return find_postgres_container(dict(sts))["image"]


def probe_pod(sts: Mapping[str, Any], image: str, scripts: Mapping[str, str]) -> dict[str, Any]:
    """The Pod that prints what `image` offers, as the StatefulSet's user (restricted PSS).

    Without a uid in the StatefulSet or a known image family, `nobody` reads the image: the
    probe only reads world-readable files."""
    meta = sts.get("metadata") or {}
    container = find_postgres_container(dict(sts))
    uid, gid, _ = _security(dict(sts), container, parse_image(container["image"]))
    uid = NOBODY if uid is None else uid
    security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if gid is not None:
        security["runAsGroup"] = gid
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "activeDeadlineSeconds": int(PROBE_TIMEOUT),
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "probe",
                "image": image,
                "command": ["bash", "-c", inline_script(scripts), "probe.sh"],
                "securityContext": security,
                "resources": {
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                },
            }
        ],
    }
    pod_spec = ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}
    for key in ("imagePullSecrets", "nodeSelector", "tolerations", "priorityClassName"):
        if pod_spec.get(key):  # the same registry credentials and the same kind of node
            spec[key] = pod_spec[key]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": short_name("pgleap", meta["name"], "probe", uuid.uuid4().hex[:6]),
            "namespace": meta.get("namespace") or "default",
            "labels": {"app.kubernetes.io/managed-by": "pgleap", LABEL_PROBE_OF: meta["name"][:63]},
        },
        "spec": spec,
    }


def _finished(pod: Mapping[str, Any] | None) -> str | None:
    """'Succeeded', 'Failed', a pull failure reason, or None while it runs."""
    if pod is None:
        return "gone"
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return status["phase"]
    for cs in status.get("containerStatuses") or []:
        reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
        if reason in _PULL_FAILURES:
            return reason
    return None


def probe_image(
    kube: Kube,
    sts: Mapping[str, Any],
    image: str,
    scripts: Mapping[str, str],
    *,
    timeout: float = PROBE_TIMEOUT,
    log: Any = None,
) -> ImageFacts:
    """Run the probe Pod for `image`, read its log, delete it; the image's facts or a refusal."""
    pod = probe_pod(sts, image, scripts)
    name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]
    kube.create(pod)
    try:
        try:
            result = kube.wait(
                f"probe Pod {name} of {image}",
                lambda: _finished(kube.get("Pod", ns, name)),
                timeout=timeout,
                interval=1.0,
            )
        except Refused:
            raise
        except PgleapError as exc:
            if not exc.message.startswith("timed out"):
                raise
            raise Refused(
                f"the probe Pod of image {image} did not finish in {timeout:.0f}s",
                f"see `kubectl -n {ns} get events` (image pull, quota, admission); nothing was changed",
            ) from None
        text = (
            "\n".join(kube.logs(ns, name, "probe", follow=False)) if result in ("Succeeded", "Failed") else ""
        )
    finally:
        kube.delete("Pod", ns, name, propagation="Background")
    if log:
        log(f"probed {image} in Pod {name}: {result}")
    if result in _PULL_FAILURES or result == "gone":
        raise Refused(
            f"the cluster cannot run image {image} ({result})",
            "check the image name and that the cluster can pull it (the StatefulSet's imagePullSecrets "
            "are used); nothing was changed",
        )
    try:
        if result != "Succeeded":
            tail = " | ".join(line for line in text.splitlines()[-3:] if line.strip())
            raise ValueError(f"the probe Pod ended {result}" + (f": {tail}" if tail else ""))
        return ImageFacts.from_probe(image, text)
    except ValueError as exc:
        raise not_postgres(image, str(exc)) from None


def probed_target(target_image: str, new: ImageFacts) -> ImageRef:
    """The target reference with the major the image reported."""
    return replace(parse_image(target_image), major=new.major)


def check_images(old: ImageFacts, new: ImageFacts, mode: str) -> list[str]:
    """Docker's refusals that need only the two images (versions, glibc, swap before 18)."""
    warnings = check_versions(old, new)
    check_mode(mode, new.major, DataFacts(status="cluster"))  # free space: read from the volume later
    return warnings


def probe_both(
    kube: Kube, sts: Mapping[str, Any], target_image: str, scripts: Mapping[str, str], *, log=None
) -> tuple[ImageFacts, ImageFacts]:
    """The running image, then the target: each in its own Pod, one after the other."""
    old = probe_image(kube, sts, running_image(sts), scripts, log=log)
    return old, probe_image(kube, sts, target_image, scripts, log=log)
