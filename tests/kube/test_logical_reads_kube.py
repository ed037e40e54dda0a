"""`--strategy logical` on Kubernetes with a separate read StatefulSet R (Bitnami's primary/read
layout), the parts that need no database: R is planned (R-next, its claims, the Services that move)
without a write; R-next and the reseed Job of each of its ordinals are valid strictly (1.29 ->
newest) and restricted, R-next names NAME-next-0 as its primary and no user Service selects it;
R's Services move to R-next and back; rollback from each state a crash inside R's re-seed can leave
removes R-next and its claims and leaves R as it was; finalize refuses while R's Services still
select R, then deletes R with its claims; the shapes still refused are named. Every recorded call is
checked against manifests/rbac.yaml. The SQL half (streaming, resume) runs on Docker in
test_logical_reads_pods_on_docker.py."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.kube.fake_api import restricted_violations
from tests.kube.harness import make_cluster
from tests.kube.test_cli_kube import build_app
from tests.kube.test_rbac import check_calls
from tests.kube.validation import validate_strict
from toolkit.errors import Refused
from toolkit.kube import logical_objects as lo
from toolkit.kube.logical import KubeState, LogicalKube
from toolkit.kube.logical_reads import plan_lines, read_next_statefulset
from toolkit.kube.objects import replica_job_name
from toolkit.kube.topology import Standby

NEW = "pgleap/postgis:17-3.5"
POD_NAME = "statefulset.kubernetes.io/pod-name"
R, RN, HOST = (
    "pg-postgresql-read",
    "pg-postgresql-read-next",
    "pg-postgresql-primary-next-0.pg-postgresql-primary-hl.db.svc",
)
READ_SVCS = ("pg-postgresql-read", "pg-postgresql-read-hl")


def _side(c) -> LogicalKube:
    return LogicalKube(c.kube, c.namespace, c.name, container="postgresql",
                       state=KubeState(c.kube, c.namespace, c.name))  # fmt: skip


def _recorded(c) -> LogicalKube:
    side = _side(c)
    side.state.save(strategy="logical", phase="switched", logical_source=side.describe())
    return side


def _r_next(c, replicas: int = 0) -> dict:
    nxt = read_next_statefulset(c.kube.get("StatefulSet", c.namespace, R), container="postgresql",
                                new_image=NEW, new_major=17, primary_host=HOST)  # fmt: skip
    c.kube.create(nxt)
    if replicas:
        c.kube.patch("StatefulSet", c.namespace, RN, {"spec": {"replicas": replicas}})
    return c.kube.get("StatefulSet", c.namespace, RN)


def _service(c, name: str, selector: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": c.namespace},
            "spec": {"selector": selector, "ports": [{"port": 5432}]}}  # fmt: skip


def _selector(c, svc: str) -> dict:
    return c.fake.get_for_test("Service", c.namespace, svc)["spec"]["selector"]


def test_a_read_statefulset_is_planned_with_its_next_and_nothing_is_written() -> None:
    c = make_cluster("bitnami-replication")  # pg-postgresql-primary (1 replica) + pg-postgresql-read (2)
    side = _side(c)
    assert side.refusals() == []
    assert side.find_standbys() == [f"{R}-0", f"{R}-1"]
    read = side.describe()["read"]
    assert (read["statefulset"], read["next"], read["replicas"], read["primary_host"]) == (R, RN, 2, HOST)
    assert (read["replication_user"], read["password_secret"]) == (
        "repl_user", {"name": "pg-postgresql", "key": "replication-password"})  # fmt: skip
    assert sorted(read["services"]) == list(READ_SVCS) and read["per_pod"] == []
    assert read["services"]["pg-postgresql-read"]["app.kubernetes.io/component"] == "read"
    assert read["old_claims"] == [f"data-{R}-0", f"data-{R}-1"]
    assert read["next_claims"] == [f"data-{RN}-0", f"data-{RN}-1"]
    lines = plan_lines(side.describe())
    assert lines[0].startswith(f"StatefulSet {RN}: the read StatefulSet {R} on the new image")
    assert f"primary host {HOST}" in lines[0] and "finalize deletes it and its PVCs" in lines[0]
    assert (
        lines[1].startswith("Service pg-postgresql-read: selector {")
        and "once pg-postgresql-read-next-0" in lines[1]
    )
    assert c.fake.writes_for_test() == []
    check_calls(c.fake.calls)


def test_r_next_and_its_reseed_job_are_valid_restricted_and_point_at_the_new_primary() -> None:
    c = make_cluster("bitnami-replication")
    side = _recorded(c)
    original = c.kube.get("StatefulSet", c.namespace, R)
    nxt = _r_next(c)
    assert validate_strict(nxt) and nxt["spec"]["replicas"] == 0 and "ownerReferences" not in nxt["metadata"]
    labels = nxt["spec"]["template"]["metadata"]["labels"]
    assert labels == lo.next_labels(R) == nxt["spec"]["selector"]["matchLabels"] != lo.next_labels(c.name)
    for svc in c.kube.list("Service", c.namespace):  # no user Service selects R-next's pods
        selector = svc["spec"].get("selector") or {}
        assert not (selector and selector.items() <= labels.items()), svc["metadata"]["name"]
    pod = nxt["spec"]["template"]["spec"]
    assert restricted_violations(pod) == restricted_violations(original["spec"]["template"]["spec"])
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POSTGRES_MASTER_HOST"] == {"name": "POSTGRES_MASTER_HOST", "value": HOST}
    assert pod["containers"][0]["image"] == NEW
    assert c.kube.get("StatefulSet", c.namespace, R) == original  # R untouched
    sb = Standby(pod=f"{RN}-1", ordinal=1, pvc=f"data-{RN}-1")
    claim = lo.standby_claim(nxt, "postgresql", sb.pvc)
    assert validate_strict(claim) and claim["metadata"]["labels"] == lo.next_labels(R)
    job = side.reseed_job(nxt, sb, NEW, 17, "/bitnami/postgresql/data", side.describe()["read"])
    assert validate_strict(job)
    jpod = job["spec"]["template"]["spec"]
    assert restricted_violations(jpod) == []
    jenv = {e["name"]: e for e in jpod["containers"][0]["env"]}
    assert jenv["PGLEAP_PRIMARY_HOST"]["value"] == HOST and jenv["PGLEAP_SLOT"]["value"] == sb.slot
    assert (
        jenv["PGLEAP_REPLICATION_USER"]["value"] == "repl_user" and jenv["PGLEAP_NEW_REL"]["value"] == "data"
    )
    assert jenv["PGPASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "pg-postgresql", "key": "replication-password"}
    }
    volumes = {v["name"]: v for v in jpod["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"data-{RN}-1"
    check_calls(c.fake.calls)


def test_read_services_move_and_come_back_and_finalize_removes_r_with_its_claims() -> None:
    c = make_cluster("bitnami-replication")
    side = _recorded(c)
    _r_next(c, replicas=2)
    side._point(lambda _svc, _orig: lo.next_labels(c.name))  # the hand-over's patch, without SQL
    with pytest.raises(Refused, match="pg-postgresql-read, pg-postgresql-read-hl still select old standbys"):
        side.remove_old()
    assert c.kube.get("StatefulSet", c.namespace, R) is not None
    side.point_read_services("new")
    for svc in READ_SVCS:
        assert _selector(c, svc) == lo.next_labels(R)
    side.point_standby_services("old")  # rollback's hand-back: R's too
    for svc in READ_SVCS:
        assert _selector(c, svc)["app.kubernetes.io/component"] == "read"
        assert "pgleap.io/statefulset" not in _selector(c, svc)
    side.point_read_services("new")
    side.remove_old()
    assert (
        c.kube.get("StatefulSet", c.namespace, R) is None
        and c.kube.get("StatefulSet", c.namespace, c.name) is None
    )
    for i in range(2):
        assert c.fake.get_for_test("PersistentVolumeClaim", c.namespace, f"data-{R}-{i}") is None
        assert c.fake.get_for_test("PersistentVolumeClaim", c.namespace, f"data-{RN}-{i}") is not None
    check_calls(c.fake.calls)


@pytest.mark.parametrize("left", ["r-next", "claim", "job", "scaled", "services"])
def test_rollback_after_a_crash_inside_the_read_reseed_removes_r_next_and_restores_r(left) -> None:
    """Each state a kill inside R's re-seed leaves (R-next made; its claim; the Job; scaled; Services
    moved): rollback's removal and hand-back leave R and its Services exactly as before."""
    c = make_cluster("bitnami-replication")
    side = _recorded(c)
    before = c.kube.get("StatefulSet", c.namespace, R)
    nxt = _r_next(c)
    if left != "r-next":
        c.kube.create(lo.standby_claim(nxt, "postgresql", f"data-{RN}-0"))
    if left in ("scaled", "services"):
        c.kube.patch("StatefulSet", c.namespace, RN, {"spec": {"replicas": 1}})
    if left == "job":
        c.kube.create(side.reseed_job(nxt, Standby(pod=f"{RN}-0", ordinal=0, pvc=f"data-{RN}-0"), NEW, 17,
                                      "/bitnami/postgresql/data", side.describe()["read"]))  # fmt: skip
    if left == "services":
        side.point_read_services("new")
    side.point_standby_services("old")
    side.remove_next()
    assert c.kube.get("StatefulSet", c.namespace, RN) is None
    assert c.kube.get("Job", c.namespace, replica_job_name(f"{RN}-0", "reseed")) is None
    for i in range(2):
        assert c.fake.get_for_test("PersistentVolumeClaim", c.namespace, f"data-{RN}-{i}") is None
        assert c.fake.get_for_test("PersistentVolumeClaim", c.namespace, f"data-{R}-{i}") is not None
        assert c.fake.get_for_test("Pod", c.namespace, f"{R}-{i}") is not None  # R never stopped
    assert c.kube.get("StatefulSet", c.namespace, R) == before
    for svc in READ_SVCS:
        assert _selector(c, svc)["app.kubernetes.io/component"] == "read"
    check_calls(c.fake.calls)


