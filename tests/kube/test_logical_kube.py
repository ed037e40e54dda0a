"""`--strategy logical` on Kubernetes, the parts that need no database: the rendered objects
(validated strictly, 1.29 -> newest, restricted), the Service hand-over patches, the run's
ConfigMap, finalize's refusal while a Service still selects the old pods, and the CLI's
refusals before any cluster call. The runs themselves (SQL through the port-forward) are in
test_logical_pods_on_docker.py."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.kube.conftest import load_sts
from tests.kube.fake_api import restricted_violations
from tests.kube.harness import make_cluster
from tests.kube.test_cli_kube import build_app
from tests.kube.validation import validate_strict
from toolkit.errors import Refused
from toolkit.kube import logical_objects as lo
from toolkit.kube.logical import KubeState, LogicalKube

runner = CliRunner()
NEW = "pgleap/postgis:17-3.5"


@pytest.mark.parametrize("fixture", ["official-plain", "groundhog2k", "sidecar", "bitnami"])
def test_next_statefulset_is_valid_and_selected_by_no_user_service(fixture) -> None:
    sts = load_sts(fixture)
    pod = sts["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if any(m["name"] in
                     {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
                     for m in c.get("volumeMounts") or []))  # fmt: skip
    old = container["image"]
    nxt = lo.next_statefulset(sts, container=container["name"], old_image=old, new_image=NEW, new_major=17)
    assert validate_strict(nxt)
    name = sts["metadata"]["name"]
    assert nxt["metadata"]["name"] == f"{name}-next" and nxt["spec"]["replicas"] == 1
    labels = nxt["spec"]["template"]["metadata"]["labels"]
    assert labels == lo.next_labels(name) == nxt["spec"]["selector"]["matchLabels"]
    user_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert not set(user_labels.items()) & set(labels.items())  # no selector of the user's matches
    assert "ownerReferences" not in nxt["metadata"]
    images = [c["image"] for c in nxt["spec"]["template"]["spec"]["containers"]]
    assert NEW in images and old not in images
    # the user's own object is untouched
    assert load_sts(fixture) == sts


def test_pgdata_stays_on_the_claim_when_the_new_default_is_elsewhere() -> None:
    sts = load_sts("official-plain")  # mounts /var/lib/postgresql/data, no PGDATA
    nxt18 = lo.next_statefulset(sts, container="postgres", old_image="pgleap/postgis:13-3.1",
                                new_image="pgleap/postgis:18-3.x", new_major=18)  # fmt: skip
    env = {e["name"]: e.get("value") for e in nxt18["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGDATA"] == "/var/lib/postgresql/data/pgdata"
    nxt17 = lo.next_statefulset(sts, container="postgres", old_image="pgleap/postgis:13-3.1",
                                new_image=NEW, new_major=17)  # fmt: skip
    assert "PGDATA" not in {e["name"] for e in nxt17["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_schema_job_is_valid_restricted_and_keeps_the_secret_a_reference() -> None:
    sts = load_sts("official-plain")
    job = lo.schema_job(sts, container="postgres", image=NEW, superuser="gis", old_host="10.0.0.5",
                        new_host="10.0.0.6", databases=["gis", "postgres"])  # fmt: skip
    assert validate_strict(job)
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["PGPASSWORD"] == {
        "name": "PGPASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "gis-db", "key": "password"}},
    }
    assert env["PGLEAP_DATABASES"]["value"] == "gis\npostgres" and env["PGUSER"]["value"] == "gis"
    assert job["spec"]["template"]["metadata"]["labels"].get("app") is None
    assert pod["volumes"][0]["configMap"]["name"] == lo.config_map_name("gis")
    cm = lo.config_map("gis", "geo", "{}", "#!/bin/bash\n")
    assert validate_strict(cm)


def test_selector_patch_replaces_the_selector_exactly() -> None:
    patch = lo.selector_patch({"app": "gis", "tier": "db"}, {"app": "x", "pgleap.io/statefulset": "gis"})
    assert patch == {"spec": {"selector": {"tier": None, "app": "x", "pgleap.io/statefulset": "gis"}}}
    services = [
        {"metadata": {"name": "gis"}, "spec": {"selector": {"app": "gis"}}},
        {"metadata": {"name": "other"}, "spec": {"selector": {"app": "web"}}},
        {"metadata": {"name": "external"}, "spec": {}},
    ]
    assert lo.selecting_services(services, {"app": "gis", "x": "y"}) == {"gis": {"app": "gis"}}
    lines = lo.plan_lines("gis", {"gis": {"app": "gis"}})
    assert any("Service gis: selector {app=gis}" in line for line in lines)
    assert any("finalize deletes StatefulSet gis and its PVCs" in line for line in lines)


def _side(c) -> LogicalKube:
    return LogicalKube(
        c.kube, c.namespace, c.name, container="postgres", state=KubeState(c.kube, c.namespace, c.name)
    )


def test_a_target_pinned_by_digest_is_probed_for_its_major_before_anything_changes() -> None:
    """Probe, don't parse: a digest names no major; the image says it in a probe Pod (deleted after)."""
    from tests.kube.probes import PROBE_SCRIPTS, recorded_runner

    digest = "postgis/postgis@sha256:" + "b" * 64
    c = make_cluster("official-plain")
    c.fake.pod_runner = recorded_runner({digest: "pgleap/postgis:17-3.5"})
    side = LogicalKube(c.kube, c.namespace, c.name, container="postgres",
                       state=KubeState(c.kube, c.namespace, c.name), scripts=PROBE_SCRIPTS)  # fmt: skip
    assert side.target_major(digest) == 17
    assert [w.verb for w in c.fake.writes_for_test()] == ["create", "delete"]  # the probe Pod only
    assert side.target_major("pgleap/postgis:18-3.6") == 18  # a versioned tag: no Pod
    assert len(c.fake.writes_for_test()) == 2
    with pytest.raises(Refused, match="cannot tell the PostgreSQL major"):
        _side(c).target_major(digest)  # no probe script given: refused, as before


