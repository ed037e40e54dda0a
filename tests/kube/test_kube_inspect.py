"""The live-cluster read before the stop, wired into the Kubernetes runtime (fake API).

The SQL side runs against real PostgreSQL in test_parity_refusals.py; here: it is called with
the probed images before any write, its refusal stops the run, its decisions reach the Job."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.kube.harness import JOB_ENV, make_cluster
from tests.kube.probes import PROBE_SCRIPTS, recorded_runner
from tests.kube.test_probe import non_probe_writes
from toolkit.errors import Refused
from toolkit.kube import objects
from toolkit.kube.hooks import collation_changes
from toolkit.kube.plan import KubePlan

TARGET = "pgleap/postgis:17-3.5"


def _cluster():
    c = make_cluster("official-plain")
    c.fake.pod_runner = recorded_runner()
    return c


def test_a_refusal_of_the_live_read_comes_before_any_write() -> None:
    c = _cluster()
    seen = []

    def preflight(ctx, images, *, pgdata, scripts):
        seen.append((ctx.pod, images[0].version, images[1].version, pgdata))
        raise Refused("the target image lacks extensions the cluster uses: x (in gis)", "use another")

    with pytest.raises(Refused, match="lacks extensions"):
        c.runtime.upgrade(
            c.namespace, c.name, TARGET, scripts=PROBE_SCRIPTS, job_env=JOB_ENV, preflight=preflight
        )
    assert seen == [("gis-0", "13.16", "17.12", "/var/lib/postgresql/data")]
    assert non_probe_writes(c) == []
    assert c.sts()["spec"]["replicas"] == 1


def test_the_live_read_decides_the_job_env_and_the_reindex() -> None:
    c = _cluster()

    def preflight(ctx, images, *, pgdata, scripts):
        env = {**ctx.plan.job_env, "PGLEAP_MAX_LOCKS": "250"}
        return replace(
            ctx.plan, job_env=env, core=replace(ctx.plan.core, glibc=("2.31", "2.41"), icu=("67", "76"))
        )

    c.runtime.upgrade(
        c.namespace,
        c.name,
        TARGET,
        scripts=PROBE_SCRIPTS,
        job_env=JOB_ENV,
        preflight=preflight,
        post_upgrade=c.hook,
    )
    job = c.fake.get_for_test("Job", c.namespace, objects.job_name(c.name, "upgrade"))
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGLEAP_MAX_LOCKS"] == "250"
    plan = c.runtime.read_state(c.namespace, c.name).plan  # stored and read back
    assert plan.core.glibc == ("2.31", "2.41") and plan.core.icu == ("67", "76")
    assert c.hook_calls[0].plan.core.glibc == ("2.31", "2.41")


def test_a_statefulset_that_does_not_run_is_refused_with_what_to_do() -> None:
    c = _cluster()
    c.fake.delete_pod_for_test(c.namespace, f"{c.name}-0")
    with pytest.raises(Refused, match="does not run") as exc:
        c.runtime.upgrade(
            c.namespace,
            c.name,
            TARGET,
            scripts=PROBE_SCRIPTS,
            job_env=JOB_ENV,
            preflight=lambda *a, **k: None,
        )
    assert "scale statefulset gis --replicas=1" in exc.value.hint
    assert non_probe_writes(c) == []


def test_reindex_is_targeted_by_the_probed_libraries() -> None:
    c = _cluster()
    plan, _, _ = c.runtime.plan(c.namespace, c.name, TARGET, job_env=JOB_ENV)
    assert collation_changes(plan) == (True, True)  # not probed (a plan stored by an older pgleap)

    def probed(glibc: tuple[str, str], icu: tuple[str, str]) -> KubePlan:
        return replace(plan, core=replace(plan.core, glibc=glibc, icu=icu))

    assert collation_changes(probed(("2.41", "2.41"), ("76", "76"))) == (False, False)
    assert collation_changes(probed(("2.41", "2.41"), ("", ""))) == (False, False)
    assert collation_changes(probed(("2.36", "2.41"), ("76", "76"))) == (True, False)
    assert collation_changes(probed(("2.41", "2.41"), ("72", "76"))) == (False, True)


def test_a_bootstrap_role_other_than_the_jobs_initdb_user_is_refused(monkeypatch) -> None:
    """pg_upgrade needs the new cluster's OID-10 role to be the old one's: refused before the stop."""
    from types import SimpleNamespace

    from toolkit.kube import inspect as kube_inspect

    c = _cluster()
    live = SimpleNamespace(
        superuser="postgres", databases=("gis",), max_locks=0, glibc=("", ""), icu=("", "")
    )
    monkeypatch.setattr(kube_inspect, "live_plan", lambda *a, **k: live)
    with pytest.raises(Refused, match="bootstrap role \\(OID 10\\) is postgres, the Job would initdb") as exc:
        c.runtime.upgrade(
            c.namespace,
            c.name,
            TARGET,
            scripts=PROBE_SCRIPTS,
            job_env={**JOB_ENV, "PGLEAP_SUPERUSER": "gis"},
            preflight=kube_inspect.engine_preflight,
        )
    assert "--superuser postgres" in exc.value.hint
    assert non_probe_writes(c) == []


def test_plan_reads_the_live_cluster_too() -> None:
    """`plan sts` refuses what `upgrade sts` would, read-only."""
    c = _cluster()

    def preflight(ctx, images, *, pgdata, scripts):
        raise Refused("PostGIS 2.x -> 3.x with pg_upgrade needs a manual step (raster split out)", "update")

    with pytest.raises(Refused, match=r"PostGIS 2\.x"):
        c.runtime.plan(
            c.namespace, c.name, TARGET, job_env=JOB_ENV, scripts=PROBE_SCRIPTS, preflight=preflight
        )
    assert non_probe_writes(c) == []
