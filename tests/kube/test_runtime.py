"""The Kubernetes runtime against the fake cluster: check the world after each command."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.kube.conftest import load_sts
from tests.kube.fake_api import Call
from tests.kube.harness import JOB_ENV, SCRIPTS, Cluster, make_cluster
from toolkit.errors import EnvironmentProblem, PgleapError, Refused
from toolkit.kube import objects
from toolkit.kube.api import Forbidden
from toolkit.kube.guard import GuardOverrides
from toolkit.kube.model import ROLLBACK_PHASES, UPGRADE_PHASES

CASES = {
    "official-plain": ("pgleap/postgis:17-3.5", GuardOverrides()),
    "bitnami": ("docker.io/bitnamilegacy/postgresql:17.2.0-debian-12-r8", GuardOverrides(allow_helm=True)),
    "sidecar": ("registry.example.com/postgis/postgis:18-3.6", GuardOverrides()),
    "when-scaled-delete": ("pgleap/postgis:18-3.x", GuardOverrides()),
    "groundhog2k": ("postgres:18.1", GuardOverrides(allow_helm=True)),
    "argo": ("postgis/postgis:17-3.5", GuardOverrides(allow_argocd=True)),
    "flux": ("postgis/postgis:18-3.6-alpine", GuardOverrides(allow_flux=True)),
}


def upgrade(c: Cluster, fixture: str, **kw: Any):
    target, overrides = CASES[fixture]
    return c.runtime.upgrade(
        c.namespace,
        c.name,
        target,
        scripts=SCRIPTS,
        job_env=JOB_ENV,
        overrides=overrides,
        post_upgrade=c.hook,
        **kw,
    )


def pvc_uid(c: Cluster, fixture: str) -> str:
    facts_claim = {
        "official-plain": "data",
        "bitnami": "data",
        "sidecar": "pgdata",
        "when-scaled-delete": "data",
        "groundhog2k": "pg-data",
        "argo": "data",
        "flux": "osm-data",
    }[fixture]
    pvc = c.fake.get_for_test("PersistentVolumeClaim", c.namespace, f"{facts_claim}-{c.name}-0")
    assert pvc is not None, "the database PVC is gone"
    return pvc["metadata"]["uid"]


def state(c: Cluster) -> dict[str, str] | None:
    cm = c.fake.get_for_test("ConfigMap", c.namespace, objects.state_cm_name(c.name))
    return cm["data"] if cm else None


def calls(c: Cluster, verb: str, resource: str) -> list[Call]:
    return [
        x for x in c.fake.calls if x.verb == verb and x.resource == resource and not x.detail.get("injected")
    ]


def comparable(sts: dict[str, Any]) -> dict[str, Any]:
    out = objects.clean_object(sts)
    out["metadata"].pop("namespace", None)
    return json.loads(json.dumps(out))


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_full_upgrade(fixture: str) -> None:
    c = make_cluster(fixture)
    uid = pvc_uid(c, fixture)
    original = c.sts()
    out = upgrade(c, fixture)
    target = CASES[fixture][0]
    assert out.phase == "done"
    new = c.sts()
    assert new is not None
    pg = next(x for x in new["spec"]["template"]["spec"]["containers"] if target == x["image"])
    assert pg["image"] == target
    assert pvc_uid(c, fixture) == uid  # same claim, never recreated
    assert new["spec"]["volumeClaimTemplates"] == original["spec"]["volumeClaimTemplates"]
    assert new["spec"].get("persistentVolumeClaimRetentionPolicy") == original["spec"].get(
        "persistentVolumeClaimRetentionPolicy"
    )
    (delete,) = calls(c, "delete", "statefulsets")
    assert delete.detail["propagation"] == "Orphan"
    assert len(calls(c, "create", "jobs")) == 1
    assert state(c)["phase"] == "done" and state(c)["operation"] == "upgrade"
    assert len(c.hook_calls) == 1 and c.hook_calls[0].pod == f"{c.name}-0"
    assert any(line.startswith("[upgrade] pgleap-") for line in c.lines)  # logs streamed line by line
    assert any(line.startswith("[collect] ") for line in c.lines)
    job = c.fake.get_for_test("Job", c.namespace, objects.job_name(c.name, "upgrade"))
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGLEAP_ACTION"] == "upgrade" and env["PGLEAP_SUPERUSER"] == "postgres"
    # order: stop before the Job, the Job before the switch
    order = [(x.verb, x.resource) for x in c.fake.writes_for_test()]
    assert order.index(("create", "jobs")) < order.index(("delete", "statefulsets"))
    patches = [
        x for x in calls(c, "patch", "statefulsets") if x.detail["patch"].get("spec", {}).get("replicas") == 0
    ]
    assert order.index(("patch", "statefulsets")) <= c.fake.writes_for_test().index(patches[0])


def test_rerun_after_success_makes_no_writes() -> None:
    c = make_cluster("official-plain")
    upgrade(c, "official-plain")
    before = len(c.fake.writes_for_test())
    out = upgrade(c, "official-plain")
    assert out.changed == [] and out.unchanged
    assert len(c.fake.writes_for_test()) == before
    out = c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
    assert out.changed == [] and len(c.fake.writes_for_test()) == before


def test_when_scaled_delete_keeps_the_pvc_only_because_of_the_patch() -> None:
    c = make_cluster("when-scaled-delete")
    uid = pvc_uid(c, "when-scaled-delete")
    upgrade(c, "when-scaled-delete")
    assert pvc_uid(c, "when-scaled-delete") == uid
    assert c.sts()["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Delete",
    }
    # the fake's controller deletes the claim when scaled down under Delete: the patch is what saved it
    c2 = make_cluster("when-scaled-delete")
    c2.fake.patch_namespaced_stateful_set(
        "scratch", "geo", {"spec": {"replicas": 0}}, _content_type="application/merge-patch+json"
    )
    assert c2.fake.get_for_test("PersistentVolumeClaim", "geo", "data-scratch-0") is None
    c3 = make_cluster("when-scaled-delete")
    with pytest.raises(Refused, match="whenScaled=Delete"):
        upgrade(c3, "when-scaled-delete", patch_retention=False)
    assert c3.fake.writes_for_test() == []


class Crash(Exception):
    """Injected: pgleap dies here."""


def crash_after_phase(c: Cluster, phase: str) -> None:
    """Make the first call after `phase` is recorded fail (as if the process died there)."""
    cm = objects.state_cm_name(c.name)
    armed = {"on": False}

    def hook(call: Call) -> Exception | None:
        if armed["on"]:
            c.fake.error_hook = None
            return Crash(phase)
        recorded = (phase == "recorded" and call.verb == "create" and call.name == cm) or (
            call.verb == "patch"
            and call.name == cm
            and call.detail["patch"].get("data", {}).get("phase") == phase
        )
        if recorded:
            armed["on"] = True
        return None

    c.fake.error_hook = hook


CRASH_PHASES = [p for p in UPGRADE_PHASES if p != "done"]


@pytest.mark.parametrize("phase", CRASH_PHASES)
def test_crash_after_phase_then_resume(phase: str) -> None:
    c = make_cluster("when-scaled-delete")
    uid = pvc_uid(c, "when-scaled-delete")
    crash_after_phase(c, phase)
    with pytest.raises(Crash):
        upgrade(c, "when-scaled-delete", snapshot=True)
    assert state(c)["phase"] == phase
    with pytest.raises(Refused, match="resume"):
        upgrade(c, "when-scaled-delete", snapshot=True)
    out = c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS, post_upgrade=c.hook)
    assert out.phase == "done" and state(c)["phase"] == "done"
    assert c.image() == "pgleap/postgis:18-3.x"
    assert pvc_uid(c, "when-scaled-delete") == uid
    assert len(calls(c, "create", "jobs")) == 1
    assert len(calls(c, "create", "volumesnapshots")) == 1
    # a crash after the hook ran but before "verified" was recorded runs it again: at least once
    assert len(c.hook_calls) == (2 if phase == "started" else 1)


@pytest.mark.parametrize("phase", CRASH_PHASES)
def test_crash_after_phase_then_rollback(phase: str) -> None:
    c = make_cluster("when-scaled-delete")
    uid = pvc_uid(c, "when-scaled-delete")
    original = c.sts()
    crash_after_phase(c, phase)
    with pytest.raises(Crash):
        upgrade(
            c, "when-scaled-delete", mode="copy"
        )  # link: see test_link_rollback_after_the_new_cluster_ran
    out = c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    assert out.phase == "rolled-back"
    assert comparable(c.sts()) == comparable(original)
    assert c.sts()["status"]["readyReplicas"] == 1
    assert pvc_uid(c, "when-scaled-delete") == uid
    upgrade_job_ran = bool(calls(c, "create", "jobs")) and calls(c, "create", "jobs")[0].name.endswith(
        "-upgrade"
    )
    rollback_jobs = [x for x in calls(c, "create", "jobs") if x.name.endswith("-rollback")]
    assert len(rollback_jobs) == (1 if upgrade_job_ran else 0)
    ran = UPGRADE_PHASES.index(phase) >= UPGRADE_PHASES.index("switched")
    assert any("is lost by the rollback" in n for n in out.notes) == ran  # the loss was named
    # a second rollback changes nothing; finalize then removes pgleap's objects and keeps the data
    writes = len(c.fake.writes_for_test())
    assert c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS).changed == []
    assert len(c.fake.writes_for_test()) == writes
    c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
    assert state(c) is None
    assert not [x for x in calls(c, "create", "jobs") if x.name.endswith("-finalize")]
    assert pvc_uid(c, "when-scaled-delete") == uid and comparable(c.sts()) == comparable(original)


def accept(_loss: str) -> bool:
    """The user's --yes: the writes made on the new cluster may be dropped."""
    return True


