"""A Kubernetes rehearsal's rendered pods, executed on Docker as written, against real PostgreSQL.

Production's pod (the example StatefulSet on PostgreSQL 13 / PostGIS 3.1) keeps running while
the rendered clone Job copies it with pg_basebackup (password through secretKeyRef), the
rehearsal StatefulSet's pod recovers the copy, the rendered upgrade Job upgrades it, and the
new rehearsal pod passes the engine's hooks: the fingerprint after pg_upgrade equals the one of
production, extensions are updated, health checks pass. Production is never stopped.
"""

from __future__ import annotations

import contextlib
import copy

import pytest

from tests.kube.test_pods_on_docker import PodApi, _job_volumes, _start_pod, _stop, _sts
from toolkit.cli.kube import load_scripts
from toolkit.db import verify
from toolkit.kube import new_sts, render
from toolkit.kube import rehearsal_manifests as kube_rehearsal
from toolkit.kube.facts import gather
from toolkit.kube.hooks import engine_fingerprint, engine_post_upgrade, engine_replication_problems
from toolkit.kube.model import HookContext
from toolkit.kube.plan import make_plan

pytestmark = pytest.mark.docker


class PodWithIp(PodApi):
    """PodApi plus the Pod read the replication check makes (for the pod's IP)."""

    def get(self, kind: str, namespace: str, name: str) -> dict:
        self.container.reload()
        ip = next(n["IPAddress"] for n in self.container.attrs["NetworkSettings"]["Networks"].values())
        return {"status": {"podIP": ip}}


def _ip(container) -> str:
    container.reload()
    return next(n["IPAddress"] for n in container.attrs["NetworkSettings"]["Networks"].values())