def test_shapes_of_a_read_statefulset_still_refused_are_named_before_any_write() -> None:
    c = make_cluster("bitnami-replication")
    c.kube.patch("StatefulSet", c.namespace, R, {"spec": {"replicas": 0}})
    [(message, hint)] = _side(c).refusals()
    assert f"read StatefulSet {R} has 0 replicas" in message and f"scale {R} to 1 or more" in hint
    c = make_cluster("bitnami-replication")
    c.kube.create(
        _service(c, "index-0", {"apps.kubernetes.io/pod-index": "0"})
    )  # every StatefulSet's ordinal 0
    [(message, hint)] = _side(c).refusals()
    assert f"Service(s) index-0 select pods of read StatefulSet {R} by labels pgleap cannot map" in message
    assert "--strategy inplace" in hint
    c = make_cluster("bitnami-replication")
    c.kube.patch("Service", c.namespace, "pg-postgresql-primary-hl", {"spec": {"selector": {"role": "db"}}})
    [(message, hint)] = _side(c).refusals()
    assert "through Service pg-postgresql-primary-hl, which does not select" in message and "headless" in hint
    writes = [w.verb for w in c.fake.writes_for_test()]
    assert writes == ["patch"]  # the test's own
    args = [
        "upgrade",
        "sts",
        "pg-postgresql-primary",
        "-n",
        "db",
        "--to",
        NEW,
        "--strategy",
        "logical",
        "--yes",
    ]
    result = CliRunner().invoke(build_app(c), args)
    assert isinstance(result.exception, Refused) and result.exception.exit_code == 3, result.output
    assert "through Service pg-postgresql-primary-hl" in result.exception.message
    assert [w.verb for w in c.fake.writes_for_test()] == ["patch"]
    check_calls(c.fake.calls)


def test_a_service_on_one_read_pod_follows_its_ordinal_into_r_next_and_back() -> None:
    c = make_cluster("bitnami-replication")
    c.kube.create(_service(c, "read-1", {POD_NAME: f"{R}-1"}))
    side = _recorded(c)
    assert side.refusals() == []
    entry = side.describe()["read"]["pod_services"]["read-1"]
    assert entry == {
        "old": {POD_NAME: f"{R}-1"},
        "new": {**lo.next_labels(R), POD_NAME: f"{RN}-1"},
        "ordinal": 1,
    }
    assert f"Service read-1: selects {RN}-1 once it streams (restored by rollback)" in plan_lines(
        side.describe()
    )
    side.point_read_services("new", 0)  # R-next-0 streams: R's Services move, read-1 waits for R-next-1
    assert _selector(c, "read-1") == {POD_NAME: f"{R}-1"} and "read-1" in side.standby_services_moved()
    side.point_read_services("new", 1)
    assert _selector(c, "read-1") == entry["new"] and side.standby_services_moved() == []
    side.point_standby_services("old")  # rollback's hand-back
    assert _selector(c, "read-1") == {POD_NAME: f"{R}-1"}
    check_calls(c.fake.calls)
