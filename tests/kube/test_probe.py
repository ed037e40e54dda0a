"""Kubernetes probes the images (probe.sh as short Pods) and refuses with Docker's rules before any write."""

from __future__ import annotations

import pytest
import yaml

from tests.kube.harness import JOB_ENV, Cluster, make_cluster
from tests.kube.probes import PROBE_SCRIPTS, recorded_runner
from tests.kube.validation import validate_strict
from toolkit.errors import Refused

DIGEST = "registry.example.com:5000/postgis/postgis@sha256:" + "a" * 64
TARGET_DIGEST = "postgis/postgis@sha256:" + "b" * 64
CUSTOM_TAG = "registry.example.com:5000/postgis/postgis:2024.10"


def _cluster(image: str | None = None, **aliases: str) -> Cluster:
    c = make_cluster("official-plain")
    if image:
        sts = c.sts()
        sts["spec"]["template"]["spec"]["containers"][0]["image"] = image
        c.fake.seed_for_test(sts)
    c.fake.pod_runner = recorded_runner(aliases)
    return c


def non_probe_writes(c: Cluster) -> list:
    """Every mutating call except the probe Pods' own create and delete."""
    return [w for w in c.fake.writes_for_test() if w.resource != "pods"]


def probe_calls(c: Cluster) -> list[tuple[str, str]]:
    return [(w.verb, w.name) for w in c.fake.writes_for_test() if w.resource == "pods"]


def test_digest_pinned_statefulset_is_planned_from_probed_majors() -> None:
    """Neither reference has a version in it: the images say 13 and 17 (tag parsing refused both)."""
    c = _cluster(DIGEST, **{DIGEST: "pgleap/postgis:13-3.1", TARGET_DIGEST: "pgleap/postgis:17-3.5"})
    plan, _, _ = c.runtime.plan(c.namespace, c.name, TARGET_DIGEST, job_env=JOB_ENV, scripts=PROBE_SCRIPTS)
    assert (plan.core.old_major, plan.core.new_major) == (13, 17)
    assert plan.core.old_image == DIGEST and plan.core.new_image == TARGET_DIGEST
    assert plan.job_env["PGLEAP_OLD_MAJOR"] == "13" and plan.job_env["PGLEAP_NEW_MAJOR"] == "17"
    assert plan.core.glibc == ("2.31", "2.41") and plan.core.icu == ("67", "76")
    calls = probe_calls(c)
    assert [v for v, _ in calls] == ["create", "delete", "create", "delete"]
    assert non_probe_writes(c) == []
    assert c.fake.get_for_test("Pod", c.namespace, calls[0][1]) is None  # deleted afterwards


def test_custom_registry_tag_without_a_version_is_planned() -> None:
    c = _cluster(CUSTOM_TAG, **{CUSTOM_TAG: "pgleap/postgis:13-3.1"})
    plan, _, _ = c.runtime.plan(
        c.namespace, c.name, "pgleap/postgis:17-3.5", job_env=JOB_ENV, scripts=PROBE_SCRIPTS
    )
    assert (plan.core.old_major, plan.core.new_major) == (13, 17)


def test_probe_pod_is_restricted_volumeless_and_runs_as_the_statefulset_user() -> None:
    c = _cluster()
    c.runtime.plan(c.namespace, c.name, "pgleap/postgis:17-3.5", job_env=JOB_ENV, scripts=PROBE_SCRIPTS)
    created = [w.detail["body"] for w in c.fake.writes_for_test() if w.verb == "create"]
    assert [p["spec"]["containers"][0]["image"] for p in created] == [
        "pgleap/postgis:13-3.1",
        "pgleap/postgis:17-3.5",
    ]
    for pod in created:
        validate_strict(pod)
        spec = pod["spec"]
        assert "volumes" not in spec and "volumeMounts" not in spec["containers"][0]
        assert spec["automountServiceAccountToken"] is False
        assert spec["restartPolicy"] == "Never"
        sc = spec["containers"][0]["securityContext"]
        assert sc["runAsUser"] == 999 and sc["runAsNonRoot"] is True
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize(
    ("target", "mode", "message"),
    [
        ("pgleap/postgis:18-3.x", "link", r"PostgreSQL 13\.16 -> 18\.6|breaks pg_upgrade"),
        ("pgleap/postgis:15-3.3", "swap", "--mode swap needs PostgreSQL 18"),
    ],
)
def test_probed_refusals_come_before_any_write(target: str, mode: str, message: str) -> None:
    c = _cluster()
    if "18" in target:  # 17.12 → 18.6 is the known-bad pair: run it from the 17 image
        sts = c.sts()
        sts["spec"]["template"]["spec"]["containers"][0]["image"] = "pgleap/postgis:17-3.5"
        c.fake.seed_for_test(sts)
        message = r"PostgreSQL 17\.12 -> 18\.6 breaks pg_upgrade"
    with pytest.raises(Refused, match=message):
        c.runtime.upgrade(c.namespace, c.name, target, scripts=PROBE_SCRIPTS, job_env=JOB_ENV, mode=mode)
    assert non_probe_writes(c) == []
    assert [v for v, _ in probe_calls(c)] == ["create", "delete", "create", "delete"]
    assert c.sts()["spec"]["replicas"] == 1