def test_rendered_rehearsal_clones_a_running_server_and_upgrades_the_clone(kubelet, image_names):
    from toolkit.db.seed import seed

    old_image, new_image = image_names["13-3.1"], image_names["17-3.5"]
    sts = _sts(old_image)
    facts = gather(sts)
    plan = make_plan(facts, new_image, snapshot=False, job_env={"PGLEAP_SUPERUSER": "gis"})
    scripts = load_scripts()
    pods = []
    try:
        # Production, running and seeded.
        prod_pvc = kubelet.pvc_volume("data-gis-0")
        prod, prod_server = _start_pod(kubelet, copy.deepcopy(sts), prod_pvc)
        pods.append(prod)
        seed(prod_server, "gis", rows=400, polygons=40)
        lines: list[str] = []
        prod_ctx = HookContext(PodWithIp(prod), plan, "geo", "gis", "gis-0", "postgres", lines.append)

        # The official image has no replication line in pg_hba.conf: the check says which to add.
        # PostgreSQL 13 stores md5 passwords: the advice must be md5, which scram-sha-256 could not check.
        problems = engine_replication_problems(prod_ctx)
        assert len(problems) == 1 and "`host replication gis <pod CIDR> md5`" in problems[0], problems
        line = problems[0].split("`")[3].replace("<pod CIDR>", "all")
        prod.exec_run(["sh", "-c", f'echo "{line}" >> "$PGDATA/pg_hba.conf"'], user="postgres")
        prod_server.query("postgres", "SELECT pg_reload_conf()")
        assert engine_replication_problems(prod_ctx) == []
        before = verify.fingerprint(prod_server)
        # Production archives its WAL and has synchronous standbys (pending a restart here): a clone
        # that kept them would push its new timeline into the archive and hang on every write.
        with prod_server.connect("postgres") as conn:
            conn.execute("ALTER SYSTEM SET archive_mode = on")
            conn.execute("ALTER SYSTEM SET archive_command = 'touch /tmp/archived-%f'")
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'production_standby'")

        # The rendered clone Job copies the running server into the clone's PVC.
        job = kube_rehearsal.clone_job(
            plan,
            sts,
            source_host=_ip(prod),
            user="gis",
            password_secret={"name": "gis-db", "key": "password"},
        )
        view_scripts = render.scripts_configmap(
            make_plan(gather(kube_rehearsal.rehearsal_statefulset(sts, facts)), new_image, snapshot=False),
            scripts,
        )
        clone_pvc = kubelet.pvc_volume("data-gis-rehearsal-0")
        job_pod = job["spec"]["template"]["spec"]
        (container,) = job_pod["containers"]
        logs = kubelet.run(job_pod, container, _job_volumes(kubelet, job, view_scripts, clone_pvc))
        assert "clone complete: PostgreSQL 13" in logs and "PGLEAP cloned=" in logs
        assert "sealed: archive_mode off, no synchronous standbys" in logs
        assert kubelet.secrets["gis-db"]["password"] not in logs
        # Run again: the finished copy is kept, nothing copied twice.
        logs = kubelet.run(job_pod, container, _job_volumes(kubelet, job, view_scripts, clone_pvc))
        assert "complete; nothing to copy" in logs and "already sealed" in logs

        # The rehearsal StatefulSet's pod recovers the copy on the old image: same data.
        rsts = kube_rehearsal.rehearsal_statefulset(sts, facts)
        rpod, rserver = _start_pod(kubelet, copy.deepcopy(rsts), clone_pvc)
        rctx = HookContext(
            PodApi(rpod), plan, "geo", "gis-rehearsal", "gis-rehearsal-0", "postgres", lines.append
        )
        assert rserver.query("postgres", "SHOW archive_mode")[0][0] == "off"
        assert rserver.query("postgres", "SHOW synchronous_standby_names")[0][0] == ""
        cloned = engine_fingerprint(rctx)
        assert verify.compare(before, cloned).identical
        assert cloned.total_rows() == before.total_rows() > 400
        _stop(rpod)

        # The rendered upgrade Job of the rehearsal StatefulSet, on the clone only.
        rplan = make_plan(gather(rsts), new_image, snapshot=False, job_env={"PGLEAP_SUPERUSER": "gis"})
        assert rplan.data_pvc == "data-gis-rehearsal-0"
        ujob = render.upgrade_job(rplan, rsts, "upgrade")
        ujob_pod = ujob["spec"]["template"]["spec"]
        volumes = _job_volumes(kubelet, ujob, render.scripts_configmap(rplan, scripts), clone_pvc)
        volumes["old-binaries"] = ("volume", kubelet.pvc_volume("emptydir"))
        kubelet.apply_fs_group(volumes["old-binaries"][1], ujob_pod["securityContext"].get("fsGroup"))
        for init in ujob_pod["initContainers"]:
            kubelet.run(ujob_pod, init, volumes)
        logs = "".join(kubelet.run(ujob_pod, c, volumes) for c in ujob_pod["containers"])
        assert "PostgreSQL 17 cluster ready" in logs

        # The upgraded rehearsal pod: the engine's hooks, as `rehearse sts` calls them.
        npod, nserver = _start_pod(kubelet, copy.deepcopy(new_sts.new_statefulset(rplan, rsts)), clone_pvc)
        pods.append(npod)
        nctx = HookContext(
            PodApi(npod), rplan, "geo", "gis-rehearsal", "gis-rehearsal-0", "postgres", lines.append
        )
        assert verify.compare(before, engine_fingerprint(nctx)).differences == []
        done = engine_post_upgrade(nctx)
        assert done["extensions"]["gis"]["postgis"].startswith("3.5")
        assert done["extensions_updated"] and all(check["ok"] for check in done["health"])
        assert int(nserver.query("gis", "SHOW server_version_num")[0][0]) // 10000 == 17
        assert nserver.query("postgres", "SHOW archive_mode")[0][0] == "off"  # carried over by pg_upgrade
        assert npod.exec_run(["sh", "-c", "ls /tmp/archived-* 2>/dev/null | wc -l"]).output.strip() == b"0"

        # Production ran throughout, on its old major, with the same data.
        assert int(prod_server.query("gis", "SHOW server_version_num")[0][0]) // 10000 == 13
        assert verify.compare(before, verify.fingerprint(prod_server)).identical
    finally:
        for p in pods:
            with contextlib.suppress(Exception):
                p.remove(force=True, v=True)


