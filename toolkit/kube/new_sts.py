"""The user's StatefulSet on the new image: a copy-and-edit of their own object (pure).

Not a template: a template would have to re-emit every field a user might have set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolkit.core.layout import default_pgdata
from toolkit.kube.objects import ANN_FROM, ANN_RUN, clean_object
from toolkit.kube.plan import KubePlan


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    for env in container.setdefault("env", []):
        if env.get("name") == name:
            env.pop("valueFrom", None)
            env["value"] = value
            return
    container["env"].append({"name": name, "value": value})


def new_statefulset(
    plan: KubePlan, original_sts: Mapping[str, Any], *, replicas: int | None = None
) -> dict[str, Any]:
    """The user's StatefulSet on the new image: same name, selector, serviceName and claims.

    `replicas` overrides the count: a StatefulSet whose ordinals 1..N-1 are standbys starts
    with its primary alone (a standby of the old major cannot start on the new image) and is
    scaled to N once they are re-seeded.

    Containers and init containers that ran the old image get the new one (an
    init container on the old major would fail on the new data); when the layout
    changes, the postgres container and every container mounting the data where it
    did get the new mount (and PGDATA, where they set the old one). Everything
    else — env (Secret references untouched), probes, sidecars, labels — stays.
    """
    sts = clean_object(original_sts)
    meta = sts["metadata"]
    meta.setdefault("annotations", {})
    meta["annotations"][ANN_FROM] = plan.core.old_image
    meta["annotations"][ANN_RUN] = plan.run_id
    if replicas is not None:
        sts["spec"]["replicas"] = replicas
    pod = sts["spec"]["template"]["spec"]
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        if c.get("image") == plan.core.old_image:
            c["image"] = plan.core.new_image
    container = next(c for c in pod["containers"] if c["name"] == plan.container)
    if plan.core.layout.changes_mount:
        _follow_data(plan, pod, container)
    return sts


def _follow_data(plan: KubePlan, pod: dict[str, Any], container: dict[str, Any]) -> None:
    """Every container that sees the data where postgres saw it (an init container fixing
    permissions, a standby's pg_basebackup, a backup sidecar) follows it to the new place."""
    lay = plan.core.layout
    old_pgdata = next((e.get("value") for e in container.get("env") or [] if e.get("name") == "PGDATA"), None)
    old_sub = next(
        (
            m.get("subPath", "")
            for m in container.get("volumeMounts") or []
            if m["name"] == plan.data_claim and m["mountPath"].rstrip("/") == plan.mount_path
        ),
        "",
    )
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        moved = _move_mounts(plan, c, old_sub)
        if c is container:
            has_env = any(e.get("name") == "PGDATA" for e in c.get("env") or [])
            if has_env or lay.new_pgdata != default_pgdata("official", plan.core.new_major):
                _set_env(c, "PGDATA", lay.new_pgdata)
        elif (
            moved
            and old_pgdata
            and any(e.get("name") == "PGDATA" and e.get("value") == old_pgdata for e in c.get("env") or [])
        ):
            _set_env(c, "PGDATA", lay.new_pgdata)


def _move_mounts(plan: KubePlan, c: dict[str, Any], old_sub: str) -> bool:
    """Point `c`'s mounts of the old data place at the new one; True when one moved (its PGDATA
    then follows too)."""
    lay = plan.core.layout
    moved = False
    for mount in c.get("volumeMounts") or []:
        if (
            mount["name"] == plan.data_claim
            and mount["mountPath"].rstrip("/") == plan.mount_path
            and mount.get("subPath", "") == old_sub
        ):
            mount["mountPath"] = lay.new_mount_path
            if lay.new_sub_path:
                mount["subPath"] = lay.new_sub_path
            else:
                mount.pop("subPath", None)
            moved = True
    return moved


def primary_statefulset(plan: KubePlan, original_sts: Mapping[str, Any]) -> dict[str, Any]:
    """The new primary StatefulSet: alone at first when its own ordinals are standbys."""
    return new_statefulset(plan, original_sts, replicas=1 if plan.same_sts_standbys else None)


def replica_statefulset(plan: KubePlan, read_sts: Mapping[str, Any]) -> dict[str, Any]:
    """The read StatefulSet on the new image, with the replicas it had."""
    assert plan.replicas is not None
    return new_statefulset(plan.replica_view(), read_sts, replicas=plan.replicas.count)
