"""`pgleap rehearse sts` against the fake cluster: production is only read, the clone is upgraded
by the ordinary flow, the report adds up, and everything the rehearsal made is removed.

The database steps (fingerprint, post-upgrade, replication check) are stand-ins here; the same
rendered objects run against real PostgreSQL in tests/kube/test_pods_on_docker.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.kube.harness import JOB_ENV, SCRIPTS, Cluster, make_cluster
from tests.kube.test_runtime import comparable
from tests.kube.validation import validate_strict
from toolkit.db.verify import Fingerprint
from toolkit.errors import EXIT_FAILED, EXIT_REFUSED, EXIT_VERIFY
from toolkit.kube import rehearsal_manifests as kube_rehearsal
from toolkit.kube.model import DOWNTIME_PHASES, HookContext
from toolkit.kube.rehearsal import KubeRehearsal, RehearsalHooks

TARGET = "pgleap/postgis:17-3.5"


@dataclass
class Hooks:
    """Stand-in database steps that record which pod they were pointed at."""

    differences: list[str] = field(default_factory=list)
    user_differences: list[str] = field(default_factory=list)  # after the extension updates
    problems: list[str] = field(default_factory=list)
    health_ok: bool = True
    seen: list[tuple[str, str]] = field(default_factory=list)

    def fingerprint(self, ctx: HookContext) -> Fingerprint:
        self.seen.append(("fingerprint", ctx.pod))
        return Fingerprint(extensions={"gis": {"postgis": "3.1.1"}})

    def post_upgrade(self, ctx: HookContext) -> dict[str, Any]:
        self.seen.append(("post_upgrade", ctx.pod))
        return {
            "extensions": {"gis": {"postgis": "3.5.2"}},
            "collation_indexes": ["gis.public.names_idx"],
            "health": [{"check": "amcheck", "ok": self.health_ok, "detail": "3 indexes"}],
        }

    def replication(self, ctx: HookContext) -> list[str]:
        self.seen.append(("replication", ctx.pod))
        return list(self.problems)

    def bundle(self) -> RehearsalHooks:
        return RehearsalHooks(
            fingerprint=self.fingerprint,
            compare=lambda before, after: list(self.differences),
            post_upgrade=self.post_upgrade,
            replication_problems=self.replication,
            compare_user=lambda before, after: list(self.user_differences),
        )


def tick(c: Cluster) -> None:
    """Every API call takes one second of the fake clock, so phases have durations to add up."""

    def advance(call: Any) -> None:
        c.clock.now += 1.0

    c.fake.error_hook = advance


def rehearse(c: Cluster, hooks: Hooks, target: str = TARGET, **kw: Any) -> dict[str, Any]:
    tick(c)
    return KubeRehearsal(c.runtime).rehearse(
        c.namespace, c.name, target, scripts=SCRIPTS, hooks=hooks.bundle(), job_env=JOB_ENV, **kw
    )


def production_names(c: Cluster) -> set[str]:
    """Names of the objects production owns (seeded before the rehearsal)."""
    return {name for (ns, _, name) in c.fake.objects if ns in (c.namespace, None)}


def rehearsal_left(c: Cluster) -> list[str]:
    return [
        f"{kind} {name}"
        for (ns, kind, name), obj in c.fake.objects.items()
        if name.startswith(("gis-rehearsal", "pg-postgresql-rehearsal"))
        or "-rehearsal" in name
        or kube_rehearsal.is_rehearsal_object(c.fake._dict(obj), c.name)
    ]


def created(c: Cluster, kind_resource: str) -> list[dict[str, Any]]:
    return [x.detail["body"] for x in c.fake.calls if x.verb == "create" and x.resource == kind_resource]


def test_basebackup_rehearsal_goes_and_leaves_nothing_behind() -> None:
    c = make_cluster("official-plain")
    before = comparable(c.sts())
    seeded = production_names(c)
    hooks = Hooks()
    result = rehearse(c, hooks)

    assert result["verdict"] == "go", result
    assert result["clone"] == "pg_basebackup"
    # production: read only; every write went to an object the rehearsal made
    assert comparable(c.sts()) == before
    writes = c.fake.writes_for_test()
    assert writes and all("rehearsal" in (x.name or "") and x.name not in seeded for x in writes), writes
    assert rehearsal_left(c) == []
    # the database steps ran on the right pods, in order
    assert hooks.seen == [
        ("replication", "gis-0"),
        ("fingerprint", "gis-rehearsal-0"),
        ("fingerprint", "gis-rehearsal-0"),
        ("post_upgrade", "gis-rehearsal-0"),
        ("fingerprint", "gis-rehearsal-0"),  # again after the extension updates and trap repairs
    ]
    # the clone PVC: production's size and class, adopted by the rehearsal StatefulSet's ordinal 0
    (pvc,) = created(c, "persistentvolumeclaims")
    assert pvc["metadata"]["name"] == "data-gis-rehearsal-0"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert pvc["spec"]["storageClassName"] == "local-path"
    # the clone Job: old image, password only from the Secret, pgleap's labels only
    (job,) = [j for j in created(c, "jobs") if j["metadata"]["name"] == "pgleap-gis-rehearsal-clone"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "pgleap/postgis:13-3.1"
    assert container["command"] == ["bash", "/pgleap/scripts/clone.sh"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "gis-db", "key": "password"}
    assert env["PGLEAP_SOURCE_HOST"]["value"] in ("gis-0.gis.geo.svc",)
    assert env["PGLEAP_REPLICATION_USER"]["value"] == "gis"
    assert "app" not in job["spec"]["template"]["metadata"]["labels"]
    # the rehearsal StatefulSet: production's pod spec, none of its labels, one replica
    first = created(c, "statefulsets")[0]
    assert first["metadata"]["name"] == "gis-rehearsal"
    assert first["spec"]["replicas"] == 1
    assert "app" not in first["spec"]["template"]["metadata"]["labels"]
    assert first["spec"]["template"]["spec"]["containers"][0]["image"] == "pgleap/postgis:13-3.1"
    upgraded = created(c, "statefulsets")[1]
    assert upgraded["spec"]["template"]["spec"]["containers"][0]["image"] == TARGET
    # the report
    names = [p["name"] for p in result["phases"]]
    assert names[:5] == [
        "preflight",
        "check replication access",
        "clone (pg_basebackup)",
        "start the clone (recovery)",
        "fingerprint before",
    ]
    assert {f"upgrade: {p}" for p in DOWNTIME_PHASES} <= set(names)
    down = sum(p["seconds"] for p in result["phases"] if p["in_downtime"])
    assert down > 0 and result["predicted_downtime_seconds"] == round(down, 1)
    assert result["extensions"] == [
        {"database": "gis", "extension": "postgis", "before": "3.1.1", "after": "3.5.2"}
    ]
    assert result["collation_indexes"] == ["gis.public.names_idx"]
    assert result["health"][0]["ok"] is True
    assert "StatefulSet gis-rehearsal" in result["removed"]
    assert "PersistentVolumeClaim data-gis-rehearsal-0" in result["removed"]


def test_keep_leaves_the_upgraded_clone_behind_its_own_service_until_remove() -> None:
    c = make_cluster("official-plain")
    result = rehearse(c, Hooks(), keep=True)
    assert result["verdict"] == "go"
    assert "kubectl -n geo port-forward svc/gis-rehearsal" in result["kept"]["connect"]
    sts = c.fake.get_for_test("StatefulSet", "geo", "gis-rehearsal")
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == TARGET
    svc = c.fake.get_for_test("Service", "geo", "gis-rehearsal")
    assert svc["spec"]["selector"] == {kube_rehearsal.LABEL_POD: "gis-rehearsal"}
    # production's Service selects production's pod only, never the clone
    pod_labels = c.fake.get_for_test("Pod", "geo", "gis-rehearsal-0")["metadata"]["labels"]
    prod_svc = c.fake.get_for_test("Service", "geo", "gis")
    assert not all(pod_labels.get(k) == v for k, v in prod_svc["spec"]["selector"].items())

    again = rehearse(c, Hooks())
    assert again["verdict"] == "no-go" and again["exit_code"] == EXIT_REFUSED
    assert "--remove" in again["what_to_do"]
    assert c.fake.get_for_test("StatefulSet", "geo", "gis-rehearsal") is not None  # kept, not removed

    removed = KubeRehearsal(c.runtime).remove("geo", "gis")
    assert "Service gis-rehearsal" in removed and "PersistentVolumeClaim data-gis-rehearsal-0" in removed
    assert rehearsal_left(c) == []
    assert c.fake.get_for_test("PersistentVolumeClaim", "geo", "data-gis-0") is not None
    assert KubeRehearsal(c.runtime).remove("geo", "gis") == []


def test_from_snapshot_restores_a_pvc_and_needs_no_login() -> None:
    c = make_cluster("bitnami")
    hooks = Hooks()
    target = "docker.io/bitnamilegacy/postgresql:17.2.0-debian-12-r8"
    result = rehearse(c, hooks, target=target, from_snapshot=True, keep=True)
    assert result["verdict"] == "go", result
    assert ("replication", "pg-postgresql-0") not in hooks.seen
    (snap,) = created(c, "volumesnapshots")
    assert snap["spec"] == {
        "source": {"persistentVolumeClaimName": "data-pg-postgresql-0"},
        "volumeSnapshotClassName": "ebs-snapclass",
    }
    (pvc,) = created(c, "persistentvolumeclaims")
    assert pvc["spec"]["dataSource"] == {
        "apiGroup": "snapshot.storage.k8s.io",
        "kind": "VolumeSnapshot",
        "name": snap["metadata"]["name"],
    }
    # the clone Job only seals the restored copy: no login, no password, no source
    (seal,) = [j for j in created(c, "jobs") if j["metadata"]["name"].endswith("-clone")]
    env = {e["name"] for e in seal["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"PGLEAP_VOLUME", "PGLEAP_OLD_REL"}
    snap_phase = next(p for p in result["phases"] if p["name"] == "snapshot of the running volume")
    down = sum(p["seconds"] for p in result["phases"] if p["in_downtime"]) + snap_phase["seconds"]
    assert result["predicted_downtime_seconds"] == round(down, 1)
    # a Helm-owned production: the rehearsal goes, and says what the real run will need
    assert any("helm" in hint.lower() for hint in result["real_run_needs"])
    KubeRehearsal(c.runtime).remove(c.namespace, c.name)
    assert rehearsal_left(c) == []
    assert c.fake.get_for_test("VolumeSnapshot", c.namespace, snap["metadata"]["name"]) is None


def test_from_snapshot_without_a_class_is_refused_before_any_write() -> None:
    c = make_cluster("official-plain")  # a hostPath volume: no CSI driver, no class
    result = rehearse(c, Hooks(), from_snapshot=True)
    assert result["verdict"] == "no-go" and result["exit_code"] == EXIT_REFUSED
    assert "VolumeSnapshotClass" in result["reason"] and "--snapshot-class" in result["what_to_do"]
    assert c.fake.writes_for_test() == []


def test_missing_replication_access_is_no_go_with_the_line_to_add() -> None:
    c = make_cluster("official-plain")
    line = (
        "pg_hba.conf has no `host replication` line for gis from the pod network: add "
        "`host replication gis <pod CIDR> scram-sha-256` to pg_hba.conf, then SELECT pg_reload_conf()"
    )
    result = rehearse(c, Hooks(problems=[line]))
    assert result["verdict"] == "no-go" and result["exit_code"] == EXIT_REFUSED
    assert "host replication gis" in result["what_to_do"] and "--from-snapshot" in result["what_to_do"]
    assert c.fake.writes_for_test() == []


def test_plain_text_password_is_refused() -> None:
    c = make_cluster("official-plain")
    sts = c.sts()
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    for e in env:
        if e["name"] == "POSTGRES_PASSWORD":
            e.pop("valueFrom")
            e["value"] = "hunter2"
    c.fake.seed_for_test(sts)
    result = rehearse(c, Hooks())
    assert result["verdict"] == "no-go" and result["exit_code"] == EXIT_REFUSED
    assert "secretKeyRef" in result["reason"] and "hunter2" not in str(result)
    assert c.fake.writes_for_test() == []


@pytest.mark.parametrize("target", ["pgleap/postgis:13-3.1", "pgleap/postgis:11-3.0"])
def test_same_or_older_major_is_refused_before_any_write(target: str) -> None:
    c = make_cluster("official-plain")
    result = rehearse(c, Hooks(), target=target)
    assert result["verdict"] == "no-go" and result["exit_code"] == EXIT_REFUSED
    assert "pick an image of a newer major" in result["what_to_do"]
    assert c.fake.writes_for_test() == []


def test_stopped_production_needs_from_snapshot() -> None:
    c = make_cluster("official-plain")
    c.fake.delete_pod_for_test("geo", "gis-0")
    result = rehearse(c, Hooks())
    assert result["verdict"] == "no-go" and "--from-snapshot" in result["what_to_do"]
    assert c.fake.writes_for_test() == []


def test_failed_clone_job_is_no_go_and_removes_what_it_made() -> None:
    c = make_cluster("official-plain")
    before = comparable(c.sts())
    c.fake.job_results["pgleap-gis-rehearsal-clone"] = "Failed"
    result = rehearse(c, Hooks())
    assert result["verdict"] == "no-go" and result["exit_code"] == EXIT_FAILED
    assert "pgleap-gis-rehearsal-clone failed" in result["reason"]
    assert rehearsal_left(c) == []
    assert comparable(c.sts()) == before


def test_a_fingerprint_difference_is_no_go_with_exit_4() -> None:
    c = make_cluster("official-plain")
    hooks = Hooks(differences=["gis: table public.parcels: rows 10 -> 9"])
    result = rehearse(c, hooks)
    assert result["verdict"] == "no-go" and result["exit_code"] == EXIT_VERIFY
    assert "public.parcels" in result["reason"]
    assert result["fingerprint"]["identical"] is False
    assert ("post_upgrade", "gis-rehearsal-0") not in hooks.seen
    assert rehearsal_left(c) == []


def test_a_difference_after_the_extension_updates_is_no_go_with_exit_4() -> None:
    """Identical right after pg_upgrade, different after the extension updates (the topology
    trap without its repair): the rehearsal must say no-go, naming the column's table."""
    c = make_cluster("official-plain")
    hooks = Hooks(user_differences=["gis: table city.streets differs: 25 rows -> 25 rows"])
    result = rehearse(c, hooks)
    assert result["verdict"] == "no-go" and result["exit_code"] == EXIT_VERIFY
    assert "city.streets" in result["reason"] and "extension updates" in result["reason"]
    assert result["fingerprint"]["identical"] is True
    assert result["fingerprint_after_extensions"]["identical"] is False
    assert rehearsal_left(c) == []