def test_rendered_rehearsal_of_the_topology_trap_is_no_go_with_exit_4(kubelet, image_names, monkeypatch):
    """The negative case on real data: production's TopoGeometry columns (the seed's topology)
    cloned and upgraded 13 -> 18 (PostGIS 3.1 -> 3.7) with the repair switched off
    (PGLEAP_TEST_SKIP_REPAIRS=1). The fingerprint right after pg_upgrade is identical; the real
    post-upgrade hook then meets the widened TopoGeometry id and fails with exit 4, naming the
    column: what `rehearse sts` turns into no-go (test_rehearsal.py maps the hook's failure)."""
    from toolkit.db.seed import seed
    from toolkit.errors import VerificationFailed

    old_image, new_image = image_names["13-3.1"], image_names["18-3.x"]
    sts = _sts(old_image)
    facts = gather(sts)
    plan = make_plan(facts, new_image, snapshot=False, job_env={"PGLEAP_SUPERUSER": "gis"})
    scripts = load_scripts()
    pods = []
    try:
        prod_pvc = kubelet.pvc_volume("data-gis-0")
        prod, prod_server = _start_pod(kubelet, copy.deepcopy(sts), prod_pvc)
        pods.append(prod)
        seed(prod_server, "gis", rows=200, polygons=20)
        prod.exec_run(
            ["sh", "-c", 'echo "host replication gis all md5" >> "$PGDATA/pg_hba.conf"'], user="postgres"
        )
        prod_server.query("postgres", "SELECT pg_reload_conf()")
        before = verify.fingerprint(prod_server)

        # The rendered clone Job, the rendered upgrade Job of the rehearsal StatefulSet.
        job = kube_rehearsal.clone_job(
            plan,
            sts,
            source_host=_ip(prod),
            user="gis",
            password_secret={"name": "gis-db", "key": "password"},
        )
        rsts = kube_rehearsal.rehearsal_statefulset(sts, facts)
        rplan = make_plan(gather(rsts), new_image, snapshot=False, job_env={"PGLEAP_SUPERUSER": "gis"})
        clone_pvc = kubelet.pvc_volume("data-gis-rehearsal-0")
        job_pod = job["spec"]["template"]["spec"]
        (container,) = job_pod["containers"]
        view_scripts = render.scripts_configmap(rplan, scripts)
        assert "clone complete" in kubelet.run(
            job_pod, container, _job_volumes(kubelet, job, view_scripts, clone_pvc)
        )
        rpod, _ = _start_pod(kubelet, copy.deepcopy(rsts), clone_pvc)  # recovers the copy
        _stop(rpod)
        ujob = render.upgrade_job(rplan, rsts, "upgrade")
        ujob_pod = ujob["spec"]["template"]["spec"]
        volumes = _job_volumes(kubelet, ujob, view_scripts, clone_pvc)
        volumes["old-binaries"] = ("volume", kubelet.pvc_volume("emptydir"))
        kubelet.apply_fs_group(volumes["old-binaries"][1], ujob_pod["securityContext"].get("fsGroup"))
        for init in ujob_pod["initContainers"]:
            kubelet.run(ujob_pod, init, volumes)
        logs = "".join(kubelet.run(ujob_pod, c, volumes) for c in ujob_pod["containers"])
        assert "PostgreSQL 18 cluster ready" in logs

        npod, _ = _start_pod(kubelet, copy.deepcopy(new_sts.new_statefulset(rplan, rsts)), clone_pvc)
        pods.append(npod)
        nctx = HookContext(
            PodApi(npod), rplan, "geo", "gis-rehearsal", "gis-rehearsal-0", "postgres", lambda line: None
        )
        assert verify.compare(before, engine_fingerprint(nctx)).identical  # right after pg_upgrade
        monkeypatch.setenv("PGLEAP_TEST_SKIP_REPAIRS", "1")
        with pytest.raises(VerificationFailed, match=r"city\.streets\.topo") as failed:
            engine_post_upgrade(nctx)
        assert failed.value.exit_code == 4
        # production untouched throughout
        assert verify.compare(before, verify.fingerprint(prod_server)).identical
    finally:
        for p in pods:
            with contextlib.suppress(Exception):
                p.remove(force=True, v=True)