def _sts_or_pvc_writes(c: Cluster) -> list[Call]:
    return [x for x in c.fake.writes_for_test() if x.resource in ("statefulsets", "persistentvolumeclaims")]


@pytest.mark.parametrize("phase", [*CRASH_PHASES, "done"])
def test_link_rollback_after_the_new_cluster_ran_is_refused_before_any_change(phase: str) -> None:
    """upgrade.sh refuses a link rollback once the new cluster ran: pgleap asks first (rollback-check)."""
    c = make_cluster("when-scaled-delete")
    if phase == "done":
        upgrade(c, "when-scaled-delete")
    else:
        crash_after_phase(c, phase)
        with pytest.raises(Crash):
            upgrade(c, "when-scaled-delete")
    before = (c.sts(), state(c), _sts_or_pvc_writes(c))
    ran = phase == "done" or UPGRADE_PHASES.index(phase) >= UPGRADE_PHASES.index("switched")
    if not ran:
        assert c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS).phase == "rolled-back"
        return
    with pytest.raises(Refused, match="rollback is not possible, nothing was changed") as exc:
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    assert exc.value.exit_code == 3 and "--link" in exc.value.message
    assert (c.sts(), state(c), _sts_or_pvc_writes(c)) == before  # not scaled, not patched, phase kept
    assert not [x for x in calls(c, "create", "jobs") if x.name.endswith("-rollback")]
    checks = [x for x in calls(c, "create", "jobs") if x.name.endswith("-rollback-check")]
    assert len(checks) == 1 and c.fake.get_for_test("Job", c.namespace, checks[0].name) is None  # removed
    assert c.sts()["status"]["readyReplicas"] == 1  # the upgraded database keeps serving


