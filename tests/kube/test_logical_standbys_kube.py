"""`--strategy logical` on Kubernetes with standbys, the parts that need no database: which
topologies are planned or refused (before any write), the objects of a standby's re-seed onto
NAME-next-i (validated strictly, 1.29 -> newest, restricted), the per-standby Services' hand-over
and hand-back, and that rollback and finalize remove every ordinal's claim. Every recorded call
is checked against manifests/rbac.yaml. The SQL half (hba lines, streaming) runs on Docker in
test_logical_pods_on_docker.py."""

from __future__ import annotations

import pytest

from tests.kube.fake_api import restricted_violations
from tests.kube.harness import make_cluster
from tests.kube.test_rbac import check_calls
from tests.kube.validation import validate_strict
from toolkit.errors import PgleapError, Refused
from toolkit.kube import logical_objects as lo
from toolkit.kube.logical import KubeState, LogicalKube
from toolkit.kube.logical_standbys import plan_lines

NEW = "pgleap/postgis:17-3.5"
POD_NAME = "statefulset.kubernetes.io/pod-name"


def _side(c) -> LogicalKube:
    return LogicalKube(
        c.kube, c.namespace, c.name, container="postgres", state=KubeState(c.kube, c.namespace, c.name)
    )


def _next(c, replicas: int = 1) -> dict:
    sts = c.sts()
    nxt = lo.next_statefulset(sts, container="postgres", old_image=sts["spec"]["template"]["spec"]["containers"][0]
                              ["image"], new_image=NEW, new_major=17)  # fmt: skip
    c.kube.create(nxt)
    if replicas != 1:
        c.kube.patch("StatefulSet", c.namespace, lo.next_name(c.name), {"spec": {"replicas": replicas}})
    return c.kube.get("StatefulSet", c.namespace, lo.next_name(c.name))


def test_ordinals_are_planned_with_their_standbys_and_nothing_is_written() -> None:
    c = make_cluster("ordinals")  # gis-0 primary, gis-1 and gis-2 stream; Service gis-replica-1 -> gis-1
    side = _side(c)
    assert side.refusals() == []
    assert side.find_standbys() == ["gis-1", "gis-2"]
    source = side.describe()
    assert source["replicas"] == 3 and source["primary_host"] == "gis-next-0.gis.geo.svc"
    assert source["replication_user"] == "replicator"
    assert source["password_secret"] == {"name": "gis-db", "key": "replication-password"}
    assert source["old_claims"] == ["data-gis-0", "data-gis-1", "data-gis-2"]
    assert source["next_claims"] == ["data-gis-next-0", "data-gis-next-1", "data-gis-next-2"]
    assert source["services"] == {"gis": {"app": "gis"}}
    assert source["standby_services"] == {
        "gis-replica-1": {"old": {POD_NAME: "gis-1"}, "new": {**lo.next_labels("gis"), POD_NAME: "gis-next-1"},
                          "ordinal": 1}}  # fmt: skip
    lines = plan_lines(source)
    assert "standbys gis-1..2: keep following gis-0 until finalize" in lines[0]
    assert lines[1] == "Service gis-replica-1: selects gis-next-1 once it streams (restored by rollback)"
    assert c.fake.writes_for_test() == []
    check_calls(c.fake.calls)


def test_unclear_standbys_are_refused_before_anything_changes() -> None:
    c = make_cluster("official-plain")  # (a read StatefulSet: test_logical_reads_kube.py)
    c.kube.patch("StatefulSet", c.namespace, c.name, {"spec": {"replicas": 2}})
    (message, hint), *_ = _side(c).refusals()
    assert "2 replicas and pgleap cannot tell how pods gis-1..1 replicate" in message
    assert "POSTGRES_REPLICATION_USER" in hint
    c = make_cluster("ordinals")
    c.kube.patch("Service", c.namespace, "gis", {"spec": {"selector": {"role": "primary"}}})  # not the pods'
    (message, hint), *_ = _side(c).refusals()
    assert "through Service gis, which does not select" in message and "gis-next-0" in message
    assert "headless Service" in hint
    assert [w.verb for w in c.fake.writes_for_test()] == ["patch"]  # the test's own patch only