def test_state_lives_in_one_configmap_and_goes_with_clear() -> None:
    c = make_cluster("official-plain")
    state = KubeState(c.kube, c.namespace, c.name)
    assert state.phase is None and not state.exists
    state.save(strategy="logical", phase="preflight")
    state.save(phase="built")
    again = KubeState(c.kube, c.namespace, c.name)
    assert again.phase == "built" and again.data["strategy"] == "logical"
    cm = c.fake.get_for_test("ConfigMap", c.namespace, lo.config_map_name(c.name))
    assert lo.SCRIPT_KEY in cm["data"] and "PGLEAP_OLD_HOST" in cm["data"][lo.SCRIPT_KEY]
    again.clear()
    assert c.fake.get_for_test("ConfigMap", c.namespace, lo.config_map_name(c.name)) is None


def test_hand_back_restores_the_recorded_selector_and_finalize_refuses_while_a_service_selects_old() -> None:
    c = make_cluster("official-plain")
    side = _side(c)
    side.state.save(strategy="logical", phase="switched", logical_source=side.describe())
    assert side.describe()["services"] == {"gis": {"app": "gis"}}
    assert side.describe()["old_claims"] == ["data-gis-0"] and side.describe()["next_claims"] == [
        "data-gis-next-0"
    ]
    # finalize before the Services point at the new pods: refused, nothing deleted
    with pytest.raises(Refused, match="Service gis does not select the new pods") as refused:
        side.remove_old()
    assert f"`pgleap rollback sts gis -n {c.namespace}`" in refused.value.hint
    assert c.sts() is not None and c.fake.get_for_test("PersistentVolumeClaim", c.namespace, "data-gis-0")
    assert not [
        x for x in c.fake.writes_for_test() if x.resource in ("statefulsets", "persistentvolumeclaims")
    ]
    side._point(lambda _svc, _orig: lo.next_labels(c.name))  # the hand-over's patch, without SQL
    svc = c.fake.get_for_test("Service", c.namespace, "gis")
    assert svc["spec"]["selector"] == lo.next_labels(c.name)
    side._point(lambda _svc, original: original)  # the hand-back's
    assert c.fake.get_for_test("Service", c.namespace, "gis")["spec"]["selector"] == {"app": "gis"}
    side._point(lambda _svc, _orig: lo.next_labels(c.name))
    side.remove_old()
    assert c.sts() is None and c.fake.get_for_test("PersistentVolumeClaim", c.namespace, "data-gis-0") is None


