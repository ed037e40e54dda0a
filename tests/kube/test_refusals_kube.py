"""Refusals before any change on Kubernetes, and removals that touch only pgleap's own objects."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.conftest import load_docs, load_sts
from tests.kube.harness import JOB_ENV, SCRIPTS, make_cluster
from tests.kube.test_cli_kube import build_app, runner
from toolkit.errors import PgleapError, Refused
from toolkit.kube import objects, render, secret_mask
from toolkit.kube.facts import gather
from toolkit.kube.plan import make_plan
from toolkit.kube.rehearsal import KubeRehearsal


def test_swap_to_a_target_below_18_is_refused_before_any_change() -> None:
    c = make_cluster("official-plain")
    with pytest.raises(Refused, match="--mode swap needs PostgreSQL 18"):
        c.runtime.upgrade(
            c.namespace, c.name, "pgleap/postgis:17-3.5", scripts=SCRIPTS, job_env=JOB_ENV, mode="swap"
        )
    assert c.fake.writes_for_test() == []
    assert c.sts()["spec"]["replicas"] == 1


def _user_from_secret(sts: dict[str, Any]) -> None:
    container = sts["spec"]["template"]["spec"]["containers"][0]
    for env in container["env"]:
        if env["name"] == "POSTGRES_USER":
            env.pop("value")
            env["valueFrom"] = {"secretKeyRef": {"name": "gis-db", "key": "username"}}


def test_superuser_from_a_secret_is_refused_before_the_stop() -> None:
    """pgleap does not read Secrets: without --superuser it must not guess `postgres`."""
    c = make_cluster("official-plain")
    sts = c.sts()
    _user_from_secret(sts)
    c.fake.seed_for_test(sts)
    job_env = {k: v for k, v in JOB_ENV.items() if k != "PGLEAP_SUPERUSER"}
    with pytest.raises(Refused, match="Secret gis-db key username") as exc:
        c.runtime.upgrade(c.namespace, c.name, "pgleap/postgis:17-3.5", scripts=SCRIPTS, job_env=job_env)
    assert "--superuser" in exc.value.hint
    assert c.fake.writes_for_test() == []


def test_superuser_from_a_secret_through_the_cli(tmp_path: Path) -> None:
    docs = load_docs("official-plain")
    _user_from_secret(next(d for d in docs if d["kind"] == "StatefulSet"))
    path = tmp_path / "sts.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    args = ["render", "-f", str(path), "--to", "pgleap/postgis:17-3.5"]
    result = runner.invoke(build_app(), args)
    assert isinstance(result.exception, Refused) and "Secret gis-db" in result.exception.message
    result = runner.invoke(build_app(), [*args, "--superuser", "gis"])
    assert result.exit_code == 0, result.output
    job = next(d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Job")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGLEAP_SUPERUSER"] == "gis"


def test_rehearsal_remove_spares_a_real_statefulset_named_like_the_clone() -> None:
    """`rehearse sts gis --remove` must not delete the run of a real StatefulSet `gis-rehearsal`."""
    c = make_cluster("official-plain")
    real = load_sts("official-plain")
    real["metadata"]["name"] = "gis-rehearsal"
    real["spec"]["serviceName"] = "gis-rehearsal"
    plan = make_plan(gather(real), "pgleap/postgis:17-3.5", job_env=JOB_ENV, run_id="real1")
    theirs = [
        real,
        render.state_configmap(plan, real, operation="upgrade", phase="upgraded"),
        render.scripts_configmap(plan, SCRIPTS),
        render.upgrade_job(plan, real),
    ]
    c.fake.seed_for_test(*copy.deepcopy(theirs))
    removed = KubeRehearsal(c.runtime).remove(c.namespace, c.name)
    assert removed == []
    for obj in theirs:
        kind, name = obj["kind"], obj["metadata"]["name"]
        assert c.fake.get_for_test(kind, c.namespace, name) is not None, f"{kind} {name} was deleted"


def test_state_configmap_masks_a_literal_password() -> None:
    sts = load_sts("official-plain")
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    env[:] = [e for e in env if e["name"] != "POSTGRES_PASSWORD"]
    env.append({"name": "POSTGRES_PASSWORD", "value": "hunter2-literal"})
    plan = make_plan(gather(sts), "pgleap/postgis:17-3.5", job_env=JOB_ENV, run_id="r1")
    cm = render.state_configmap(plan, sts, operation="upgrade", phase="recorded")
    assert "hunter2-literal" not in json.dumps(cm)
    stored = json.loads(cm["data"]["statefulset.json"])
    stored_env = {e["name"]: e for e in stored["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert stored_env["POSTGRES_PASSWORD"]["value"] == secret_mask.MASKED


def _literal_password_cluster():
    c = make_cluster("official-plain")
    sts = c.sts()
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    env[:] = [e for e in env if e["name"] != "POSTGRES_PASSWORD"]
    env.append({"name": "POSTGRES_PASSWORD", "value": "hunter2-literal"})
    c.fake.seed_for_test(sts)
    return c


def _password(sts: dict[str, Any]) -> str | None:
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(e.get("value") for e in env if e["name"] == "POSTGRES_PASSWORD")


def test_resume_takes_a_masked_password_from_the_live_statefulset() -> None:
    from tests.kube.test_runtime import Crash, crash_after_phase, upgrade

    c = _literal_password_cluster()
    crash_after_phase(c, "upgraded")
    with pytest.raises(Crash):
        upgrade(c, "official-plain", mode="copy")  # copy: rollback after the new cluster ran is allowed
    cm = c.fake.get_for_test("ConfigMap", c.namespace, objects.state_cm_name(c.name))
    assert "hunter2-literal" not in json.dumps(cm)
    out = c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
    assert out.phase == "done"
    assert _password(c.sts()) == "hunter2-literal"
    c.runtime.rollback(c.namespace, c.name, scripts=SCRIPTS, confirm=lambda _loss: True)
    assert _password(c.sts()) == "hunter2-literal"


def test_a_masked_password_with_no_live_holder_is_never_written_as_the_mask() -> None:
    from tests.kube.test_runtime import Crash, crash_after_phase, upgrade

    c = _literal_password_cluster()
    crash_after_phase(c, "upgraded")
    with pytest.raises(Crash):
        upgrade(c, "official-plain")
    c.fake.objects.pop((c.namespace, "StatefulSet", c.name))  # deleted by hand meanwhile
    with pytest.raises(PgleapError, match="POSTGRES_PASSWORD is not stored by pgleap"):
        c.runtime.resume(c.namespace, c.name, scripts=SCRIPTS)
    assert c.sts() is None
