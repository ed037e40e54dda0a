"""`upgrade sts --downtime minimal` against the recording fake: the prepare Job runs beside the
serving pod (pinned to its node) before the stop, the window holds only the upgrade Job (no
separate --check) and the switch, no fingerprint; a ReadWriteOncePod claim is refused first."""

from __future__ import annotations

import pytest

from tests.kube.harness import JOB_ENV, SCRIPTS, make_cluster
from tests.kube.test_fingerprint_kube import serving
from toolkit.errors import PgleapError, Refused
from toolkit.kube import objects, render
from toolkit.kube.model import DataProof

TARGET = "pgleap/postgis:17-3.5"


def _env(job: dict) -> dict[str, str]:
    main = next(c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "upgrade")
    return {e["name"]: e["value"] for e in main["env"]}


def test_minimal_prepares_beside_the_running_pod_then_only_upgrades_in_the_window() -> None:
    c = make_cluster("official-plain")
    serving(c)
    c.runtime.proof = DataProof(lambda ctx: pytest.fail("no fingerprint in minimal mode"), lambda a, b: [])
    out = c.runtime.upgrade(
        c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, post_upgrade=c.hook, downtime="minimal"
    )
    assert out.phase == "done" and "prepared" in out.seconds
    writes = c.fake.writes_for_test()
    jobs = [x.name for x in writes if x.verb == "create" and x.resource == "jobs"]
    assert jobs == [objects.job_name(c.name, a) for a in ("prepare", "upgrade")]
    order = [(x.verb, x.resource, x.name) for x in writes]
    stop = next(
        i for i, x in enumerate(writes)
        if x.resource == "statefulsets" and x.detail.get("patch", {}).get("spec", {}).get("replicas") == 0
    )  # fmt: skip
    assert order.index(("create", "jobs", objects.job_name(c.name, "prepare"))) < stop
    prepare = c.fake.get_for_test("Job", c.namespace, objects.job_name(c.name, "prepare"))
    assert _env(prepare)["PGLEAP_ACTION"] == "prepare"
    terms = prepare["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert any(c.fake.node in str(t) for t in terms)  # RWO: on the serving pod's node
    upgrade = c.fake.get_for_test("Job", c.namespace, objects.job_name(c.name, "upgrade"))
    assert _env(upgrade)["PGLEAP_CHECK"] == "0"
    assert any("point of no return" in line for line in c.lines)  # link mode: said before the switch
    # The old binaries are collected once, by the prepare Job, onto the data volume: the upgrade Job's
    # collect finds them there (collect.sh: collected.env), so nothing is collected in the window.
    for job in (prepare, upgrade):
        pod = job["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        staged = "/pgleap/volume/.pgleap/old-binaries"
        assert (
            init["env"] == [{"name": "PGLEAP_OLD_ROOT", "value": staged}]
            and _env(job)["PGLEAP_OLD_ROOT"] == staged
        )
        data = next(v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v)
        assert [m["name"] for m in init["volumeMounts"]] == ["scripts", data]
        assert not [v for v in pod["volumes"] if "emptyDir" in v]


def test_verified_mode_collects_into_the_jobs_own_scratch_volume() -> None:
    c = make_cluster("official-plain")
    job = render.upgrade_job(
        c.runtime.plan(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV)[0], c.sts()
    )
    pod = job["spec"]["template"]["spec"]
    assert _env(job)["PGLEAP_OLD_ROOT"] == "/pgleap/old"
    assert {"name": "old-binaries", "emptyDir": {}} in pod["volumes"]


def test_minimal_refuses_a_read_write_once_pod_claim_before_any_write() -> None:
    c = make_cluster("official-plain")
    pvc = c.fake.get_for_test("PersistentVolumeClaim", c.namespace, "data-gis-0")
    pvc["spec"]["accessModes"] = ["ReadWriteOncePod"]
    c.fake.seed_for_test(pvc)
    with pytest.raises(Refused, match="ReadWriteOncePod") as exc:
        c.runtime.upgrade(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, downtime="minimal")
    assert exc.value.exit_code == 3 and "--downtime verified" in exc.value.hint
    assert not c.fake.writes_for_test()


def test_an_unknown_downtime_mode_is_refused() -> None:
    c = make_cluster("official-plain")
    with pytest.raises(Refused, match="unknown downtime mode"):
        c.runtime.upgrade(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, downtime="fast")
    assert not c.fake.writes_for_test()


def test_finalize_removes_the_prepare_job() -> None:
    c = make_cluster("official-plain")
    c.runtime.upgrade(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, downtime="minimal")
    c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
    assert c.fake.get_for_test("Job", c.namespace, objects.job_name(c.name, "prepare")) is None


def test_a_minimal_run_restored_before_the_upgrade_job_removes_the_prepare_jobs_staging() -> None:
    c = make_cluster("official-plain")

    def snapshot_fails(plan, out) -> None:
        raise PgleapError("VolumeSnapshot failed", "")

    c.runtime._step_snapshot = snapshot_fails  # type: ignore[method-assign]  # after the stop
    with pytest.raises(PgleapError, match="automatic restore"):
        c.runtime.upgrade(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, downtime="minimal")
    jobs = [x.name for x in c.fake.writes_for_test() if x.verb == "create" and x.resource == "jobs"]
    assert jobs == [objects.job_name(c.name, a) for a in ("prepare", "cleanup")]  # no rollback Job
    cleanup = c.fake.get_for_test("Job", c.namespace, objects.job_name(c.name, "cleanup"))
    assert _env(cleanup)["PGLEAP_ACTION"] == "cleanup"
    assert c.sts()["spec"]["replicas"] == 1  # serves again, on its old image
