"""One upgrade.sh contract for both runtimes: the same facts give Docker's container env and the
Kubernetes Job's env key for key, and a plan stored by the pgleap before the merge still loads."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import pytest

from tests.kube.conftest import load_sts
from tests.kube.test_kube_facts import facts_of
from tests.test_plan import cluster, data, image
from toolkit.core.layout import new_layout
from toolkit.core.plan import make_plan as core_plan
from toolkit.core.upgrade import MajorUpgrade
from toolkit.kube.plan import KubePlan, make_plan, with_live_plan
from toolkit.kube.stored import check_stored, digest

# (target image for Kubernetes, its major and version, its PGDATA and VOLUMEs for Docker)
TARGETS = [
    ("pgleap/postgis:17-3.5", 17, "17.12", "/var/lib/postgresql/data", ["/var/lib/postgresql/data"]),
    ("pgleap/postgis:18-3.6", 18, "18.1", "/var/lib/postgresql/18/docker", ["/var/lib/postgresql"]),
]
OLD_PGDATA = "/var/lib/postgresql/data"  # official-plain: the 13 image's default, its own volume


@pytest.mark.parametrize(("ref", "major", "version", "target_pgdata", "volumes"), TARGETS)
@pytest.mark.parametrize("mode", ["link", "copy"])
@pytest.mark.parametrize("relations", [10, 20_000])  # the default lock table, and one pg_upgrade outgrows
def test_docker_and_kubernetes_give_upgrade_sh_the_same_env(
    ref, major, version, target_pgdata, volumes, mode, relations
):
    old = image(13, "13.16", glibc="2.31", icu="67", postgis="3.1.1")
    new = image(major, version, glibc="2.41", icu="76", postgis="3.5.2")
    c = cluster()
    facts = replace(c, databases=tuple(replace(db, relations=relations) for db in c.databases))
    d = data(checksums=True)

    docker_layout = new_layout(OLD_PGDATA, OLD_PGDATA, OLD_PGDATA, target_pgdata, volumes)
    docker = core_plan(old=old, new=new, data=d, cluster=facts, layout=docker_layout, mode=mode)

    kplan = make_plan(
        facts_of("official-plain"), ref, mode=mode, run_id="r1", job_env={"PGLEAP_SUPERUSER": "gis"}
    )
    # What kube/inspect.py's live read does: core's plan on the Kubernetes layout, merged back.
    live = core_plan(old=old, new=new, data=d, cluster=facts, layout=kplan.core.layout, mode=mode)
    kube = with_live_plan(kplan, live)

    for action in ("upgrade", "rollback", "finalize"):
        assert kube.env_for(action) == docker.container_env(action)
    env = kube.env_for("upgrade")
    assert "--data-checksums" in env["PGLEAP_INITDB_ARGS"]
    assert (env["PGLEAP_MAX_LOCKS"] != "0") == (relations > 6000)


def test_initdb_options_the_caller_gave_stay() -> None:
    kplan = make_plan(
        facts_of("official-plain"),
        "pgleap/postgis:17-3.5",
        run_id="r1",
        job_env={"PGLEAP_SUPERUSER": "gis", "PGLEAP_INITDB_ARGS": "--encoding=LATIN1"},
    )
    live = core_plan(
        old=image(13, "13.16"),
        new=image(17, "17.12"),
        data=data(),
        cluster=cluster(),
        layout=kplan.core.layout,
    )
    assert with_live_plan(kplan, live).job_env["PGLEAP_INITDB_ARGS"] == "--encoding=LATIN1"


# plan.json as pgleap a9bef98 (before the shared contract) wrote it for official-plain 13 -> 18.
STORED = (
    '{"container": "postgres", "data_claim": "data", "data_pvc": "data-gis-0", "downtime": "verified", '
    '"fs_group": null, "gid": 999, "glibc": ["", ""], "icu": ["", ""], "job_env": {"PGLEAP_MAX_LOCKS": "250", '
    '"PGLEAP_MODE": "link", "PGLEAP_NEW_MAJOR": "18", "PGLEAP_NEW_REL": "18/docker", "PGLEAP_OLD_MAJOR": "13", '
    '"PGLEAP_OLD_REL": "", "PGLEAP_OLD_ROOT": "/pgleap/old", "PGLEAP_SUPERUSER": "gis", '
    '"PGLEAP_VOLUME": "/pgleap/volume"}, "layout": {"new_mount": "/var/lib/postgresql", '
    '"new_pgdata": "/var/lib/postgresql/18/docker", "old_mount": "/var/lib/postgresql/data", '
    '"old_pgdata": "/var/lib/postgresql/data", "sub_path": ""}, "mode": "link", '
    '"mount_path": "/var/lib/postgresql/data", "namespace": "geo", "new_image": "pgleap/postgis:18-3.6", '
    '"new_major": 18, "node_terms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", '
    '"operator": "In", "values": ["node-a"]}]}], "old_image": "pgleap/postgis:13-3.1", "old_major": 13, '
    '"patch_retention": false, "rehearsal_of": null, "replicas": null, "run_id": "stored1", "snapshot": null, '
    '"snapshot_class": null, "sts": "gis", "sub_path": "", "termination_grace_seconds": 60, "uid": 999}'
)


def test_a_plan_stored_before_the_shared_contract_loads_and_validates() -> None:
    plan = KubePlan.from_json(STORED)
    sts = json.dumps(load_sts("official-plain"))
    cm = {"plan.json": STORED, "statefulset.json": sts, "digest": digest(STORED, sts)}
    check_stored("pgleap-gis", cm, plan, load_sts("official-plain"))
    assert plan.to_json() == json.dumps(json.loads(STORED), sort_keys=True)
    env = plan.env_for("upgrade")
    assert env["PGLEAP_NEW_REL"] == "18/docker" and env["PGLEAP_MAX_LOCKS"] == "250"
    assert "PGLEAP_INITDB_ARGS" not in env  # upgrade.sh reads them from the old cluster, as it did


# plan.json as pgleap 9e0e140 (the last KubePlan with the core's fields beside its own) wrote it:
# a primary/read pair, --keep-readers, --downtime minimal, probed glibc/ICU.
STORED_PAIR = Path(__file__).parent / "stored" / "plan-9e0e140-primary-read.json"


def test_a_flat_plan_stored_before_the_core_loads_into_it_and_is_written_back_unchanged() -> None:
    text = STORED_PAIR.read_text().strip()
    plan = KubePlan.from_json(text)
    assert plan.core == MajorUpgrade(
        old_image="docker.io/bitnamilegacy/postgresql:16.4.0-debian-12-r0",
        new_image="docker.io/bitnamilegacy/postgresql:17.2.0-debian-12-r8",
        old_major=16,
        new_major=17,
        mode="link",
        layout=plan.replicas.layout,  # the read StatefulSet has the primary's layout
        uid=1001,
        gid=0,
        glibc=("2.31", "2.41"),
        icu=("67", "76"),
        downtime="minimal",
    )
    assert plan.core.layout.new_pgdata == "/bitnami/postgresql/data"
    assert plan.to_json() == text  # the stored format is unchanged: digests and older readers agree
    assert KubePlan.from_json(plan.to_json()) == plan
    assert plan.env_for("upgrade")["PGLEAP_CHECK"] == "0" and plan.replicas.keep_readers
    view = plan.replica_view()
    assert (view.sts, view.core.layout, view.core.new_major) == (
        "pg-postgresql-read",
        plan.replicas.layout,
        17,
    )


def test_a_plan_stored_before_downtime_and_the_probed_libraries_takes_their_defaults() -> None:
    data = json.loads(STORED)
    for key in ("downtime", "glibc", "icu"):
        del data[key]
    plan = KubePlan.from_json(json.dumps(data))
    assert (plan.core.downtime, plan.core.glibc, plan.core.icu) == ("verified", ("", ""), ("", ""))
    assert not plan.core.collation_libraries_known


def test_the_kubernetes_plan_holds_the_core_and_repeats_none_of_its_fields() -> None:
    own = {f.name for f in fields(KubePlan)}
    assert "core" in own and not own & {f.name for f in fields(MajorUpgrade)}