def test_failed_health_check_is_no_go_and_reported() -> None:
    c = make_cluster("official-plain")

    def failing(ctx: HookContext) -> dict[str, Any]:
        from toolkit.errors import VerificationFailed

        exc = VerificationFailed("health checks failed after the upgrade: amcheck: 1 corrupt index")
        exc.done = {"health": [{"check": "amcheck", "ok": False, "detail": "1 corrupt index"}]}  # type: ignore[attr-defined]
        raise exc

    hooks = Hooks()
    bundle = hooks.bundle()
    result = KubeRehearsal(c.runtime).rehearse(
        "geo",
        "gis",
        TARGET,
        scripts=SCRIPTS,
        job_env=JOB_ENV,
        hooks=RehearsalHooks(bundle.fingerprint, bundle.compare, failing, bundle.replication_problems),
    )
    assert result["verdict"] == "no-go" and result["exit_code"] == EXIT_VERIFY
    assert result["health"] == [{"check": "amcheck", "ok": False, "detail": "1 corrupt index"}]


def test_an_object_pgleap_did_not_make_blocks_the_name() -> None:
    c = make_cluster("official-plain")
    c.fake.seed_for_test(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "gis-rehearsal", "namespace": "geo"},
            "spec": {"ports": [{"port": 5432}]},
        }
    )
    result = rehearse(c, Hooks())
    assert result["verdict"] == "no-go" and "pgleap did not make it" in result["reason"]
    assert c.fake.writes_for_test() == []
    assert KubeRehearsal(c.runtime).remove("geo", "gis") == []  # never deletes what is not its own
    assert c.fake.get_for_test("Service", "geo", "gis-rehearsal") is not None