def test_copy_rollback_after_the_new_cluster_ran_needs_the_loss_accepted() -> None:
    c = make_cluster("official-plain")
    upgrade(c, "official-plain", mode="copy")
    before = (c.sts(), state(c), _sts_or_pvc_writes(c))
    with pytest.raises(Refused, match="would drop data") as exc:
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS)  # nobody to ask: refused
    assert "--yes" in exc.value.hint and exc.value.exit_code == 3
    with pytest.raises(Refused, match="not confirmed"):
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=lambda _loss: False)
    assert (c.sts(), state(c), _sts_or_pvc_writes(c)) == before
    out = c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    assert out.phase == "rolled-back" and c.image() == "pgleap/postgis:13-3.1"


def test_rollback_check_failing_changes_nothing() -> None:
    c = make_cluster("official-plain")
    upgrade(c, "official-plain", mode="copy")
    before = (c.sts(), state(c))
    c.fake.job_results["pgleap-gis-rollback-check"] = "Failed"
    with pytest.raises(PgleapError, match="rollback check Job pgleap-gis-rollback-check failed"):
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    assert (c.sts(), state(c)) == before


def count_writes(fixture: str) -> int:
    c = make_cluster(fixture)
    upgrade(c, fixture)
    return len(c.fake.writes_for_test())