def test_glibc_going_backwards_is_refused_from_the_probe() -> None:
    """A forced probe: the target reports an older glibc than the source (Docker's check_versions)."""
    c = make_cluster("official-plain")
    c.fake.pod_runner = recorded_runner(
        edit=lambda image, text: text.replace("glibc=2.41", "glibc=2.28") if "17" in image else text
    )
    with pytest.raises(Refused, match=r"glibc 2\.28 is older than the source image.s 2\.31"):
        c.runtime.upgrade(
            c.namespace, c.name, "pgleap/postgis:17-3.5", scripts=PROBE_SCRIPTS, job_env=JOB_ENV
        )
    assert non_probe_writes(c) == []


def test_an_image_that_cannot_be_probed_is_refused_and_its_pod_removed() -> None:
    c = _cluster()
    with pytest.raises(Refused, match=r"nowhere\.example/x:1 does not look like a PostgreSQL image") as exc:
        c.runtime.upgrade(c.namespace, c.name, "nowhere.example/x:1", scripts=PROBE_SCRIPTS, job_env=JOB_ENV)
    assert "the probe Pod ended Failed" in exc.value.message
    assert [v for v, _ in probe_calls(c)] == ["create", "delete", "create", "delete"]
    assert non_probe_writes(c) == []
    assert not [p for p in c.fake.objects if p[1] == "Pod" and "probe" in p[2]]


# -- offline render: no image to probe, the tag or --from-major/--to-major -------------------------


def _render(tmp_path, image: str, to: str, *extra: str):
    from tests.kube.conftest import load_docs
    from tests.kube.test_cli_kube import build_app, runner

    docs = load_docs("official-plain")
    next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ] = image
    path = tmp_path / "sts.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return runner.invoke(build_app(), ["render", "-f", str(path), "--to", to, *extra])


def test_render_of_a_digest_needs_the_majors_and_says_it_trusted_them(tmp_path) -> None:
    refused = _render(tmp_path, DIGEST, TARGET_DIGEST)
    assert isinstance(refused.exception, Refused)
    assert "cannot tell the PostgreSQL major" in refused.exception.message
    result = _render(tmp_path, DIGEST, TARGET_DIGEST, "--from-major", "13", "--to-major", "17")
    assert result.exit_code == 0, result.output
    assert "trusted --from-major 13" in result.stderr and "trusted --to-major 17" in result.stderr
    assert "name: PGLEAP_NEW_MAJOR\n          value: '17'" in result.stdout


def test_render_refuses_a_major_that_contradicts_the_tag(tmp_path) -> None:
    result = _render(tmp_path, "pgleap/postgis:13-3.1", "pgleap/postgis:17-3.5", "--to-major", "18")
    assert isinstance(result.exception, Refused)
    assert (
        result.exception.message
        == "--to-major 18 contradicts the tag of pgleap/postgis:17-3.5 (PostgreSQL 17)"
    )


def test_a_digest_pinned_statefulset_is_rehearsed() -> None:
    """`rehearse sts` plans from the probed images too: production and its clone are probed."""
    from tests.kube.test_rehearsal import Hooks, tick
    from toolkit.kube.rehearsal import KubeRehearsal

    c = _cluster(DIGEST, **{DIGEST: "pgleap/postgis:13-3.1", TARGET_DIGEST: "pgleap/postgis:17-3.5"})
    tick(c)
    result = KubeRehearsal(c.runtime).rehearse(
        c.namespace, c.name, TARGET_DIGEST, scripts=PROBE_SCRIPTS, hooks=Hooks().bundle(), job_env=JOB_ENV
    )
    assert result["verdict"] == "go", result
    probes = [w for w in c.fake.writes_for_test() if w.resource == "pods"]
    assert [w.verb for w in probes] == ["create", "delete"] * 4  # production's plan, then the clone's


def test_a_probe_pod_that_never_runs_is_refused_and_removed() -> None:
    """An image the nodes cannot pull (or a quota) leaves the Pod Pending: refused, Pod deleted."""
    c = make_cluster("official-plain")
    c.fake.pod_runner = lambda pod: ("Pending", "")
    with pytest.raises(
        Refused, match=r"probe Pod of image pgleap/postgis:13-3\.1 did not finish in 300s"
    ) as exc:
        c.runtime.upgrade(
            c.namespace, c.name, "pgleap/postgis:17-3.5", scripts=PROBE_SCRIPTS, job_env=JOB_ENV
        )
    assert "get events" in exc.value.hint and "nothing was changed" in exc.value.hint
    assert [v for v, _ in probe_calls(c)] == ["create", "delete"]
    assert non_probe_writes(c) == []