def test_the_reseed_job_and_claim_of_a_new_standby_are_valid_and_restricted() -> None:
    c = make_cluster("ordinals")
    side = _side(c)
    side.state.save(strategy="logical", phase="switched", logical_source=side.describe())
    nxt = _next(c)
    sb = side.next_standby("gis-2")
    assert (sb.pod, sb.pvc, sb.slot) == ("gis-next-2", "data-gis-next-2", "pgleap_gis_next_2")
    claim = lo.standby_claim(nxt, "postgres", sb.pvc)
    assert validate_strict(claim) and claim["metadata"]["labels"] == lo.next_labels("gis")
    job = side.reseed_job(nxt, sb, NEW, 17, "/var/lib/postgresql/data")
    assert validate_strict(job)
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["PGLEAP_PRIMARY_HOST"]["value"] == "gis-next-0.gis.geo.svc"
    assert env["PGLEAP_SLOT"]["value"] == "pgleap_gis_next_2" and env["PGLEAP_ACTION"]["value"] == "place"
    assert env["PGLEAP_OLD_REL"]["value"] == env["PGLEAP_NEW_REL"]["value"] == ""
    assert (
        env["PGLEAP_NEW_MAJOR"]["value"] == "17" and env["PGLEAP_REPLICATION_USER"]["value"] == "replicator"
    )
    assert env["PGPASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "gis-db", "key": "replication-password"}
    }
    assert pod["containers"][0]["image"] == NEW and pod["containers"][0]["command"][-1].endswith("reseed.sh")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "data-gis-next-2"
    assert volumes["scripts"]["configMap"]["name"] == lo.config_map_name("gis")
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels.get("app") is None  # behind no user Service, before or after the hand-over:
    assert (
        not lo.next_labels("gis").items() <= labels.items() and labels["pgleap.io/action"] == "logical-reseed"
    )
    deeper = side.reseed_job(nxt, sb, NEW, 18, "/var/lib/postgresql/data/pgdata")
    env = {e["name"]: e.get("value") for e in deeper["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGLEAP_NEW_REL"] == env["PGLEAP_OLD_REL"] == "pgdata"
    with pytest.raises(PgleapError, match="outside its claim"):
        side.reseed_job(nxt, sb, NEW, 17, "/srv/pg")
    check_calls(c.fake.calls)


def test_per_standby_services_move_and_come_back_and_finalize_removes_every_ordinal() -> None:
    c = make_cluster("ordinals")
    side = _side(c)
    side.state.save(strategy="logical", phase="switched", logical_source=side.describe())
    _next(c, replicas=3)  # as after the re-seeds: three pods, three claims
    side._point(lambda _svc, _orig: lo.next_labels(c.name))  # the hand-over's patch, without SQL
    with pytest.raises(Refused, match="gis-replica-1 still select old standbys") as refused:
        side.remove_old()
    assert "`pgleap resume sts gis -n geo`" in refused.value.hint
    assert c.sts() is not None and c.fake.get_for_test("PersistentVolumeClaim", c.namespace, "data-gis-1")
    side.point_standby_services("new", 2)  # another ordinal's: nothing moves
    assert c.fake.get_for_test("Service", c.namespace, "gis-replica-1")["spec"]["selector"] == {
        POD_NAME: "gis-1"
    }
    side.point_standby_services("new", 1)
    assert c.fake.get_for_test("Service", c.namespace, "gis-replica-1")["spec"]["selector"] == {
        **lo.next_labels("gis"), POD_NAME: "gis-next-1"}  # fmt: skip
    side.point_standby_services("old")  # rollback's hand-back
    assert c.fake.get_for_test("Service", c.namespace, "gis-replica-1")["spec"]["selector"] == {
        POD_NAME: "gis-1"
    }
    side.point_standby_services("new")
    side.remove_old()
    assert c.sts() is None
    for i in range(3):
        assert c.fake.get_for_test("PersistentVolumeClaim", c.namespace, f"data-gis-{i}") is None
        assert c.fake.get_for_test("PersistentVolumeClaim", c.namespace, f"data-gis-next-{i}") is not None
    check_calls(c.fake.calls)


def test_rollback_removes_next_with_every_ordinal_and_leaves_the_old_standbys() -> None:
    c = make_cluster("ordinals")
    side = _side(c)
    side.state.save(strategy="logical", phase="switched", logical_source=side.describe())
    _next(c, replicas=2)  # crashed after the first re-seed
    side.remove_next()
    assert c.kube.get("StatefulSet", c.namespace, "gis-next") is None
    for i in range(3):
        assert c.fake.get_for_test("PersistentVolumeClaim", c.namespace, f"data-gis-next-{i}") is None
        assert (
            c.fake.get_for_test("Pod", c.namespace, f"gis-{i}") is not None
        )  # the old standbys never stopped
        assert c.fake.get_for_test("PersistentVolumeClaim", c.namespace, f"data-gis-{i}") is not None
    check_calls(c.fake.calls)


def test_per_standby_services_are_mapped_by_pod_name_or_index_only_when_they_are_this_statefulsets() -> None:
    from toolkit.kube.logical_standbys import standby_services

    sts = make_cluster("ordinals").sts()
    svc = [{"metadata": {"name": n}, "spec": {"selector": sel}} for n, sel in (
        ("by-name", {POD_NAME: "gis-2"}),
        ("by-index", {"app": "gis", "apps.kubernetes.io/pod-index": "1"}),
        ("index-alone", {"apps.kubernetes.io/pod-index": "1"}),  # every StatefulSet's ordinal 1
        ("primary", {POD_NAME: "gis-0"}), ("other-app", {"app": "web", POD_NAME: "gis-1"}),
        ("all", {"app": "gis"}))]  # fmt: skip
    mapped = standby_services(svc, sts, {"app": "gis"})
    assert set(mapped) == {"by-name", "by-index"}
    assert mapped["by-name"]["new"] == {**lo.next_labels("gis"), POD_NAME: "gis-next-2"}
    assert mapped["by-index"]["new"] == {**lo.next_labels("gis"), "apps.kubernetes.io/pod-index": "1"}
    assert mapped["by-index"]["ordinal"] == 1 and mapped["by-name"]["old"] == {POD_NAME: "gis-2"}


def _read_side(c) -> LogicalKube:
    return LogicalKube(c.kube, c.namespace, c.name, container="postgresql",
                       state=KubeState(c.kube, c.namespace, c.name))  # fmt: skip


def test_a_read_statefulset_pgleap_cannot_read_is_not_said_to_stream() -> None:
    c = make_cluster("bitnami-replication")
    read = c.kube.get("StatefulSet", c.namespace, "pg-postgresql-read")
    [container] = read["spec"]["template"]["spec"]["containers"]
    [mode] = [e for e in container["env"] if e["name"] == "POSTGRES_REPLICATION_MODE"]
    mode["value"] = "master"  # pods that do not run as standbys
    patch = {"spec": {"template": {"spec": {"containers": [container]}}}}
    c.kube.patch("StatefulSet", c.namespace, "pg-postgresql-read", patch)
    (problem, _), (message, hint) = _read_side(c).refusals()
    assert "its pods do not run as standbys (POSTGRES_REPLICATION_MODE=master)" in problem
    assert "(2 pod(s), not understood as standbys of pg-postgresql-primary-0)" in message
    assert "streaming" not in message and "keep following" not in message
    assert hint.startswith("fix the refusal above first") and "kubectl delete sts pg-postgresql-read" in hint
