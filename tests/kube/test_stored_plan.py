"""Resume and rollback act only on the plan pgleap wrote: an edited state ConfigMap is refused
(digest; the plan re-validated; the immutable upgrade Job as the cluster's own record)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.kube.harness import JOB_ENV, SCRIPTS, make_cluster
from tests.kube.test_runtime import Crash, crash_after_phase
from toolkit.errors import Refused
from toolkit.kube import objects
from toolkit.kube.plan import merge_job_env
from toolkit.kube.stored import digest

TARGET = "pgleap/postgis:17-3.5"


def _interrupted(phase: str):
    c = make_cluster("official-plain")
    crash_after_phase(c, phase)
    with pytest.raises(Crash):
        c.runtime.upgrade(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV)
    return c


def _edit(c, change: Callable[[dict[str, Any]], None], *, recompute: bool) -> None:
    """Edit plan.json in the state ConfigMap as a user with `update configmaps` could."""
    cm = c.fake.get_for_test("ConfigMap", c.namespace, objects.state_cm_name(c.name))
    plan = json.loads(cm["data"]["plan.json"])
    change(plan)
    cm["data"]["plan.json"] = json.dumps(plan, sort_keys=True)
    if recompute:
        d = cm["data"]
        d["digest"] = digest(d["plan.json"], d["statefulset.json"], d.get("read-statefulset.json") or "")
    c.fake.seed_for_test(cm)


def _image(plan: dict[str, Any]) -> None:
    plan["new_image"] = "evil.example/postgis:17-3.5"


def _bash_env(plan: dict[str, Any]) -> None:
    plan["job_env"]["BASH_ENV"] = "/var/lib/postgresql/data/x.sh"


def _major(plan: dict[str, Any]) -> None:
    plan["new_image"] = "evil.example/postgis:18-3.6"


@pytest.mark.parametrize(
    ("phase", "change", "recompute", "needle"),
    [
        ("stopped", _image, False, "digest does not match"),
        ("stopped", _bash_env, True, "only PGLEAP_* variables"),
        ("stopped", _major, True, "do not fit majors"),
        ("upgraded", _image, True, "Job pgleap-gis-upgrade no longer matches"),
    ],
)
def test_an_edited_plan_is_refused_before_any_change(phase, change, recompute, needle) -> None:
    c = _interrupted(phase)
    _edit(c, change, recompute=recompute)
    before = len(c.fake.writes_for_test())
    for act in (
        lambda: c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS),
        lambda: c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS),
    ):
        with pytest.raises(Refused, match=re.escape(needle)):
            act()
    assert len(c.fake.writes_for_test()) == before
    assert c.image() == "pgleap/postgis:13-3.1"


def test_an_edited_rollback_target_is_refused() -> None:
    c = _interrupted("stopped")
    cm = c.fake.get_for_test("ConfigMap", c.namespace, objects.state_cm_name(c.name))
    sts = json.loads(cm["data"]["statefulset.json"])
    sts["spec"]["template"]["spec"]["hostPID"] = True
    cm["data"]["statefulset.json"] = json.dumps(sts, sort_keys=True)
    c.fake.seed_for_test(cm)
    with pytest.raises(Refused, match="digest does not match"):
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS)


def test_an_unedited_plan_resumes() -> None:
    c = _interrupted("upgraded")
    assert c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS, post_upgrade=c.hook).phase == "done"


@pytest.mark.parametrize("key", ["BASH_ENV", "LD_PRELOAD", "PATH", "pgleap_lower"])
def test_only_pgleap_variables_reach_a_new_job(key: str) -> None:
    with pytest.raises(ValueError, match="only PGLEAP_"):
        merge_job_env({}, {key: "x"})


def test_a_state_without_digest_is_refused_with_the_way_out() -> None:
    c = _interrupted("stopped")
    cm = c.fake.get_for_test("ConfigMap", c.namespace, objects.state_cm_name(c.name))
    del cm["data"]["digest"]
    c.fake.seed_for_test(cm)
    with pytest.raises(Refused, match="carries no digest") as exc:
        c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
    assert "the pgleap version that started it" in exc.value.hint
