"""Validate rendered objects against the Kubernetes OpenAPI schemas, strictly, per minor."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import all_versions
from packaging.version import Version

OLDEST = Version("1.29")
_SCHEMAS = Path(__file__).parent / "schemas"


@cache
def versions() -> tuple[str, ...]:
    """Every Kubernetes minor kubernetes-validate ships schemas for, from 1.29 up (offline)."""
    return tuple(sorted({v for v in all_versions() if Version(v) >= OLDEST}, key=Version))


def validate_strict(obj: dict[str, Any]) -> list[str]:
    """Validate one object for every version; return the versions it was checked against.

    CRDs have no schema in kubernetes-validate: VolumeSnapshot is checked against
    the small closed schema in schemas/ instead (same for every version).
    """
    if obj["apiVersion"].startswith("snapshot.storage.k8s.io/"):
        schema = json.loads((_SCHEMAS / "volumesnapshot-snapshot-v1.json").read_text())
        jsonschema.Draft202012Validator(schema).validate(obj)
        return ["crd"]
    checked = []
    for version in versions():
        kubernetes_validate.validate(obj, version, strict=True)
        checked.append(version)
    return checked
