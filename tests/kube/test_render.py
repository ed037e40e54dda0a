"""Rendered objects: the fields that keep data safe, checked on every fixture, schema-validated."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.kube.conftest import FIXTURE_NAMES, load_sts
from tests.kube.test_kube_facts import facts_of
from tests.kube.validation import validate_strict, versions
from toolkit.kube import new_sts as sts_objects
from toolkit.kube import objects, render
from toolkit.kube.plan import KubePlan, make_plan, merge_job_env

TARGETS = {
    "official-plain": "pgleap/postgis:17-3.5",
    "bitnami": "docker.io/bitnamilegacy/postgresql:17.2.0-debian-12-r8",
    "sidecar": "registry.example.com/postgis/postgis:18-3.6",
    "when-scaled-delete": "pgleap/postgis:18-3.x",
    "argo": "postgis/postgis:17-3.5",
    "flux": "postgis/postgis:18-3.6-alpine",
    "groundhog2k": "postgres:18.1",
    "bitnami-replication": "docker.io/bitnamilegacy/postgresql:17.2.0-debian-12-r8",
    "ordinals": "pgleap/postgis:17-3.5",
}
SCRIPTS = {
    "collect.sh": "#!/bin/bash\nset -euo pipefail\necho collect\n",
    "upgrade.sh": "echo up\n",
    "lib.sh": "",
}
ENV = {"PGLEAP_SUPERUSER": "postgres", "PGLEAP_INITDB_ARGS": "--data-checksums --encoding=UTF8"}


def plan_for(name: str, **kw: Any) -> KubePlan:
    kw.setdefault("job_env", ENV)
    return make_plan(facts_of(name), TARGETS[name], run_id="r1", **kw)


def rendered(name: str) -> list[dict[str, Any]]:
    return render.objects_for(plan_for(name, snapshot=True), load_sts(name), SCRIPTS)


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and not o["metadata"]["name"].endswith("-state"))


def test_fixture_targets_cover_every_fixture() -> None:
    assert sorted(TARGETS) == FIXTURE_NAMES


def test_schema_versions_span_1_29_to_newest() -> None:
    vs = versions()
    assert vs[0] == "1.29.0" and len(vs) >= 2 and len(set(vs)) == len(vs)


def test_every_object_validates_strictly(fixture_name: str) -> None:
    objs = rendered(fixture_name)
    assert [o["kind"] for o in objs] == ["ConfigMap", "VolumeSnapshot", "ConfigMap", "Job", "StatefulSet"]
    for obj in objs:
        checked = validate_strict(obj)
        assert checked == (["crd"] if obj["kind"] == "VolumeSnapshot" else list(versions()))


def test_strict_validation_catches_a_typo() -> None:
    job = by_kind(rendered("official-plain"), "Job")
    job["spec"]["backofLimit"] = 0
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strict(job)
    snap = by_kind(rendered("official-plain"), "VolumeSnapshot")
    snap["spec"]["source"]["pvc"] = "x"
    with pytest.raises(jsonschema.ValidationError):
        validate_strict(snap)


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def test_job_contract(fixture_name: str) -> None:
    plan = plan_for(fixture_name)
    sts = load_sts(fixture_name)
    job = render.upgrade_job(plan, sts)
    assert job["metadata"]["name"] == f"pgleap-{plan.sts}-upgrade"
    assert job["spec"]["backoffLimit"] == 0
    assert "ttlSecondsAfterFinished" not in job["spec"]
    pod = pod_of(job)
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    (init,) = pod["initContainers"]
    (main,) = pod["containers"]
    assert (init["name"], init["image"], init["command"]) == (
        "collect",
        plan.core.old_image,
        ["bash", "/pgleap/scripts/collect.sh"],
    )
    assert init["env"] == [{"name": "PGLEAP_OLD_ROOT", "value": "/pgleap/old"}]
    assert (main["name"], main["image"], main["command"]) == (
        "upgrade",
        plan.core.new_image,
        ["bash", "/pgleap/scripts/upgrade.sh"],
    )
    for c in (init, main):
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/pgleap/scripts"]["readOnly"] is True
        assert mounts["/pgleap/old"]["name"] == "old-binaries"
    data = next(m for m in main["volumeMounts"] if m["name"] == "data")
    assert data == {"name": "data", "mountPath": "/pgleap/volume"}  # no subPath: the whole volume
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["scripts"]["configMap"] == {"name": f"pgleap-{plan.sts}-scripts", "defaultMode": 0o555}
    assert vols["old-binaries"] == {"name": "old-binaries", "emptyDir": {}}
    assert vols["data"]["persistentVolumeClaim"] == {"claimName": facts_of(fixture_name).data_pvc}
    # pgleap's labels only: the database's Services must not select the Job pod
    assert set(job["spec"]["template"]["metadata"]["labels"]) == {
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/name",
        "pgleap.io/statefulset",
        "pgleap.io/action",
    }


def test_job_security_context(fixture_name: str) -> None:
    facts = facts_of(fixture_name)
    pod = pod_of(render.upgrade_job(plan_for(fixture_name), load_sts(fixture_name)))
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == facts.uid
    assert psc.get("runAsGroup") == facts.gid and psc.get("fsGroup") == facts.fs_group
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == facts.uid and sc["runAsUser"] != 0
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "privileged" not in sc


@pytest.mark.parametrize(
    ("name", "uid", "gid", "fs_group"),
    [("bitnami", 1001, 0, 1001), ("official-plain", 999, 999, None), ("flux", 70, 70, None)],
)
def test_job_runs_as_the_statefulset_user(name: str, uid: int, gid: int, fs_group: int | None) -> None:
    psc = pod_of(render.upgrade_job(plan_for(name), load_sts(name)))["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc.get("fsGroup")) == (uid, gid, fs_group)


def test_job_env_and_no_secret(fixture_name: str) -> None:
    plan = plan_for(fixture_name)
    job = render.upgrade_job(plan, load_sts(fixture_name), "rollback")
    env = {e["name"]: e for e in pod_of(job)["containers"][0]["env"]}
    assert all(set(e) == {"name", "value"} for e in env.values())  # literals only, no valueFrom
    assert env["PGLEAP_ACTION"]["value"] == "rollback"
    assert env["PGLEAP_OLD_REL"]["value"] == plan.core.layout.old_rel
    assert env["PGLEAP_NEW_REL"]["value"] == plan.core.layout.new_rel
    assert env["PGLEAP_VOLUME"]["value"] == "/pgleap/volume"
    assert env["PGLEAP_SUPERUSER"]["value"] == "postgres"
    text = json.dumps(render.objects_for(plan, load_sts(fixture_name), SCRIPTS))
    for name in (
        "POSTGRES_REPLICATION_PASSWORD",
        "POSTGRES_PASSWORD",
        "replication-password",
        "postgres-password",
        "PGPASSWORD",
    ):
        text = text.replace(name, "")
    assert "PASSWORD" not in text
    for job_or_sts in render.objects_for(plan, load_sts(fixture_name), SCRIPTS):
        for c in _containers(job_or_sts):
            for e in c.get("env") or []:
                if "PASS" in e["name"]:
                    assert "value" not in e and "secretKeyRef" in e["valueFrom"]


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] not in ("Job", "StatefulSet"):
        return []
    spec = obj["spec"]["template"]["spec"]
    return (spec.get("initContainers") or []) + spec["containers"]


@pytest.mark.parametrize("key", ["POSTGRES_PASSWORD", "PGPASSWORD", "MY_SECRET", "API_TOKEN"])
def test_secret_in_job_env_refused(key: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        plan_for("official-plain", job_env={key: "x"})


def test_contradicting_layout_env_refused() -> None:
    with pytest.raises(ValueError, match="contradicts"):
        plan_for("official-plain", job_env={"PGLEAP_NEW_REL": "elsewhere"})
    with pytest.raises(ValueError, match="PGLEAP_ACTION"):
        merge_job_env({}, {"PGLEAP_ACTION": "upgrade"})


def test_node_pin_from_pv_local_volume() -> None:
    pod = pod_of(render.upgrade_job(plan_for("official-plain"), load_sts("official-plain")))
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}]}
    ]


def test_node_pin_from_pv_zone_keeps_pod_anti_affinity() -> None:
    pod = pod_of(render.upgrade_job(plan_for("bitnami"), load_sts("bitnami")))
    aff = pod["affinity"]
    assert "podAntiAffinity" in aff
    terms = aff["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["key"] == "topology.ebs.csi.aws.com/zone"


def test_node_pin_falls_back_to_last_pod_node() -> None:
    facts = facts_of("official-plain")
    claim = dataclasses.replace(facts.claims[0], node_terms=())
    facts = dataclasses.replace(facts, claims=(claim,))
    plan = make_plan(facts, "pgleap/postgis:17-3.5", run_id="r1")
    terms = pod_of(render.upgrade_job(plan, load_sts("official-plain")))["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}]
    shared = dataclasses.replace(claim, access_modes=("ReadWriteMany",))
    plan = make_plan(dataclasses.replace(facts, claims=(shared,)), "pgleap/postgis:17-3.5", run_id="r1")
    assert "affinity" not in pod_of(render.upgrade_job(plan, load_sts("official-plain")))


def test_sidecar_scheduling_copied_and_pin_anded() -> None:
    plan = plan_for("sidecar")
    plan = KubePlan.from_json(plan.to_json())  # the stored plan renders the same Job
    sts = load_sts("sidecar")
    pin = ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},)
    pod = pod_of(render.upgrade_job(plan, sts, node_terms=pin))
    src = sts["spec"]["template"]["spec"]
    assert pod["tolerations"] == src["tolerations"]
    assert pod["nodeSelector"] == src["nodeSelector"]
    assert pod["imagePullSecrets"] == src["imagePullSecrets"]
    assert pod["containers"][0]["resources"] == src["containers"][0]["resources"]
    assert pod["initContainers"][0]["resources"] == src["containers"][0]["resources"]
    (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert term["matchExpressions"] == [{"key": "node-role/db", "operator": "Exists"}]
    assert term["matchFields"][0]["values"] == ["n1"]


def test_merge_node_terms_is_a_cross_product() -> None:
    a = [
        {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
        {"matchExpressions": [{"key": "b", "operator": "Exists"}]},
    ]
    p = ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]},)
    merged = render.merge_node_terms(a, p)
    assert len(merged) == 2 and all("matchFields" in t and "matchExpressions" in t for t in merged)
    assert render.merge_node_terms(a, ()) == a
    assert render.merge_node_terms(None, p) == list(p)


def new_sts(name: str) -> dict[str, Any]:
    return sts_objects.new_statefulset(plan_for(name), load_sts(name))


def pg_container(sts: dict[str, Any], name: str) -> dict[str, Any]:
    facts = facts_of(name)
    return next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == facts.container)


def data_mount(sts: dict[str, Any], name: str) -> dict[str, Any]:
    facts = facts_of(name)
    return next(m for m in pg_container(sts, name)["volumeMounts"] if m["name"] == facts.data_claim)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env") or []}


def test_new_statefulset_keeps_identity(fixture_name: str) -> None:
    old = load_sts(fixture_name)
    new = new_sts(fixture_name)
    for key in ("selector", "serviceName", "volumeClaimTemplates", "replicas"):
        assert new["spec"].get(key) == old["spec"].get(key)
    assert new["metadata"]["name"] == old["metadata"]["name"]
    assert new["metadata"].get("labels") == old["metadata"].get("labels")
    assert new["spec"].get("persistentVolumeClaimRetentionPolicy") == old["spec"].get(
        "persistentVolumeClaimRetentionPolicy"
    )
    assert new["metadata"]["annotations"]["pgleap.io/upgraded-from"] == facts_of(fixture_name).image.ref
    assert pg_container(new, fixture_name)["image"] == TARGETS[fixture_name]
    # probes and secret references untouched
    old_c, new_c = pg_container(old, fixture_name), pg_container(new, fixture_name)
    for probe in ("readinessProbe", "livenessProbe"):
        assert new_c.get(probe) == old_c.get(probe)
    for name, env in env_of(old_c).items():
        if "valueFrom" in env:
            assert env_of(new_c)[name] == env


def test_new_statefulset_strips_server_fields() -> None:
    old = load_sts("official-plain")
    old["metadata"].update(
        resourceVersion="7", uid="u", creationTimestamp="2024-01-01T00:00:00Z", generation=3
    )
    old["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    old["status"] = {"replicas": 1}
    old["spec"]["template"]["metadata"]["creationTimestamp"] = None
    old["spec"]["volumeClaimTemplates"][0]["status"] = {"phase": "Pending"}
    new = sts_objects.new_statefulset(plan_for("official-plain"), old)
    assert "status" not in new
    assert not {"resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"} & set(
        new["metadata"]
    )
    assert "creationTimestamp" not in new["spec"]["template"]["metadata"]
    assert "status" not in new["spec"]["volumeClaimTemplates"][0]
    validate_strict(new)


@pytest.mark.parametrize(
    ("name", "mount", "sub_path", "pgdata_env", "old_rel", "new_rel"),
    [
        ("official-plain", "/var/lib/postgresql/data", None, None, "", ""),
        ("bitnami", "/bitnami/postgresql", None, "/bitnami/postgresql/data", "data", "data"),
        (
            "sidecar",
            "/var/lib/postgresql",
            "postgres",
            "/var/lib/postgresql/18/docker",
            "postgres",
            "postgres/18/docker",
        ),
        ("when-scaled-delete", "/var/lib/postgresql", "data", None, "data/data", "data/18/docker"),
        # a user-chosen PGDATA stays (the one placement rule, core/layout.py)
        ("groundhog2k", "/var/lib/postgresql/data", None, "/var/lib/postgresql/data/pg", "pg", "pg"),
        ("flux", "/var/lib/postgresql", None, None, "", "18/docker"),
    ],
)
def test_layout_in_new_statefulset(
    name: str, mount: str, sub_path: str | None, pgdata_env: str | None, old_rel: str, new_rel: str
) -> None:
    plan = plan_for(name)
    assert (plan.core.layout.old_rel, plan.core.layout.new_rel) == (old_rel, new_rel)
    sts = sts_objects.new_statefulset(plan, load_sts(name))
    m = data_mount(sts, name)
    assert m["mountPath"] == mount and m.get("subPath") == sub_path
    env = env_of(pg_container(sts, name)).get("PGDATA")
    assert (env or {}).get("value") == pgdata_env


def test_sidecar_and_init_images() -> None:
    sts = new_sts("sidecar")
    exporter = next(c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "exporter")
    assert exporter["image"] == "quay.io/prometheuscommunity/postgres-exporter:v0.15.0"
    assert (
        sts["spec"]["template"]["spec"]["volumes"]
        == load_sts("sidecar")["spec"]["template"]["spec"]["volumes"]
    )
    gh = new_sts("groundhog2k")
    assert gh["spec"]["template"]["spec"]["initContainers"][0]["image"] == "postgres:18.1"


def test_scripts_configmap_holds_any_files() -> None:
    cm = render.scripts_configmap(plan_for("official-plain"), {"b.sh": "x", "a.sh": "#!/bin/bash\n"})
    assert cm["metadata"]["name"] == "pgleap-gis-scripts"
    assert cm["data"] == {"a.sh": "#!/bin/bash\n", "b.sh": "x"}
    with pytest.raises(ValueError):
        render.scripts_configmap(plan_for("official-plain"), {"../x": ""})


def test_state_configmap_round_trips() -> None:
    plan = plan_for("bitnami", snapshot=True)
    sts = load_sts("bitnami")
    cm = render.state_configmap(plan, sts, operation="upgrade", phase="stopped")
    assert cm["metadata"]["name"] == "pgleap-pg-postgresql-state"
    assert cm["data"]["phase"] == "stopped" and cm["data"]["operation"] == "upgrade"
    assert KubePlan.from_json(cm["data"]["plan.json"]) == plan
    assert json.loads(cm["data"]["statefulset.json"]) == objects.clean_object(sts)


def test_volume_snapshot() -> None:
    plan = plan_for("bitnami", snapshot=True)
    snap = render.volume_snapshot(plan)
    assert snap is not None
    assert snap["spec"] == {
        "volumeSnapshotClassName": "ebs-snapclass",
        "source": {"persistentVolumeClaimName": "data-pg-postgresql-0"},
    }
    assert render.volume_snapshot(plan_for("bitnami", snapshot=False)) is None
    assert plan_for("bitnami").snapshot is not None  # auto: a matching class exists
    assert plan_for("official-plain").snapshot is None  # auto: no class for a hostPath volume


def test_retention_patch_planned_only_when_needed() -> None:
    assert plan_for("when-scaled-delete").patch_retention is True
    assert plan_for("official-plain").patch_retention is False


def test_long_names_are_cut_with_a_hash() -> None:
    name = objects.job_name("x" * 80, "finalize")
    assert len(name) == 63 and name != objects.job_name("x" * 81, "finalize")
    assert objects.job_name("gis", "upgrade") == "pgleap-gis-upgrade"


def test_yaml_stream_round_trips() -> None:
    objs = rendered("sidecar")
    assert list(yaml.safe_load_all(render.to_yaml(objs))) == objs


def test_containers_seeing_the_data_follow_the_18_layout_move() -> None:
    """An init container mounting the data where postgres does (and setting the same PGDATA) moves
    with it to the 18+ layout; a sidecar mounting the volume elsewhere is left as it is."""
    from toolkit.kube.facts import gather

    sts = load_sts("official-plain")
    pod = sts["spec"]["template"]["spec"]
    pod["containers"][0]["env"].append({"name": "PGDATA", "value": "/var/lib/postgresql/data"})
    pod["initContainers"] = [
        {
            "name": "fix-permissions",
            "image": "busybox:1.36",
            "command": ["sh", "-c", 'chmod 0700 "$PGDATA" || true'],
            "env": [{"name": "PGDATA", "value": "/var/lib/postgresql/data"}],
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
        }
    ]
    pod["containers"].append(
        {
            "name": "backup",
            "image": "backup-agent:1",
            "volumeMounts": [{"name": "data", "mountPath": "/backup-source", "readOnly": True}],
        }
    )
    plan = make_plan(gather(sts), "pgleap/postgis:18-3.x", job_env=ENV, run_id="r1")
    assert plan.core.layout.changes_mount
    new = sts_objects.new_statefulset(plan, sts)["spec"]["template"]["spec"]
    (init,) = new["initContainers"]
    assert init["volumeMounts"] == [{"name": "data", "mountPath": "/var/lib/postgresql"}]
    assert env_of(init)["PGDATA"]["value"] == "/var/lib/postgresql/18/docker"
    assert env_of(new["containers"][0])["PGDATA"]["value"] == "/var/lib/postgresql/18/docker"
    assert new["containers"][0]["volumeMounts"] == init["volumeMounts"]
    backup = next(c for c in new["containers"] if c["name"] == "backup")
    assert backup["volumeMounts"] == [{"name": "data", "mountPath": "/backup-source", "readOnly": True}]
    validate_strict(sts_objects.new_statefulset(plan, sts))