@pytest.mark.parametrize("fixture", ["official-plain", "bitnami", "sidecar", "groundhog2k", "argo"])
def test_rehearsal_objects_validate_strictly(fixture: str) -> None:
    from tests.kube.test_runtime import CASES

    c = make_cluster(fixture)
    sts = c.sts()
    facts = c.runtime.inspect(c.namespace, c.name)
    plan, _, _ = c.runtime.plan(c.namespace, c.name, CASES[fixture][0], overrides=CASES[fixture][1])
    copy_sts = kube_rehearsal.rehearsal_statefulset(sts, facts)
    objs = [
        copy_sts,
        kube_rehearsal.clone_pvc(sts, facts, snapshot=None, run_id="r"),
        kube_rehearsal.clone_pvc(sts, facts, snapshot="snap", run_id="r"),
        kube_rehearsal.source_snapshot(facts, "csi-snap", "r"),
        kube_rehearsal.rehearsal_service(facts),
        kube_rehearsal.clone_job(
            plan, sts, source_host="10.1.2.3", user="postgres", password_secret={"name": "s", "key": "k"}
        ),
        kube_rehearsal.clone_job(plan, sts),
    ]
    for obj in objs:
        assert validate_strict(copy.deepcopy(obj))
    # none of production's labels or owners follow the copy
    prod_labels = set((sts["metadata"].get("labels") or {}).items())
    assert not prod_labels & set(copy_sts["metadata"]["labels"].items())
    assert "ownerReferences" not in copy_sts["metadata"]
    assert copy_sts["spec"]["selector"]["matchLabels"].items() <= (
        copy_sts["spec"]["template"]["metadata"]["labels"].items()
    )


def test_from_snapshot_refused_when_postgres_spans_two_volumes() -> None:
    c = make_cluster("bitnami")
    sts = c.sts()
    sts["spec"]["volumeClaimTemplates"].append(
        {
            "metadata": {"name": "wal"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }
    )
    pg = next(x for x in sts["spec"]["template"]["spec"]["containers"] if x["name"] == "postgresql")
    pg["volumeMounts"].append({"name": "wal", "mountPath": "/bitnami/wal"})
    c.fake.seed_for_test(sts)
    target = "docker.io/bitnamilegacy/postgresql:17.2.0-debian-12-r8"
    result = rehearse(c, Hooks(), target=target, from_snapshot=True)
    assert result["verdict"] == "no-go" and "also mounts wal" in result["reason"]
    assert "without --from-snapshot" in result["what_to_do"]
    assert c.fake.writes_for_test() == []
