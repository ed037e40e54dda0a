"""Literal secrets of a StatefulSet kept out of pgleap's state ConfigMap, and put back (pure)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from toolkit.kube.objects import pod_spec
from toolkit.kube.plan import SECRETISH

# A literal secret in the StatefulSet (e.g. POSTGRES_PASSWORD: value) is not copied into the
# state ConfigMap (readable with `get configmaps`): it stays only in the live StatefulSet, and
# is taken from there when pgleap recreates the StatefulSet from its stored copy.
MASKED = "(masked by pgleap: the value stays only in the live StatefulSet)"


def _env_lists(sts: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    pod = pod_spec(sts)
    return [
        (c.get("name", ""), c.get("env") or [])
        for c in (pod.get("containers") or []) + (pod.get("initContainers") or [])
    ]


def mask_secrets(sts: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with every literal secret-looking env value replaced by MASKED."""
    out = copy.deepcopy(dict(sts))
    for _, env in _env_lists(out):
        for e in env:
            if SECRETISH.search(str(e.get("name", ""))) and e.get("value"):
                e["value"] = MASKED
    return out


def unmask_secrets(stored: Mapping[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored StatefulSet with masked values filled from `live` (same container, same name)."""
    out = copy.deepcopy(dict(stored))
    values = {
        (c, e.get("name")): e.get("value")
        for c, env in (_env_lists(live) if live else [])
        for e in env
        if e.get("value") and e.get("value") != MASKED
    }
    for c, env in _env_lists(out):
        for e in env:
            if e.get("value") == MASKED and values.get((c, e.get("name"))):
                e["value"] = values[(c, e.get("name"))]
    return out


def masked_left(sts: Mapping[str, Any]) -> list[str]:
    """`container/NAME` of values still masked (none may reach a created StatefulSet)."""
    return [f"{c}/{e.get('name')}" for c, env in _env_lists(sts) for e in env if e.get("value") == MASKED]
