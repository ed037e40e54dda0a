"""`upgrade sts --strategy logical` 13 -> 17 of a primary StatefulSet `gis` (1 replica) with a separate
read StatefulSet `gis-read` (1 replica, POSTGRES_REPLICATION_MODE=slave, primary host gis-0), end to end
on Docker: the recording fake holds the objects, its pods and Jobs run as containers on one network
where each pod has its StatefulSet DNS name. pgleap is killed right after the switch is recorded
(gis-read-next not made yet), then inside the read re-seed (the Job done, gis-read-next not scaled);
`resume` finishes: gis-read-next-0's claim is seeded from gis-next-0 by the reseed Job, gis-read-next is
scaled to 1, it streams from gis-next-0 (pg_stat_replication on the new primary) and replays its
writes; Service gis-read selects gis-read-next's pods, Service gis-read-0 (pod-name gis-read-0) gis-read-next-0. Rollback gives gis-read its selector back and
removes gis-read-next with its claim; gis-read-0 never stopped. The old gis-read-0 runs as a plain
server (the harness starts no init container): pgleap never touches R, it needs its pod spec only."""

from __future__ import annotations

import copy
import json
import time

import pytest

from tests.kube.test_logical_pods_on_docker import NS, Crash, _cli, _server, crash_after
from tests.kube.test_logical_standbys_pods_on_docker import (
    POD_NAME,
    _selector,
    network_cluster,
    replicating_primary,
    resume_crashing_on_scale,
    services,
)
from tests.kube.test_pods_on_docker import _replicated_sts
from tests.kube.test_rbac import check_calls
from toolkit.kube import logical_objects as lo
from toolkit.kube.objects import replica_job_name

pytestmark = pytest.mark.docker


def _read_sts(primary: dict) -> dict:
    read = copy.deepcopy(primary)
    read["metadata"]["name"], read["metadata"]["labels"] = "gis-read", {"app": "gis-read"}
    read["spec"].update(replicas=1, serviceName="gis-read", selector={"matchLabels": {"app": "gis-read"}})
    read["spec"]["template"]["metadata"]["labels"] = {"app": "gis-read"}
    read["spec"]["template"]["spec"]["containers"][0]["env"] += [
        {"name": "POSTGRES_REPLICATION_MODE", "value": "slave"},
        {"name": "POSTGRES_PRIMARY_HOST", "value": f"gis-0.gis.{NS}.svc"},
    ]
    return read


@pytest.fixture
def cluster(docker_client, image_names):
    sts = _replicated_sts(image_names["13-3.1"])
    sts["spec"]["replicas"] = 1
    svcs = services(
        ("gis", {"app": "gis"}, {"clusterIP": "None"}),
        ("gis-read", {"app": "gis-read"}, {}),
        ("gis-read-0", {POD_NAME: "gis-read-0"}, {}),
    )
    with network_cluster(docker_client, [sts, _read_sts(sts), *svcs], ("gis", "gis-read")) as c:
        yield c


def test_logical_upgrade_seeds_read_next_from_next_and_rollback_restores_the_read_statefulset(
    cluster, image_names
) -> None:
    fake, kube, secret = cluster
    replicating_primary(fake, secret)
    planned = json.loads(
        _cli(kube, "plan", "sts", "gis", "--to", image_names["17-3.5"], "--strategy", "logical").stdout
    )
    assert planned["plan"]["standbys"] == ["gis-read-0"] and [
        r.get("check") for r in planned["plan"]["refusals"]
    ] == ["wal_level"]
    assert any(
        line.startswith("StatefulSet gis-read-next: the read StatefulSet") for line in planned["objects"]
    )
    upgrade = ("upgrade", "sts", "gis", "--to", image_names["17-3.5"], "--strategy", "logical",
               "--restart-for-wal-level", "--yes")  # fmt: skip
    with crash_after("switched"):
        result = _cli(kube, *upgrade)
    assert isinstance(result.exception, Crash), result.output
    assert fake.get_for_test("StatefulSet", NS, "gis-read-next") is None  # not made yet
    assert _selector(fake, "gis-read") == {"app": "gis-read"} and _selector(fake, "gis-read-0") == {
        POD_NAME: "gis-read-0"
    }

    # killed inside the re-seed: the Job done, not scaled
    resume_crashing_on_scale(fake, kube, "gis-read-next", 1)
    assert (
        fake.get_for_test("Job", NS, replica_job_name("gis-read-next-0", "reseed"))["status"]["succeeded"]
        == 1
    )
    assert fake.get_for_test("StatefulSet", NS, "gis-read-next")["spec"]["replicas"] == 0

    result = _cli(kube, "resume", "sts", "gis", "--yes")
    assert result.exit_code == 0, result.output
    (info,) = json.loads(result.stdout)["standbys"]
    print(f"read re-seed (pods on Docker): {info['seconds']:.1f} s, lag {info['lag_bytes']} bytes")
    rn = fake.get_for_test("StatefulSet", NS, "gis-read-next")
    assert rn["spec"]["replicas"] == 1
    env = {e["name"]: e.get("value") for e in rn["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POSTGRES_PRIMARY_HOST"] == f"gis-next-0.gis.{NS}.svc"
    new = _server(fake, "gis-next-0", secret["password"])
    streaming = new.query("postgres", "SELECT slot_name FROM pg_replication_slots s JOIN pg_stat_replication r "
                          "ON r.pid = s.active_pid WHERE r.state = 'streaming'")  # fmt: skip
    assert streaming == [("pgleap_gis_read_next_0",)]
    standby = _server(fake, "gis-read-next-0", secret["password"])
    new.query("gis", "INSERT INTO place (note) VALUES ('on new') RETURNING id")
    deadline = time.monotonic() + 30
    while standby.query("gis", "SELECT count(*) FROM place")[0][0] != 301:
        assert time.monotonic() < deadline, "the new read standby does not replay the new primary's writes"
        time.sleep(0.2)
    assert _selector(fake, "gis-read") == lo.next_labels("gis-read")
    assert _selector(fake, "gis-read-0") == {**lo.next_labels("gis-read"), POD_NAME: "gis-read-next-0"}
    status = json.loads(_cli(kube, "status", "sts", "gis").stdout)
    assert status["read"] == {"statefulset": "gis-read", "next": "gis-read-next", "services": ["gis-read", "gis-read-0"],
                              "reseeded": ["gis-read-0"]}  # fmt: skip

    result = _cli(kube, "rollback", "sts", "gis", "--yes")
    assert result.exit_code == 0, result.output
    assert _selector(fake, "gis") == {"app": "gis"} and _selector(fake, "gis-read") == {"app": "gis-read"}
    assert _selector(fake, "gis-read-0") == {POD_NAME: "gis-read-0"}
    for gone in ("gis-next", "gis-read-next"):
        assert fake.get_for_test("StatefulSet", NS, gone) is None
    for claim in ("data-gis-next-0", "data-gis-read-next-0"):
        assert fake.get_for_test("PersistentVolumeClaim", NS, claim) is None
    assert fake.get_for_test("StatefulSet", NS, "gis-read")["spec"]["replicas"] == 1
    assert {"gis-0", "gis-read-0"} <= set(fake.containers)  # the old pods never stopped
    check_calls(fake.calls)