def test_kubernetes_refusals_before_anything_changes() -> None:
    c = make_cluster("official-plain")
    c.kube.patch("StatefulSet", c.namespace, c.name, {"spec": {"replicas": 2}})
    c.kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "pgleap-gis-state", "namespace": "geo"},
        }
    )
    (message, hint), (other, other_hint) = _side(c).refusals()
    assert "2 replicas and pgleap cannot tell how pods gis-1..1 replicate" in message  # no replication env
    assert "POSTGRES_REPLICATION_USER" in hint
    assert "in-place pgleap run is recorded" in other and "finalize sts" in other_hint
    c = make_cluster("official-plain")
    c.kube.patch("StatefulSet", c.namespace, c.name, {"spec": {"ordinals": {"start": 1}}})
    assert [m for m, _h in _side(c).refusals()] == [
        "StatefulSet gis numbers its pods from 1 (spec.ordinals); --strategy logical on Kubernetes expects the "
        "primary at ordinal 0"
    ]


@pytest.mark.parametrize("verb", ["plan", "upgrade"])
def test_logical_flags_need_the_logical_strategy(verb) -> None:
    args = [verb, "sts", "gis", "-n", "geo", "--to", NEW, "--verify-after"]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 2 and "only with --strategy logical" in result.output
    if verb == "upgrade":  # the initial copy's timeout, too
        timeout = runner.invoke(
            build_app(), [verb, "sts", "gis", "-n", "geo", "--to", NEW, "--sync-timeout", "60"]
        )
        assert timeout.exit_code == 2 and "--sync-timeout: only with --strategy logical" in timeout.output
    bad = runner.invoke(build_app(), [verb, "sts", "gis", "--to", "x", "--strategy", "blue"])
    assert bad.exit_code == 2


def test_logical_upgrade_without_yes_or_terminal_is_refused_before_any_change() -> None:
    c = make_cluster("official-plain")
    args = ["upgrade", "sts", "gis", "-n", "geo", "--to", NEW, "--strategy", "logical"]
    result = runner.invoke(build_app(c), args)
    assert isinstance(result.exception, Refused) and result.exception.exit_code == 3, result.output
    assert "--yes" in result.exception.hint
    assert c.fake.writes_for_test() == []


