"""Streaming standbys on Kubernetes: detection, the re-seed Jobs, and the runtime's replica phases."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tests.kube.conftest import load_docs, of_kind
from tests.kube.fake_api import Call
from tests.kube.harness import JOB_ENV, SCRIPTS, Cluster, make_cluster
from tests.kube.test_runtime import Crash, accept, calls, comparable, crash_after_phase, state
from tests.kube.validation import validate_strict, versions
from toolkit.errors import PgleapError, Refused
from toolkit.kube import guard, objects, render
from toolkit.kube.facts import StsFacts, gather
from toolkit.kube.guard import GuardOverrides
from toolkit.kube.image_ref import parse_image
from toolkit.kube.model import FINALIZE_PHASES, ROLLBACK_PHASES, UPGRADE_PHASES
from toolkit.kube.plan import KubePlan, make_plan, read_availability
from toolkit.kube.topology import Topology, detect

PAIR, ORDINALS = "bitnami-replication", "ordinals"
REPLICA_CASES = {
    PAIR: ("docker.io/bitnamilegacy/postgresql:17.2.0-debian-12-r8", GuardOverrides(allow_helm=True)),
    ORDINALS: ("pgleap/postgis:17-3.5", GuardOverrides()),
}
READ = "pg-postgresql-read"
NEW_PHASES = ("replicas-stopped", "reseeded", "replicas-started", "streaming")


def sts_doc(fixture: str, name: str | None = None) -> dict[str, Any]:
    docs = of_kind(load_docs(fixture), "StatefulSet")
    return next(d for d in docs if name is None or d["metadata"]["name"] == name)


def facts_for(fixture: str, sts: dict[str, Any]) -> StsFacts:
    docs = load_docs(fixture)
    return gather(
        sts,
        pvcs=of_kind(docs, "PersistentVolumeClaim"),
        pvs=of_kind(docs, "PersistentVolume"),
        pods=of_kind(docs, "Pod"),
        services=of_kind(docs, "Service"),
    )


def topology_of(fixture: str, primary: dict[str, Any] | None = None, read: dict | None = None) -> Topology:
    primary = primary or sts_doc(fixture)
    services = of_kind(load_docs(fixture), "Service")
    if fixture == PAIR:
        read = read or sts_doc(PAIR, READ)
        return detect(
            primary,
            facts_for(fixture, primary),
            read_sts=read,
            read_facts=facts_for(fixture, read),
            services=services,
        )
    return detect(primary, facts_for(fixture, primary), services=services)


def plan_of(fixture: str, *, keep_readers: bool = False) -> KubePlan:
    primary = sts_doc(fixture)
    read_facts = facts_for(PAIR, sts_doc(PAIR, READ)) if fixture == PAIR else None
    return make_plan(
        facts_for(fixture, primary),
        REPLICA_CASES[fixture][0],
        job_env=JOB_ENV,
        run_id="r1",
        topology=topology_of(fixture),
        read_facts=read_facts,
        keep_readers=keep_readers,
    )


def holder(fixture: str) -> dict[str, Any]:
    return sts_doc(PAIR, READ) if fixture == PAIR else sts_doc(fixture)


# -- detection ------------------------------------------------------------------------------------


def test_detect_bitnami_primary_read_pair() -> None:
    t = topology_of(PAIR)
    assert t.problem is None and t.kind == "primary-read"
    assert (t.primary_sts, t.replica_sts, t.replica_count) == ("pg-postgresql-primary", READ, 2)
    assert [(s.pod, s.pvc, s.size) for s in t.standbys] == [
        ("pg-postgresql-read-0", "data-pg-postgresql-read-0", "8Gi"),
        ("pg-postgresql-read-1", "data-pg-postgresql-read-1", "8Gi"),
    ]
    # pinned where each standby's own EBS volume can attach (not the primary's zone)
    zones = [s.node_terms[0]["matchExpressions"][0]["values"] for s in t.standbys]
    assert zones == [["eu-west-1b"], ["eu-west-1c"]]
    assert t.primary_host == "pg-postgresql-primary-0.pg-postgresql-primary-hl.db.svc"
    assert t.replication_user == "repl_user"
    assert t.password_secret == {"name": "pg-postgresql", "key": "replication-password"}
    assert t.read_services == ("pg-postgresql-read", "pg-postgresql-read-hl")
    assert t.standbys[0].slot == "pgleap_pg_postgresql_read_0"
    assert any("POSTGRES_REPLICATION_MODE" in e for e in t.evidence)


def test_detect_ordinals() -> None:
    t = topology_of(ORDINALS)
    assert t.problem is None and t.kind == "ordinals"
    assert [(s.pod, s.pvc, s.node) for s in t.standbys] == [
        ("gis-1", "data-gis-1", "node-b"),
        ("gis-2", "data-gis-2", "node-c"),
    ]
    # no PV readable: the node the standby last ran on
    assert t.standbys[0].node_terms == (
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-b"]}]},
    )
    assert t.primary_host == "gis-0.gis.geo.svc"
    assert (t.replication_user, t.password_secret) == (
        "replicator",
        {"name": "gis-db", "key": "replication-password"},
    )
    assert t.standbys[0].services == ("gis", "gis-replica-1") and t.standbys[1].services == ("gis",)


def test_single_instance_has_no_standbys() -> None:
    primary = sts_doc("official-plain")
    t = detect(primary, facts_for("official-plain", primary))
    assert t.kind == "single" and not t.has_standbys and t.problem is None


def _strip_replication(sts: dict[str, Any]) -> dict[str, Any]:
    pod = sts["spec"]["template"]["spec"]
    pod.pop("initContainers")
    for c in pod["containers"]:
        c["env"] = [e for e in c["env"] if "REPLICATION" not in e["name"]]
    return sts


def test_ordinals_without_replication_refused() -> None:
    primary = _strip_replication(sts_doc(ORDINALS))
    t = topology_of(ORDINALS, primary)
    assert t.problem and "cannot tell how pods gis-1..2 replicate" in t.problem
    with pytest.raises(Refused, match="3 replicas") as exc:
        guard.check(
            facts_for(ORDINALS, primary), parse_image("pgleap/postgis:17-3.5"), topology=t, live=False
        )
    assert "POSTGRES_REPLICATION_USER" in exc.value.hint


def test_replicas_without_topology_still_refused() -> None:
    f = facts_for(ORDINALS, sts_doc(ORDINALS))
    with pytest.raises(Refused, match="3 replicas and no streaming standbys pgleap understands"):
        guard.check(f, parse_image("pgleap/postgis:17-3.5"), live=False)


def test_understood_topologies_pass_the_guard() -> None:
    f = facts_for(ORDINALS, sts_doc(ORDINALS))
    assert guard.check(f, parse_image("pgleap/postgis:17-3.5"), topology=topology_of(ORDINALS)) == []
    f = facts_for(PAIR, sts_doc(PAIR))
    target = parse_image(REPLICA_CASES[PAIR][0])
    warnings = guard.check(f, target, GuardOverrides(allow_helm=True), topology=topology_of(PAIR))
    assert len(warnings) == 1 and "helm upgrade" in warnings[0], warnings  # only the allowed owner


def test_missing_standby_pvc_refused_live() -> None:
    t = topology_of(ORDINALS)
    t = dataclasses.replace(t, standbys=(dataclasses.replace(t.standbys[0], pvc_exists=False), t.standbys[1]))
    f = facts_for(ORDINALS, sts_doc(ORDINALS))
    with pytest.raises(Refused, match="data-gis-1 do not exist"):
        guard.check(f, parse_image("pgleap/postgis:17-3.5"), topology=t)


def test_literal_replication_password_refused() -> None:
    read = sts_doc(PAIR, READ)
    env = read["spec"]["template"]["spec"]["containers"][0]["env"]
    for e in env:
        if e["name"] == "POSTGRES_REPLICATION_PASSWORD":
            e.pop("valueFrom")
            e["value"] = "hunter2"
    t = topology_of(PAIR, read=read)
    assert t.problem and "never as a plain value" in t.problem


def test_read_statefulset_that_is_not_a_standby_refused() -> None:
    read = sts_doc(PAIR, READ)
    env = read["spec"]["template"]["spec"]["containers"][0]["env"]
    read["spec"]["template"]["spec"]["containers"][0]["env"] = [
        e for e in env if e["name"] != "POSTGRES_REPLICATION_MODE"
    ]
    t = topology_of(PAIR, read=read)
    assert t.problem and "do not run as standbys" in t.problem


def test_keep_readers_needs_a_read_statefulset() -> None:
    with pytest.raises(Refused, match="ordinals of its own StatefulSet"):
        plan_of(ORDINALS, keep_readers=True)
    f = facts_for("official-plain", sts_doc("official-plain"))
    with pytest.raises(Refused, match="no read StatefulSet"):
        make_plan(f, "pgleap/postgis:17-3.5", keep_readers=True)


# -- plan and render --------------------------------------------------------------------------------


def test_plan_round_trips_through_the_state_configmap() -> None:
    plan = plan_of(PAIR, keep_readers=True)
    assert KubePlan.from_json(plan.to_json()) == plan
    assert plan.read_sts == READ and not plan.same_sts_standbys
    view = plan.replica_view()
    assert (view.sts, view.data_pvc, view.core.uid, view.fs_group) == (
        READ,
        "data-pg-postgresql-read-0",
        1001,
        1001,
    )
    assert plan_of(ORDINALS).same_sts_standbys


def test_read_availability_flags_stale_reads() -> None:
    (w0, w1) = read_availability(plan_of(PAIR, keep_readers=True))
    assert w0["stale_reads"].startswith("STALE") and "PostgreSQL 16" in w0["stale_reads"]
    assert (w0["unavailable_from"], w0["unavailable_until"]) == ("reseeded", "replicas-started")
    assert w0["reseed_estimate_seconds"] == 82  # 8 GiB at 100 MiB/s
    assert w0["services"] == ["pg-postgresql-read", "pg-postgresql-read-hl"]
    (w0, _) = read_availability(plan_of(PAIR))
    assert w0["stale_reads"] is None and w0["unavailable_from"] == "replicas-stopped"
    (w1, _) = read_availability(plan_of(ORDINALS))
    assert w1["unavailable_from"] == "stopped" and w1["node"] == "node-b"
    assert (
        read_availability(make_plan(facts_for("official-plain", sts_doc("official-plain")), "postgres:17"))
        == []
    )


@pytest.mark.parametrize("fixture", [PAIR, ORDINALS])
def test_reseed_job_contract(fixture: str) -> None:
    plan = plan_of(fixture)
    rp = plan.replicas
    assert rp is not None
    for sb in rp.standbys:
        job = render.replica_job(plan, holder(fixture), sb)
        assert job["metadata"]["name"] == f"pgleap-{sb.pod}-reseed"
        assert job["spec"]["backoffLimit"] == 0 and "ttlSecondsAfterFinished" not in job["spec"]
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
        assert "initContainers" not in pod
        (c,) = pod["containers"]
        assert c["image"] == plan.core.new_image
        assert c["command"] == ["bash", "/pgleap/scripts/reseed.sh"]
        env = {e["name"]: e for e in c["env"]}
        assert env["PGLEAP_ACTION"]["value"] == "place"
        assert env["PGLEAP_PRIMARY_HOST"]["value"] == rp.primary_host
        assert env["PGLEAP_REPLICATION_USER"]["value"] == rp.replication_user
        assert env["PGLEAP_SLOT"]["value"] == sb.slot
        assert env["PGLEAP_NEW_MAJOR"]["value"] == "17"
        assert env["PGPASSWORD"] == {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": rp.password_secret},
        }
        for e in c["env"]:
            assert ("value" in e) != ("valueFrom" in e)
            if "PASS" in e["name"]:
                assert "value" not in e
        # the standby's own PVC, mounted whole
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["data"]["persistentVolumeClaim"] == {"claimName": sb.pvc}
        assert {"name": "data", "mountPath": "/pgleap/volume"} in c["volumeMounts"]
        assert vols["scripts"]["configMap"]["name"] == f"pgleap-{plan.sts}-scripts"
        # pinned to where this standby's volume attaches
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        assert terms == list(sb.node_terms)
        # restricted PSS, as the StatefulSet's user
        psc = pod["securityContext"]
        assert (psc["runAsNonRoot"], psc["runAsUser"], psc.get("fsGroup")) == (True, rp.uid, rp.fs_group)
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"} and sc["runAsUser"] == rp.uid
        # pgleap's labels only: the read Services must not route to the Job's pod
        assert "app.kubernetes.io/component" not in job["spec"]["template"]["metadata"]["labels"]
        assert validate_strict(job) == list(versions())


def test_reseed_job_copies_read_scheduling() -> None:
    plan = plan_of(PAIR)
    assert plan.replicas is not None
    pod = render.replica_job(plan, holder(PAIR), plan.replicas.standbys[0])["spec"]["template"]["spec"]
    read_pod = holder(PAIR)["spec"]["template"]["spec"]
    assert pod["tolerations"] == read_pod["tolerations"]
    assert pod["containers"][0]["resources"] == read_pod["containers"][0]["resources"]
    assert pod["securityContext"]["fsGroupChangePolicy"] == "Always"


@pytest.mark.parametrize("action", ["rollback", "finalize"])
def test_replica_rollback_and_finalize_jobs(action: str) -> None:
    plan = plan_of(PAIR)
    assert plan.replicas is not None
    sb = plan.replicas.standbys[1]
    pin = ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]},)
    job = render.replica_job(plan, holder(PAIR), sb, action, node_terms=pin)
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert c["command"] == ["bash", "/pgleap/scripts/upgrade.sh"]
    assert env["PGLEAP_ACTION"]["value"] == action and "PGPASSWORD" not in env
    assert job["metadata"]["name"] == f"pgleap-{sb.pod}-{action}"
    terms = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert terms["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == list(pin)
    validate_strict(job)


def test_objects_for_a_primary_read_pair() -> None:
    plan = plan_of(PAIR)
    objs = render.objects_for(plan, sts_doc(PAIR), SCRIPTS, holder(PAIR))
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("ConfigMap", "pgleap-pg-postgresql-primary-state"),
        ("ConfigMap", "pgleap-pg-postgresql-primary-scripts"),
        ("Job", "pgleap-pg-postgresql-primary-upgrade"),
        ("StatefulSet", "pg-postgresql-primary"),
        ("Job", "pgleap-pg-postgresql-read-0-reseed"),
        ("Job", "pgleap-pg-postgresql-read-1-reseed"),
        ("StatefulSet", READ),
    ]
    read = objs[-1]
    assert read["spec"]["replicas"] == 2
    assert read["spec"]["template"]["spec"]["containers"][0]["image"] == plan.core.new_image
    assert read["metadata"]["annotations"][objects.ANN_RUN] == "r1"
    assert json.loads(objs[0]["data"]["read-statefulset.json"])["metadata"]["name"] == READ
    for obj in objs:
        validate_strict(obj)


def test_objects_for_ordinals_start_the_primary_alone() -> None:
    plan = plan_of(ORDINALS)
    objs = render.objects_for(plan, sts_doc(ORDINALS), SCRIPTS)
    sts = next(o for o in objs if o["kind"] == "StatefulSet")
    assert sts["spec"]["replicas"] == 1  # standbys of the old major cannot start on the new image
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Job"] == [
        "pgleap-gis-upgrade",
        "pgleap-gis-1-reseed",
        "pgleap-gis-2-reseed",
    ]
    for obj in objs:
        validate_strict(obj)


# -- runtime ----------------------------------------------------------------------------------------


def upgrade(c: Cluster, fixture: str, **kw: Any):
    target, overrides = REPLICA_CASES[fixture]
    kw.setdefault("post_upgrade", c.hook)
    return c.runtime.upgrade(
        c.namespace, c.name, target, scripts=SCRIPTS, job_env=JOB_ENV, overrides=overrides, **kw
    )


def image_of(c: Cluster, name: str) -> str:
    sts = c.fake.get_for_test("StatefulSet", c.namespace, name)
    assert sts is not None
    return sts["spec"]["template"]["spec"]["containers"][0]["image"]


def pvc_uids(c: Cluster) -> dict[str, str]:
    return {
        n: o.metadata.uid
        for (ns, k, n), o in c.fake.objects.items()
        if k == "PersistentVolumeClaim" and ns == c.namespace
    }


def replica_sts(fixture: str) -> str:
    return READ if fixture == PAIR else "gis"


def write_order(c: Cluster) -> list[tuple[str, str, str | None]]:
    return [(x.verb, x.resource, x.name) for x in c.fake.writes_for_test() if x.resource != "configmaps"]


@pytest.mark.parametrize("fixture", [PAIR, ORDINALS])
def test_full_upgrade_with_two_standbys(fixture: str) -> None:
    c = make_cluster(fixture)
    uids = pvc_uids(c)
    probed: list[tuple[str, ...]] = []

    def probe(ctx, slots):
        probed.append(slots)
        return slots if len(probed) > 1 else ()  # streaming on the second look

    out = upgrade(c, fixture, standby_probe=probe)
    target = REPLICA_CASES[fixture][0]
    assert out.phase == "done" and state(c)["phase"] == "done"
    assert image_of(c, c.name) == target and image_of(c, replica_sts(fixture)) == target
    rs = c.fake.get_for_test("StatefulSet", c.namespace, replica_sts(fixture))
    assert rs["spec"]["replicas"] == (2 if fixture == PAIR else 3)
    assert pvc_uids(c) == uids  # every claim kept, none recreated
    pods = ["pg-postgresql-read-0", "pg-postgresql-read-1"] if fixture == PAIR else ["gis-1", "gis-2"]
    reseeds = [x.name for x in calls(c, "create", "jobs") if x.name.endswith("-reseed")]
    assert reseeds == [f"pgleap-{p}-reseed" for p in pods]
    assert probed[-1] == tuple(f"pgleap_{p.replace('-', '_')}" for p in pods) and len(probed) == 2
    order = write_order(c)
    # standbys are re-seeded only after the primary was verified, and started after their re-seed
    hook_at = next(
        i
        for i, x in enumerate(c.fake.writes_for_test())
        if x.name == objects.state_cm_name(c.name)
        and x.detail.get("patch", {}).get("data", {}).get("phase") == "verified"
    )
    first_reseed = next(
        i for i, x in enumerate(c.fake.writes_for_test()) if (x.name or "").endswith("-reseed")
    )
    assert hook_at < first_reseed
    assert len(c.hook_calls) == 1
    if fixture == PAIR:
        # the read StatefulSet stops before the primary, and is replaced after the re-seed
        assert order.index(("patch", "statefulsets", READ)) < order.index(
            ("patch", "statefulsets", "pg-postgresql-primary")
        )
        assert order.index(("create", "jobs", f"pgleap-{pods[-1]}-reseed")) < order.index(
            ("create", "statefulsets", READ)
        )
        deletes = calls(c, "delete", "statefulsets")
        assert [d.name for d in deletes] == ["pg-postgresql-primary", READ]
        assert all(d.detail["propagation"] == "Orphan" for d in deletes)
    else:
        creates = [x for x in c.fake.calls if x.verb == "create" and x.resource == "statefulsets"]
        assert len(creates) == 1
        scale_up = [
            x for x in calls(c, "patch", "statefulsets") if x.detail["patch"]["spec"].get("replicas") == 3
        ]
        assert len(scale_up) == 1
        writes = c.fake.writes_for_test()
        reseed_2 = next(i for i, x in enumerate(writes) if x.name == "pgleap-gis-2-reseed")
        assert reseed_2 < next(i for i, x in enumerate(writes) if x is scale_up[0])
        assert ("create", "statefulsets", "gis") in order  # the new StatefulSet (ordinal 0 alone)
    # a rerun after success makes no writes
    writes = len(c.fake.writes_for_test())
    assert upgrade(c, fixture).changed == []
    assert c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS).changed == []
    assert len(c.fake.writes_for_test()) == writes


def test_keep_readers_serve_until_their_reseed() -> None:
    c = make_cluster(PAIR)
    phases_when_read_stopped: list[str] = []

    def hook(call: Call) -> None:
        if call.verb == "patch" and call.name == READ and call.detail["patch"]["spec"].get("replicas") == 0:
            phases_when_read_stopped.append(state(c)["phase"])
        return None

    c.fake.error_hook = hook
    out = upgrade(c, PAIR, keep_readers=True)
    assert out.phase == "done"
    assert phases_when_read_stopped == ["verified"]  # stale reads until the re-seed starts
    assert any("STALE" in n for n in out.notes)


def test_keep_readers_without_read_statefulset_refused() -> None:
    c = make_cluster(ORDINALS)
    with pytest.raises(Refused, match="--keep-readers"):
        upgrade(c, ORDINALS, keep_readers=True)
    assert c.fake.writes_for_test() == []


def test_phases_recorded_in_order() -> None:
    c = make_cluster(PAIR)
    upgrade(c, PAIR, mode="copy")
    c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    recorded = [
        (x.detail["patch"]["data"]["operation"], x.detail["patch"]["data"]["phase"])
        for x in calls(c, "patch", "configmaps")
        if "data" in x.detail["patch"]  # not the run's holder annotation (toolkit/kube/lease.py)
    ]
    assert [p for o, p in recorded if o == "upgrade"] == list(UPGRADE_PHASES[1:])
    assert [p for o, p in recorded if o == "rollback"] == list(ROLLBACK_PHASES)
    assert set(NEW_PHASES) <= set(UPGRADE_PHASES)


CRASH_PHASES = [p for p in UPGRADE_PHASES if p != "done"]


@pytest.mark.parametrize("fixture", [PAIR, ORDINALS])
@pytest.mark.parametrize("phase", CRASH_PHASES)
def test_crash_after_phase_then_resume_then_rollback(fixture: str, phase: str) -> None:
    c = make_cluster(fixture)
    uids = pvc_uids(c)
    original = c.sts()
    original_read = c.fake.get_for_test("StatefulSet", c.namespace, replica_sts(fixture))
    crash_after_phase(c, phase)
    with pytest.raises(Crash):
        upgrade(c, fixture, mode="copy")  # copy: the rollback after "done" is allowed, with the loss accepted
    assert state(c)["phase"] == phase
    out = c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS, post_upgrade=c.hook)
    assert out.phase == "done"
    target = REPLICA_CASES[fixture][0]
    assert image_of(c, c.name) == target and image_of(c, replica_sts(fixture)) == target
    reseeds = [x.name for x in calls(c, "create", "jobs") if x.name.endswith("-reseed")]
    assert len(reseeds) == 2 == len(set(reseeds))  # each standby copied once
    assert len([x for x in calls(c, "create", "jobs") if x.name.endswith("-upgrade")]) == 1
    # then back to where it all started, replica counts included
    out = c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    assert out.phase == "rolled-back"
    assert comparable(c.sts()) == comparable(original)
    read_now = c.fake.get_for_test("StatefulSet", c.namespace, replica_sts(fixture))
    assert comparable(read_now) == comparable(original_read)
    assert read_now["status"]["readyReplicas"] == original_read["spec"]["replicas"]
    rollbacks = [x.name for x in calls(c, "create", "jobs") if x.name.endswith("-rollback")]
    assert len(rollbacks) == 3  # the primary's volume and both standbys'
    assert pvc_uids(c) == uids


@pytest.mark.parametrize("fixture", [PAIR, ORDINALS])
@pytest.mark.parametrize("phase", CRASH_PHASES)
def test_crash_after_phase_then_rollback(fixture: str, phase: str) -> None:
    c = make_cluster(fixture)
    uids = pvc_uids(c)
    original = c.sts()
    original_read = c.fake.get_for_test("StatefulSet", c.namespace, replica_sts(fixture))
    crash_after_phase(c, phase)
    with pytest.raises(Crash):
        upgrade(c, fixture, mode="copy")
    out = c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    assert out.phase == "rolled-back"
    assert comparable(c.sts()) == comparable(original)
    assert comparable(c.fake.get_for_test("StatefulSet", c.namespace, replica_sts(fixture))) == comparable(
        original_read
    )
    reseeded = {
        x.name.removesuffix("-reseed") for x in calls(c, "create", "jobs") if x.name.endswith("-reseed")
    }
    rolled = {
        x.name.removesuffix("-rollback") for x in calls(c, "create", "jobs") if x.name.endswith("-rollback")
    }
    assert rolled - {f"pgleap-{c.name}"} == reseeded  # exactly the standbys a re-seed touched
    assert pvc_uids(c) == uids
    writes = len(c.fake.writes_for_test())
    assert c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS).changed == []
    assert len(c.fake.writes_for_test()) == writes


@pytest.mark.parametrize("phase", ["rollback-started", "stopped-new", "restored-data", "restored-replicas"])
def test_crash_during_rollback_then_resume(phase: str) -> None:
    c = make_cluster(PAIR)
    original_read = c.fake.get_for_test("StatefulSet", c.namespace, READ)
    upgrade(c, PAIR, mode="copy")
    crash_after_phase(c, phase)
    with pytest.raises(Crash):
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    out = c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
    assert out.phase == "rolled-back"
    assert comparable(c.fake.get_for_test("StatefulSet", c.namespace, READ)) == comparable(original_read)
    assert len([x for x in calls(c, "create", "jobs") if x.name.endswith("-rollback")]) == 3


@pytest.mark.parametrize("fixture", [PAIR, ORDINALS])
def test_finalize_runs_on_every_standby_volume(fixture: str) -> None:
    c = make_cluster(fixture)
    upgrade(c, fixture)
    seen: list[dict] = []
    orig_create = c.fake.create_namespaced_job

    def spy(namespace, body, **kw):
        seen.append(c.fake._dict(body))
        return orig_create(namespace, body, **kw)

    c.fake.create_namespaced_job = spy  # type: ignore[method-assign]
    out = c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
    assert out.phase == "finalized" and state(c) is None
    jobs = {j["metadata"]["name"]: j for j in seen}
    pods = ["pg-postgresql-read-0", "pg-postgresql-read-1"] if fixture == PAIR else ["gis-1", "gis-2"]
    for pod in pods:
        job = jobs[f"pgleap-{pod}-finalize"]
        env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["PGLEAP_ACTION"] == "finalize"
        node = c.fake.get_for_test("Pod", c.namespace, pod)["spec"]["nodeName"]
        terms = job["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        assert terms[-1]["matchFields"][0]["values"] == [node]  # the running standby's node (RWO)
    # every pgleap Job is gone afterwards, the standbys' too
    left = [n for (ns, k, n) in c.fake.objects if k == "Job"]
    assert left == []
    patches = [
        x.detail["patch"]["data"]["phase"]
        for x in calls(c, "patch", "configmaps")
        if x.detail["patch"].get("data", {}).get("operation") == "finalize"
    ]
    assert patches == list(FINALIZE_PHASES[:-1])  # "finalized": the state ConfigMap is deleted
    writes = len(c.fake.writes_for_test())
    assert c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS).changed == []
    assert len(c.fake.writes_for_test()) == writes


def test_crash_during_finalize_then_resume() -> None:
    c = make_cluster(ORDINALS)
    upgrade(c, ORDINALS)
    crash_after_phase(c, "finalized-data")
    with pytest.raises(Crash):
        c.runtime.finalize(c.namespace, c.name, scripts=SCRIPTS)
    assert state(c)["phase"] == "finalized-data"
    c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
    assert state(c) is None
    finals = [x.name for x in calls(c, "create", "jobs") if x.name.endswith("-finalize")]
    assert sorted(finals) == ["pgleap-gis-1-finalize", "pgleap-gis-2-finalize", "pgleap-gis-finalize"]


def test_failed_reseed_is_reported_and_rolled_back() -> None:
    c = make_cluster(PAIR)
    c.fake.job_results["pgleap-pg-postgresql-read-1-reseed"] = "Failed"
    with pytest.raises(PgleapError, match="Job pgleap-pg-postgresql-read-1-reseed failed") as exc:
        upgrade(c, PAIR, mode="copy")
    assert "rollback" in exc.value.hint
    assert state(c)["phase"] == "verified"  # the primary is upgraded; the standbys are not
    with pytest.raises(PgleapError, match="failed"):
        c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
    assert len([x for x in calls(c, "create", "jobs") if x.name.endswith("-reseed")]) == 2  # no retry
    with pytest.raises(Refused, match="--yes"):  # the primary served clients: a loss to accept
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS)
    c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    assert image_of(c, READ) == "docker.io/bitnamilegacy/postgresql:16.4.0-debian-12-r0"
    assert c.fake.get_for_test("StatefulSet", c.namespace, READ)["spec"]["replicas"] == 2


def test_status_lists_standby_jobs() -> None:
    c = make_cluster(ORDINALS)
    upgrade(c, ORDINALS)
    st = c.runtime.status(c.namespace, c.name)
    assert st["standbys"] == ["gis-1", "gis-2"]
    assert st["jobs"]["pgleap-gis-1-reseed"] == "Complete"


def test_plan_reads_the_read_statefulset_live() -> None:
    c = make_cluster(PAIR)
    plan, sts, warnings = c.runtime.plan(
        c.namespace, c.name, REPLICA_CASES[PAIR][0], overrides=GuardOverrides(allow_helm=True)
    )
    assert plan.read_sts == READ and plan.replicas is not None
    assert [sb.node for sb in plan.replicas.standbys] == [
        "ip-10-0-2-31.eu-west-1.compute.internal",
        "ip-10-0-3-47.eu-west-1.compute.internal",
    ]
    assert c.runtime.read_statefulset(plan)["metadata"]["name"] == READ
    assert c.fake.writes_for_test() == []


# -- commands ---------------------------------------------------------------------------------------


def test_plan_command_shows_each_standby_and_stale_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tests.kube.test_cli_kube import build_app
    from toolkit.cli import kube as cli_kube

    # No probe output is recorded for the Bitnami images: plan from their tags (test_probe.py probes).
    monkeypatch.setattr(cli_kube, "load_scripts", lambda folder=None, required=True: dict(SCRIPTS))
    c = make_cluster(PAIR)
    args = ["plan", "sts", c.name, "-n", c.namespace, "--to", REPLICA_CASES[PAIR][0], "--allow-helm"]
    result = CliRunner().invoke(build_app(c), [*args, "--keep-readers"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "pg-postgresql-read-0 (PVC data-pg-postgresql-read-0" in text
    assert "STALE: serves reads from the old PostgreSQL 16 data" in text
    assert "left running on the old major (--keep-readers)" in text
    assert "rsync --hard-links" in text and "ReadWriteOnce PVC" in text
    assert "Job pgleap-pg-postgresql-read-1-reseed" in text
    result = CliRunner().invoke(build_app(c), [*args, "-o", "json"])
    assert result.exit_code == 0, result.output
    objs = json.loads(result.stdout)  # stdout holds only the objects; the standby lines go to stderr
    assert [o["metadata"]["name"] for o in objs][-1] == READ
    assert "scaled to 0 together with the primary" in " ".join(result.stderr.split())
    assert c.fake.writes_for_test() == []


def test_render_offline_picks_the_primary_of_a_pair() -> None:
    from typer.testing import CliRunner

    from tests.kube.conftest import FIXTURES
    from tests.kube.test_cli_kube import build_app

    result = CliRunner().invoke(
        build_app(),
        ["render", "-f", str(FIXTURES / f"{PAIR}.yaml"), "--to", REPLICA_CASES[PAIR][0], "-o", "json"],
    )
    assert result.exit_code == 0, result.output
    objs = json.loads(result.stdout)["items"]
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert ("Job", "pgleap-pg-postgresql-read-0-reseed") in names and names[-1] == ("StatefulSet", READ)
    job = next(o for o in objs if o["metadata"]["name"] == "pgleap-pg-postgresql-read-0-reseed")
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg-postgresql",
        "key": "replication-password",
    }


def test_inspect_shows_the_standbys() -> None:
    from typer.testing import CliRunner

    from tests.kube.test_cli_kube import build_app

    c = make_cluster(PAIR)
    result = CliRunner().invoke(build_app(c), ["inspect", "sts", c.name, "-n", c.namespace, "-o", "json"])
    assert result.exit_code == 0, result.output
    topo = json.loads(result.stdout)["topology"]
    assert topo["kind"] == "primary-read" and [s["pod"] for s in topo["standbys"]] == [
        "pg-postgresql-read-0",
        "pg-postgresql-read-1",
    ]
    assert c.fake.writes_for_test() == []


def test_the_read_statefulset_itself_is_refused() -> None:
    read = sts_doc(PAIR, READ)
    t = detect(read, facts_for(PAIR, read))
    assert t.problem and "runs standbys (POSTGRES_REPLICATION_MODE=slave)" in t.problem
    assert "pgleap upgrade sts pg-postgresql-primary" in t.hint
    read["spec"]["replicas"] = 1  # a single standby would pass the replica count: refused all the same
    f = facts_for(PAIR, read)
    with pytest.raises(Refused, match="runs standbys"):
        guard.check(
            f, parse_image(REPLICA_CASES[PAIR][0]), GuardOverrides(allow_helm=True), topology=detect(read, f)
        )


@pytest.mark.parametrize("fixture", [PAIR, ORDINALS])
def test_link_rollback_after_done_is_refused_and_touches_no_statefulset(fixture: str) -> None:
    """On a cluster upgrade.sh refuses a link rollback once the new primary ran: pgleap asks
    rollback-check first, so neither StatefulSet is scaled, no standby Job runs."""
    c = make_cluster(fixture)
    upgrade(c, fixture)
    sts_before = {
        n: c.fake.get_for_test("StatefulSet", c.namespace, n) for n in (c.name, replica_sts(fixture))
    }
    with pytest.raises(Refused, match="--link"):
        c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=accept)
    assert {n: c.fake.get_for_test("StatefulSet", c.namespace, n) for n in sts_before} == sts_before
    assert not [x for x in calls(c, "create", "jobs") if x.name.endswith("-rollback")]
    assert state(c)["phase"] == "done"
