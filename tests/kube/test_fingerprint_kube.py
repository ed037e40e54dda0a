"""The Kubernetes data proof's phases against the recording fake: serve-old after the stop,
serve-new after pg_upgrade and before the switch; a difference is exit 4 with the StatefulSet
still at 0 and no new StatefulSet (the data part runs on Docker: test_fingerprint_pods_on_docker)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from tests.kube.harness import JOB_ENV, SCRIPTS, Cluster, make_cluster
from toolkit.errors import VerificationFailed
from toolkit.kube import objects
from toolkit.kube.fingerprint import BEFORE_KEY, unpack
from toolkit.kube.model import DataProof

TARGET = "pgleap/postgis:17-3.5"
FP = {"tables": {"gis": {"public.t": [3, "abc"]}}, "extension_tables": {}, "sequences": {}, "extensions": {},
      "roles": []}  # fmt: skip


def serving(c: Cluster) -> list[str]:
    """Serve Jobs stay Running with a running `upgrade` container until pgleap's SIGINT (exec)."""
    fake, stopped = c.fake, []
    for action in ("serve-old", "serve-new"):
        fake.job_results[objects.job_name(c.name, action)] = "Running"
    create = fake.create_namespaced_job

    def create_job(namespace: str, body: Any, **kw: Any) -> Any:
        out = create(namespace, body, **kw)
        name = body.metadata.name
        if fake.job_results.get(name) == "Running":
            fake.seed_for_test({
                "kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": f"{name}-p", "namespace": namespace, "labels": {"job-name": name}},
                "spec": copy.deepcopy(fake._dict(body)["spec"]["template"]["spec"]),
                "status": {"phase": "Running", "containerStatuses": [{"name": "upgrade", "state": {"running": {}}, "image": "x", "imageID": "x", "ready": True, "restartCount": 0}]},
            })  # fmt: skip
        return out

    def exec_(namespace: str, pod: str, container: str, command: list[str]) -> str:
        assert (container, command) == ("upgrade", ["sh", "-c", "kill -INT 1"])
        job = pod.removesuffix("-p")
        stopped.append(job)
        fake.objects.pop((namespace, "Pod", pod), None)
        fake.finish_job_for_test(namespace, job, succeeded=True)
        return ""

    fake.create_namespaced_job = create_job  # type: ignore[method-assign]
    c.kube.exec = exec_  # type: ignore[method-assign]
    return stopped


def run(c: Cluster, after: dict[str, Any], *, before: dict[str, Any] = FP, compare=None):
    reads: list[str] = []

    def fingerprint(ctx) -> dict[str, Any]:
        reads.append(ctx.pod)
        # the old StatefulSet is down while either cluster is read; nothing new exists yet
        assert (
            c.sts()["spec"]["replicas"] == 0
            and c.fake.get_for_test("Pod", c.namespace, f"{c.name}-0") is None
        )
        return before if ctx.pod.startswith(objects.job_name(c.name, "serve-old")) else after

    def same(old: dict[str, Any], now: dict[str, Any]) -> list[str]:
        return [] if old == now else ["table gis.public.t: rows or content differ"]

    c.runtime.proof = DataProof(fingerprint, compare or same)
    out = c.runtime.upgrade(
        c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, post_upgrade=c.hook, mode="copy"
    )
    return out, reads


def test_verified_upgrade_fingerprints_before_and_after_pg_upgrade_before_the_switch() -> None:
    c = make_cluster("official-plain")
    stopped = serving(c)
    out, reads = run(c, copy.deepcopy(FP))
    assert out.phase == "done"
    assert reads == [f"{objects.job_name(c.name, a)}-p" for a in ("serve-old", "serve-new")]
    assert stopped == [objects.job_name(c.name, a) for a in ("serve-old", "serve-new")]
    data = c.fake.get_for_test("ConfigMap", c.namespace, objects.state_cm_name(c.name))["data"]
    assert unpack(data[BEFORE_KEY]) == FP
    jobs = [x.name for x in c.fake.writes_for_test() if x.verb == "create" and x.resource == "jobs"]
    assert jobs == [objects.job_name(c.name, a) for a in ("serve-old", "upgrade", "serve-new")]
    assert any("identical to the old cluster's" in line for line in out.unchanged)
    # Inside the window the serve Jobs repeat no work: no collect, each on its cluster's own image.
    created = {
        x.name: x.detail["body"]["spec"]["template"]["spec"]
        for x in c.fake.calls
        if x.verb == "create" and x.resource == "jobs"
    }
    for action, image in (("serve-old", "pgleap/postgis:13-3.1"), ("serve-new", TARGET)):
        pod = created[objects.job_name(c.name, action)]
        assert "initContainers" not in pod and [v["name"] for v in pod["volumes"]] == ["scripts", "data"]
        assert [(x["name"], x["image"]) for x in pod["containers"]] == [("upgrade", image)]
    upgrade_pod = created[objects.job_name(c.name, "upgrade")]
    assert [x["name"] for x in upgrade_pod["initContainers"]] == ["collect"]  # the upgrade Job still does