@pytest.mark.parametrize("index", range(count_writes("official-plain")))
def test_crash_before_every_write_then_resume(index: str) -> None:
    c = make_cluster("official-plain")
    seen = {"n": 0}

    def hook(call: Call) -> Exception | None:
        if call.write:
            if seen["n"] == index:
                c.fake.error_hook = None
                return Crash(call)
            seen["n"] += 1
        return None

    c.fake.error_hook = hook
    try:
        upgrade(c, "official-plain")
    except Crash:
        pass
    else:  # the last write gives the run's hold back; failing it must not fail the finished run
        assert index == count_writes("official-plain") - 1 and state(c)["phase"] == "done"
        assert c.runtime.status(c.namespace, c.name)["held_by"] is not None  # left behind, visible
        c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)  # ...and taken over: its run ended
        assert state(c) is None
        return
    if state(c) is None:  # died before anything was recorded: start again
        upgrade(c, "official-plain")
    else:
        c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS, post_upgrade=c.hook)
    assert state(c)["phase"] == "done" and c.image() == "pgleap/postgis:17-3.5"
    assert len(calls(c, "create", "jobs")) == 1


def test_failed_upgrade_job_restores_the_old_statefulset_by_itself() -> None:
    """Issue 13: a failure before the new cluster starts does not leave the database scaled to 0.
    upgrade.sh's rollback-check decides first, then the ordinary rollback runs under the same hold."""
    c = make_cluster("official-plain")
    original = c.sts()
    c.fake.job_results["pgleap-gis-upgrade"] = "Failed"
    with pytest.raises(PgleapError, match="Job pgleap-gis-upgrade failed") as exc:
        upgrade(c, "official-plain")
    assert "serves again on its old image (automatic restore)" in exc.value.message
    assert comparable(c.sts()) == comparable(original) and c.sts()["spec"]["replicas"] == 1
    assert state(c)["phase"] == "rolled-back"
    made = {j.name for j in calls(c, "create", "jobs")}
    assert {"pgleap-gis-upgrade", "pgleap-gis-rollback-check", "pgleap-gis-rollback"} <= made, made
    assert c.runtime.status(c.namespace, c.name)["held_by"] is None  # the hold was given back


def test_failed_job_is_not_retried_and_rollback_works() -> None:
    c = make_cluster("official-plain")
    c.fake.job_results["pgleap-gis-upgrade"] = "Failed"
    with pytest.raises(PgleapError, match="Job pgleap-gis-upgrade failed") as exc:
        upgrade(c, "official-plain", auto_restore=False)  # --no-auto-restore: the old behaviour
    assert "rollback" in exc.value.hint
    with pytest.raises(PgleapError, match="failed"):
        c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
    assert len(calls(c, "create", "jobs")) == 1  # no second pg_upgrade
    assert c.fake.get_for_test("StatefulSet", "geo", "gis")["spec"]["replicas"] == 0  # old sts kept, stopped
    c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS)
    job = c.fake.get_for_test("Job", "geo", "pgleap-gis-rollback")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGLEAP_ACTION"] == "rollback"
    assert c.image() == "pgleap/postgis:13-3.1" and c.sts()["spec"]["replicas"] == 1


def test_rollback_after_done_restores_original() -> None:
    c = make_cluster("sidecar")
    original = c.sts()
    upgrade(c, "sidecar", mode="copy")
    c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    assert comparable(c.sts()) == comparable(original)
    deletes = calls(c, "delete", "statefulsets")
    assert len(deletes) == 2 and all(d.detail["propagation"] == "Orphan" for d in deletes)


def test_finalize_pins_job_to_running_pod_and_cleans_up() -> None:
    c = make_cluster("bitnami")
    uid = pvc_uid(c, "bitnami")
    upgrade(c, "bitnami")
    out = c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
    assert out.phase == "finalized"
    (create,) = [x for x in calls(c, "create", "jobs") if x.name.endswith("-finalize")]
    assert create.name == "pgleap-pg-postgresql-finalize"
    assert state(c) is None
    assert c.fake.get_for_test("ConfigMap", "db", "pgleap-pg-postgresql-scripts") is None
    for action in ("upgrade", "finalize"):
        assert c.fake.get_for_test("Job", "db", f"pgleap-pg-postgresql-{action}") is None
    assert pvc_uid(c, "bitnami") == uid
    assert any("VolumeSnapshot" in n for n in out.notes)  # auto snapshot (class exists) is kept
    writes = len(c.fake.writes_for_test())
    assert c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS).changed == []
    assert len(c.fake.writes_for_test()) == writes