def test_status_and_inplace_refusal_with_a_recorded_logical_run() -> None:
    c = make_cluster("official-plain")
    side = _side(c)
    side.state.save(strategy="logical", phase="built", target_image=NEW, logical_source=side.describe())
    out = runner.invoke(build_app(c), ["status", "sts", "gis", "-n", "geo", "-o", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["strategy"] == "logical" and data["phase"] == "built" and data["services"] == ["gis"]
    inplace = runner.invoke(build_app(c), ["upgrade", "sts", "gis", "-n", "geo", "--to", NEW, "--yes"])
    assert (
        isinstance(inplace.exception, Refused) and "logical upgrade is recorded" in inplace.exception.message
    )


def test_finalize_before_the_switch_is_refused_with_the_sts_commands_and_deletes_nothing() -> None:
    c = make_cluster("official-plain")
    side = _side(c)
    side.state.save(
        strategy="logical", phase="built", plan={}, target_image=NEW, logical_source=side.describe()
    )
    writes = len(c.fake.writes_for_test())
    result = runner.invoke(build_app(c), ["finalize", "sts", "gis", "-n", "geo", "--yes"])
    assert isinstance(result.exception, Refused), result.output
    assert "finalize needs a switched upgrade" in result.exception.message
    assert (
        "`pgleap rollback sts gis -n geo`" in result.exception.hint and "docker" not in result.exception.hint
    )
    # only the run's hold on its ConfigMap was taken and given back: no object of the user changed
    assert {x.resource for x in c.fake.writes_for_test()[writes:]} == {"configmaps"} and c.sts() is not None


def test_a_second_run_is_refused_while_another_live_run_holds_the_statefulset() -> None:
    from toolkit.kube.lease import HOLDER

    c = make_cluster("official-plain")
    side = _side(c)
    side.state.annotations = {HOLDER: json.dumps({"id": "x1", "operation": "logical upgrade", "host": "elsewhere",
                                                   "pid": 4242, "since": "2026-12-02T08:00:00+00:00"})}  # fmt: skip
    side.state.save(
        strategy="logical", phase="switched", plan={}, target_image=NEW, logical_source=side.describe()
    )
    writes = len(c.fake.writes_for_test())
    result = runner.invoke(build_app(c), ["rollback", "sts", "gis", "-n", "geo", "--yes"])
    assert isinstance(result.exception, Refused), result.output
    assert "another pgleap run works on this StatefulSet: logical upgrade by pid 4242 on elsewhere" in (
        result.exception.message
    )
    assert len(c.fake.writes_for_test()) == writes


def _password_file_sts() -> dict:
    """official-plain whose password comes as POSTGRES_PASSWORD_FILE from a mounted Secret."""
    sts = load_sts("official-plain")
    pod = sts["spec"]["template"]["spec"]
    main = pod["containers"][0]
    main["env"] = [e for e in main["env"] if e["name"] != "POSTGRES_PASSWORD"] + [
        {"name": "POSTGRES_PASSWORD_FILE", "value": "/run/secrets/db/password"}
    ]
    main["volumeMounts"].append({"name": "scripts", "mountPath": "/run/secrets/db", "readOnly": True})
    pod["volumes"] = [{"name": "scripts", "secret": {"secretName": "gis-db", "defaultMode": 0o400}}]
    return sts


def test_the_password_is_read_from_postgres_password_file_in_the_pod(tmp_path) -> None:
    """The pod's own shell runs pgleap's login command: with POSTGRES_PASSWORD_FILE (a Secret file)
    and no POSTGRES_PASSWORD, the password is the file's content; the command line never holds it."""
    import os
    import subprocess

    from toolkit.kube import pod_login

    secret = tmp_path / "password"
    secret.write_text("s3cret-from-file")
    c = make_cluster("official-plain")
    pod_env = {"PATH": os.environ["PATH"], "POSTGRES_USER": "gis", "POSTGRES_PASSWORD_FILE": str(secret)}
    calls = []

    def exec_(namespace: str, pod: str, container: str, command: list[str]) -> str:
        calls.append(command)
        return subprocess.run(command, env=pod_env, capture_output=True, text=True, check=True).stdout

    c.kube.exec = exec_  # type: ignore[method-assign]
    assert _side(c).credentials() == ("gis", "s3cret-from-file")
    assert "s3cret" not in json.dumps(calls)
    pod_env["POSTGRES_PASSWORD"] = "from-env"  # the variable wins, as in the official entrypoint
    assert _side(c).credentials() == ("gis", "from-env")
    del pod_env["POSTGRES_PASSWORD"], pod_env["POSTGRES_USER"]
    pod_env["POSTGRES_USER_FILE"] = str(tmp_path / "missing")  # unreadable: the default role, no crash
    assert _side(c).credentials() == ("postgres", "s3cret-from-file")
    assert pod_login.parse("") == ("postgres", None)


def test_schema_job_mounts_the_password_file_secret_read_only() -> None:
    sts = _password_file_sts()
    job = lo.schema_job(sts, container="postgres", image=NEW, superuser="gis", old_host="10.0.0.5",
                        new_host="10.0.0.6", databases=["gis"])  # fmt: skip
    assert validate_strict(job)
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert "PGPASSWORD" not in env
    assert env["PGLEAP_PASSWORD_FILE"]["value"] == "/run/secrets/db/password"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pgleap-password"]["secret"]["secretName"] == "gis-db"
    assert volumes["scripts"]["configMap"]["name"] == lo.config_map_name("gis")  # the user's name clashed
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["pgleap-password"] == {"name": "pgleap-password", "mountPath": "/run/secrets/db",
                                         "readOnly": True}  # fmt: skip