def test_a_difference_stops_with_exit_4_before_anything_opens() -> None:
    c = make_cluster("official-plain")
    serving(c)
    changed = copy.deepcopy(FP)
    changed["tables"]["gis"]["public.t"] = [3, "abd"]
    with pytest.raises(VerificationFailed) as exc:
        run(c, changed)
    assert exc.value.exit_code == 4
    assert "gis.public.t" in exc.value.message and "nothing was opened to clients" in exc.value.hint
    assert "pgleap rollback sts" in exc.value.hint  # copy mode: the old cluster can come back
    data = c.fake.get_for_test("ConfigMap", c.namespace, objects.state_cm_name(c.name))["data"]
    assert data["phase"] == "upgraded"  # not compared, not switched: resume compares again
    sts = c.sts()
    assert (
        sts["spec"]["replicas"] == 0 and sts["spec"]["template"]["spec"]["containers"][0]["image"] != TARGET
    )
    assert not [x for x in c.fake.writes_for_test() if x.verb == "create" and x.resource == "statefulsets"]
    assert not c.hook_calls  # post-upgrade never ran on the unproven cluster
    # resume compares again (a new serve-new Job): still different, still exit 4, still at 0
    with pytest.raises(VerificationFailed):
        c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS, post_upgrade=c.hook)
    assert c.sts()["spec"]["replicas"] == 0 and not c.hook_calls
    # the operator read the differences and accepts them: the run goes on and switches
    out = c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS, post_upgrade=c.hook, accept=("fingerprint",))
    assert out.phase == "done" and any(n.startswith("accepted") and "gis.public.t" in n for n in out.notes)
    assert c.image() == TARGET and len(c.hook_calls) == 1


def test_without_a_proof_no_serve_job_runs() -> None:
    c = make_cluster("official-plain")
    c.runtime.upgrade(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, post_upgrade=c.hook)
    jobs = [x.name for x in c.fake.writes_for_test() if x.verb == "create" and x.resource == "jobs"]
    assert jobs == [objects.job_name(c.name, "upgrade")]


def test_link_mode_says_the_point_of_no_return_before_serving_the_new_cluster() -> None:
    c = make_cluster("official-plain")
    serving(c)
    c.runtime.proof = DataProof(lambda ctx: FP, lambda a, b: ["different"])
    serve_new = objects.job_name(c.name, "serve-new")
    said: list[bool] = []  # for each "point of no return" line: did the serve-new Job exist then?

    def log(line: str) -> None:
        if line.startswith("point of no return"):
            said.append(c.fake.get_for_test("Job", c.namespace, serve_new) is not None)

    c.runtime.log = log
    with pytest.raises(VerificationFailed) as exc:
        c.runtime.upgrade(c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, mode="link")
    assert said == [False]  # said once, before the new cluster was served
    assert "rollback is no longer possible" in exc.value.hint


def _proving(c: Cluster, *, corrupt: bool) -> list[str]:
    """A DataProof with the `proved` part: its post-upgrade may change a value (a skipped repair)."""
    ran: list[str] = []
    state = {"value": "abc"}

    def fingerprint(ctx) -> dict[str, Any]:
        fp = copy.deepcopy(FP)
        fp["tables"]["gis"]["public.t"] = [3, state["value"]]
        return fp

    def post_upgrade(ctx) -> dict[str, Any]:
        # before the switch: the old StatefulSet at 0, no new one, the served new cluster's pod
        assert c.sts()["spec"]["replicas"] == 0
        assert not [
            x for x in c.fake.writes_for_test() if x.verb == "create" and x.resource == "statefulsets"
        ]
        ran.append(ctx.pod)
        if corrupt:
            state["value"] = "abd"
        return {"extensions_updated": ["gis: postgis 3.1.4 -> 3.5.2"], "trap_repairs": []}

    def compare_user(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[str], list[str]]:
        return ([] if before == after else ["table gis.public.t: rows or content differ"]), [
            "gis.spatial_ref_sys"
        ]

    c.runtime.proof = DataProof(fingerprint, lambda a, b: [] if a == b else ["x"], post_upgrade, compare_user)
    return ran


def test_proved_runs_the_post_upgrade_on_serve_new_before_the_switch_not_after() -> None:
    c = make_cluster("official-plain")
    serving(c)
    ran = _proving(c, corrupt=False)
    out = c.runtime.upgrade(
        c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, post_upgrade=c.hook, mode="copy"
    )
    assert out.phase == "done" and ran == [f"{objects.job_name(c.name, 'serve-new')}-p"]
    jobs = [x.name for x in c.fake.writes_for_test() if x.verb == "create" and x.resource == "jobs"]
    assert jobs == [objects.job_name(c.name, a) for a in ("serve-old", "upgrade", "serve-new", "serve-new")]
    assert not c.hook_calls  # not run again on the serving database
    assert any("extension-owned" in n and "spatial_ref_sys" in n for n in out.notes)
    assert any("1 extensions updated" in line for line in out.changed)
    state = c.runtime.read_state(c.namespace, c.name)
    assert c.runtime.proves(state.plan)
    assert c.runtime.proves(dataclasses.replace(state.plan, rehearsal_of="gis"))  # a rehearsal proves too


def test_a_value_changed_by_the_post_upgrade_is_exit_4_before_the_switch() -> None:
    c = make_cluster("official-plain")
    serving(c)
    _proving(c, corrupt=True)
    with pytest.raises(VerificationFailed) as exc:
        c.runtime.upgrade(
            c.namespace, c.name, TARGET, scripts=SCRIPTS, job_env=JOB_ENV, post_upgrade=c.hook, mode="copy"
        )
    assert exc.value.exit_code == 4 and "after the extension updates" in exc.value.message
    assert "gis.public.t" in exc.value.message and "nothing was opened to clients" in exc.value.hint
    data = c.fake.get_for_test("ConfigMap", c.namespace, objects.state_cm_name(c.name))["data"]
    assert data["phase"] == "compared"
    assert c.sts()["spec"]["replicas"] == 0 and not c.hook_calls
    assert not [x for x in c.fake.writes_for_test() if x.verb == "create" and x.resource == "statefulsets"]
