"""One run at a time per StatefulSet, held in the cluster; and the fake's API-server rules it relies
on (a stale resourceVersion is a 409, immutable StatefulSet fields a 422)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.kube.harness import JOB_ENV, SCRIPTS, make_cluster
from tests.kube.test_runtime import Crash, crash_after_phase, state
from toolkit.errors import EnvironmentProblem, Refused
from toolkit.kube import objects
from toolkit.kube.api import Conflict
from toolkit.kube.lease import HOLDER, Lease
from toolkit.kube.model import HookContext

TARGET = "pgleap/postgis:17-3.5"


def test_rollback_while_the_upgrade_verifies_is_refused() -> None:
    """The finding: a rollback started during the verify hook succeeded, then the upgrade
    recorded `done` on a StatefulSet running the old image."""
    c = make_cluster("official-plain")
    refused: list[str] = []

    def hook(ctx: HookContext) -> None:
        with pytest.raises(Refused) as exc:
            c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS)
        refused.append(exc.value.message)
        with pytest.raises(Refused):
            c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
        with pytest.raises(Refused):
            c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)

    out = c.runtime.upgrade(
        c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, post_upgrade=hook, mode="copy"
    )
    assert out.phase == "done" and c.image() == TARGET
    assert refused and "another pgleap run works on this StatefulSet: upgrade by pid" in refused[0]
    assert state(c)["phase"] == "done"
    assert c.runtime.status(c.namespace, c.name)["held_by"] is None  # given back at the end
    c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=lambda _loss: True)  # now it may
    assert c.image() == "pgleap/postgis:13-3.1"


def _interrupted() -> Any:
    c = make_cluster("official-plain")
    crash_after_phase(c, "stopped")
    with pytest.raises(Crash):
        c.runtime.upgrade(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV)
    return c


def _cm(c: Any) -> dict[str, Any]:
    return c.fake.get_for_test("ConfigMap", c.namespace, objects.state_cm_name(c.name))


def test_two_runs_reading_the_same_version_only_one_wins() -> None:
    c = _interrupted()
    cm_name = objects.state_cm_name(c.name)
    seen = copy.deepcopy(_cm(c))  # what the second run read before the first one wrote

    class StaleRead:
        def __getattr__(self, name: str) -> Any:
            return getattr(c.kube, name)

        def get(self, kind: str, namespace: str, name: str) -> Any:
            return copy.deepcopy(seen)

    Lease(c.kube, c.namespace, cm_name, "resume", host="a", pid=1).acquire()
    with pytest.raises(Refused, match="at the same moment"):
        Lease(StaleRead(), c.namespace, cm_name, "rollback", host="b", pid=2).acquire()  # type: ignore[arg-type]


def test_a_holder_from_another_machine_is_shown_and_refused() -> None:
    c = _interrupted()
    cm_name = objects.state_cm_name(c.name)
    Lease(c.kube, c.namespace, cm_name, "resume", host="ci-runner-7", pid=4242).acquire()
    status = c.runtime.status(c.namespace, c.name)
    assert status["held_by"].startswith("resume by pid 4242 on ci-runner-7 since ")
    with pytest.raises(Refused) as exc:
        c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
    assert f"kubectl -n geo annotate configmap {cm_name} {HOLDER}-" in exc.value.hint
    assert state(c)["phase"] == "stopped"  # nothing done


def test_a_holder_whose_process_died_on_this_machine_is_taken_over() -> None:
    c = _interrupted()
    cm_name = objects.state_cm_name(c.name)
    dead = Lease(c.kube, c.namespace, cm_name, "resume", pid=999_999_999)
    dead.acquire()
    c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS, post_upgrade=c.hook)
    assert state(c)["phase"] == "done"
    assert any(
        line.startswith("taking over from a run that died: resume by pid 999999999") for line in c.lines
    )


def test_fake_refuses_a_stale_resource_version() -> None:
    c = make_cluster("official-plain")
    sts = c.sts()
    c.kube.patch(
        "StatefulSet", "geo", "gis", {"metadata": {"resourceVersion": sts["metadata"]["resourceVersion"]}}
    )
    with pytest.raises(Conflict):  # the version read above is gone now
        c.kube.patch(
            "StatefulSet", "geo", "gis", {"metadata": {"resourceVersion": sts["metadata"]["resourceVersion"]}}
        )
    cm = c.kube.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "geo"}}
    )
    c.kube.replace({**cm, "data": {"a": "1"}})  # the current version: accepted
    with pytest.raises(Conflict):
        c.kube.replace({**cm, "data": {"a": "2"}})  # the version it was read at is gone


@pytest.mark.parametrize(
    "patch",
    [
        {"spec": {"serviceName": "other"}},
        {"spec": {"selector": {"matchLabels": {"app": "other"}}}},
        {"spec": {"volumeClaimTemplates": []}},
        {"spec": {"podManagementPolicy": "Parallel"}},
    ],
)
def test_fake_refuses_changes_to_immutable_statefulset_fields(patch: dict[str, Any]) -> None:
    c = make_cluster("official-plain")
    with pytest.raises(EnvironmentProblem, match="422"):
        c.kube.patch("StatefulSet", "geo", "gis", patch)
    c.kube.patch("StatefulSet", "geo", "gis", {"spec": {"replicas": 0}})  # mutable: allowed


def test_a_rehearsal_waits_for_a_run_on_production() -> None:
    from tests.kube.test_rehearsal import Hooks, rehearse

    c = _interrupted()
    Lease(c.kube, c.namespace, objects.state_cm_name(c.name), "rollback", host="laptop", pid=7).acquire()
    writes = len(c.fake.writes_for_test())
    result = rehearse(c, Hooks())
    assert result["verdict"] == "no-go" and "another pgleap run works" in result["reason"], result
    assert len(c.fake.writes_for_test()) == writes  # nothing made, production's hold untouched
