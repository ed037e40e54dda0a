"""Re-check a plan read back from the state ConfigMap before resume or rollback act on it (pure).

Anyone who may edit ConfigMaps in the namespace could otherwise change the images or the
Job's env of an interrupted run (`BASH_ENV`, another image) or the StatefulSet a rollback
recreates. Two checks: a digest of what the run recorded (plan, original StatefulSets),
written when the run began; and the plan itself validated as strictly as a new one: images
are the two recorded ones (the original StatefulSet's, and a target of the recorded major),
env keys pgleap's own and consistent with the layout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from toolkit.core.plan import DOWNTIME_MODES, MODES
from toolkit.errors import Refused
from toolkit.kube.image_ref import parse_image
from toolkit.kube.plan import KubePlan, layout_env, merge_job_env

DIGEST_KEY = "digest"


def digest(plan_json: str, sts_json: str, read_sts_json: str = "") -> str:
    """sha256 over what resume and rollback act on."""
    return hashlib.sha256("\0".join((plan_json, sts_json, read_sts_json)).encode()).hexdigest()


def _refuse(cm: str, what: str) -> Refused:
    return Refused(
        f"the recorded run in ConfigMap {cm} was changed after it began: {what}",
        f"restore {cm} from your records (or undo the edit), then run the command again; "
        "pgleap will not act on a plan it did not write",
    )


def check_stored(cm: str, data: Mapping[str, str], plan: KubePlan, original: Mapping[str, Any]) -> None:
    """`Refused` unless the stored plan is the one pgleap wrote and still a valid plan."""
    recorded = data.get(DIGEST_KEY)
    actual = digest(data["plan.json"], data["statefulset.json"], data.get("read-statefulset.json") or "")
    if recorded is None:
        raise Refused(
            f"the recorded run in ConfigMap {cm} carries no digest (written by an older pgleap, or edited)",
            "finish or roll back the run with the pgleap version that started it",
        )
    if recorded != actual:
        raise _refuse(cm, "its digest does not match")
    core = plan.core
    if core.mode not in MODES:
        raise _refuse(cm, f"unknown mode {core.mode!r}")
    if core.downtime not in DOWNTIME_MODES:
        raise _refuse(cm, f"unknown downtime mode {core.downtime!r}")
    containers = ((original.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    image = next((c.get("image") for c in containers if c.get("name") == plan.container), None)
    if image != core.old_image:
        raise _refuse(cm, f"old image {core.old_image} is not the original StatefulSet's ({image})")
    old, new = parse_image(core.old_image), parse_image(core.new_image)
    if (old.major, new.major) != (core.old_major, core.new_major) or new.major <= old.major:
        raise _refuse(cm, f"images {core.old_image} -> {core.new_image} do not fit majors "
                          f"{core.old_major} -> {core.new_major}")  # fmt: skip
    derived = layout_env(core)
    given = {k: v for k, v in plan.job_env.items() if k not in derived}
    try:
        expected = merge_job_env(derived, given)
    except ValueError as exc:
        raise _refuse(cm, str(exc)) from exc
    if expected != plan.job_env:
        raise _refuse(cm, "the Job env contradicts the layout")