def test_finalize_job_pinned_to_pod_node() -> None:
    c = make_cluster("official-plain")
    upgrade(c, "official-plain")
    c.fake.simulate = False
    c.fake.error_hook = None
    orig_create = c.fake.create_namespaced_job
    seen: list[dict] = []

    def spy(namespace, body, **kw):
        seen.append(c.fake._dict(body))
        result = orig_create(namespace, body, **kw)
        c.fake.finish_job_for_test(namespace, body.metadata.name)
        return result

    c.fake.create_namespaced_job = spy  # type: ignore[method-assign]
    c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
    terms = seen[0]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}]


def test_finalize_refused_mid_upgrade() -> None:
    c = make_cluster("official-plain")
    crash_after_phase(c, "upgraded")
    with pytest.raises(Crash):
        upgrade(c, "official-plain")
    with pytest.raises(Refused, match="stopped at phase 'upgraded'"):
        c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)


def test_unknown_statefulset() -> None:
    c = make_cluster("official-plain")
    with pytest.raises(Refused, match="StatefulSet nope not found in namespace geo"):
        c.runtime.upgrade("geo", "nope", "pgleap/postgis:17-3.5", scripts=SCRIPTS)


def test_forbidden_names_the_missing_permission() -> None:
    c = make_cluster("official-plain")
    c.fake.error_hook = lambda call: (
        ApiException(status=403, reason="Forbidden")
        if (call.verb, call.resource) == ("create", "jobs")
        else None
    )
    with pytest.raises(Forbidden) as exc:
        upgrade(c, "official-plain")
    assert "'create' on batch/jobs in namespace geo" in exc.value.message
    assert "manifests/rbac.yaml" in exc.value.hint
    assert isinstance(exc.value, EnvironmentProblem)


def test_cluster_scoped_reads_are_optional() -> None:
    c = make_cluster("official-plain")
    c.fake.error_hook = lambda call: (
        ApiException(status=403, reason="Forbidden") if call.namespace is None else None
    )
    plan, _, _ = c.runtime.plan(c.namespace, c.name, "pgleap/postgis:17-3.5")
    # without the PV, the Job is pinned to the node the database last ran on
    assert plan.node_terms == (
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]},
    )
    assert any("skipped PersistentVolume" in line for line in c.lines)


def test_stop_times_out_after_grace_period() -> None:
    c = make_cluster("official-plain")
    c.fake.simulate = False  # the pod never goes away
    with pytest.raises(PgleapError, match="timed out after 180s waiting for pod gis-0 to stop"):
        upgrade(c, "official-plain", auto_restore=False)  # (with it, the restore times out the same way)
    assert state(c)["phase"] == "replicas-stopped"  # the step before the stop


def test_status_reports_phase_and_jobs() -> None:
    c = make_cluster("official-plain")
    assert c.runtime.status("geo", "gis")["phase"] is None
    upgrade(c, "official-plain")
    st = c.runtime.status("geo", "gis")
    assert (st["operation"], st["phase"], st["jobs"], st["ready"]) == (
        "upgrade",
        "done",
        {"upgrade": "Complete"},
        True,
    )
    assert st["to"] == "pgleap/postgis:17-3.5"


def test_state_holds_the_original_statefulset() -> None:
    c = make_cluster("official-plain")
    upgrade(c, "official-plain")
    stored = json.loads(state(c)["statefulset.json"])
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "pgleap/postgis:13-3.1"
    assert comparable(stored) == comparable(load_sts("official-plain"))


def test_rollback_phases_are_recorded_in_order() -> None:
    c = make_cluster("official-plain")
    upgrade(c, "official-plain", mode="copy")
    c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    phases = [
        x.detail["patch"]["data"]["phase"]
        for x in calls(c, "patch", "configmaps")
        if x.detail["patch"].get("data", {}).get("operation") == "rollback"
    ]
    assert phases == list(ROLLBACK_PHASES)


def test_swap_rollback_after_pg_upgrade_is_refused_before_any_change() -> None:
    """pg_upgrade --swap moved the old cluster's files: upgrade.sh refuses even before the switch."""
    c = make_cluster("when-scaled-delete")  # 18 target: --swap exists
    crash_after_phase(c, "upgraded")
    with pytest.raises(Crash):
        upgrade(c, "when-scaled-delete", mode="swap")
    before = (c.sts(), state(c), _sts_or_pvc_writes(c))
    with pytest.raises(Refused, match="--swap has run"):
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    assert (c.sts(), state(c), _sts_or_pvc_writes(c)) == before
