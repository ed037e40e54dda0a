"""`--strategy logical` for a container that publishes no port (the docker compose case): clients
reach it by name and by a network alias on a user-defined network; the hand-over is renames
without a restart of the new server. Name resolution is checked with one-shot `psql -h NAME` from a
throwaway container on the same network (no load test: nothing is published)."""

from __future__ import annotations

import json
import logging
import secrets
import uuid

import pytest
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.db.sql import Server
from toolkit.errors import PgleapError

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _cli(*args: str) -> dict:
    result = CliRunner().invoke(app, list(args))
    detail = f"{result.exception}" if isinstance(result.exception, PgleapError) else result.output
    assert result.exit_code == 0, detail
    return json.loads(result.stdout[result.stdout.index("{") :])


@pytest.fixture
def compose_like(runtime, image_names):
    """A container on a user network with the alias `db`, no published port, a restart policy and a
    label, as docker compose makes one; removed with everything pgleap made beside it."""
    from toolkit.db.seed import seed
    from toolkit.docker import images

    tag = uuid.uuid4().hex[:6]
    name = volume = f"pgleap-test-names-{tag}"
    network = runtime.docker.networks.create(f"pgleap-test-net-{tag}")
    second = runtime.docker.networks.create(f"pgleap-test-net2-{tag}")  # a second one, alias `db2`
    password = secrets.token_urlsafe(12)
    runtime.docker.volumes.create(volume)
    c = runtime.docker.containers.create(
        image_names["13-3.1"], name=name, detach=True, command=["postgres", "-c", "wal_level=logical"],
        environment={"POSTGRES_USER": "gis", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "gis"},
        volumes={volume: {"bind": images.spec_for("13-3.1").volume_dir, "mode": "rw"}},
        labels={"com.example.service": "db"}, restart_policy={"Name": "unless-stopped"},
        network=network.name, networking_config={network.name: runtime.docker.api.create_endpoint_config(
            aliases=["db"])},
    )  # fmt: skip
    second.connect(c, aliases=["db2"])
    c.start()
    runtime.wait_accepting(name, "gis", password, timeout=180)
    ip = runtime.docker.containers.get(name).attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
    seed(Server(ip, 5432, "gis", password), "gis", rows=500, polygons=50)
    yield name, network.name, password
    for suffix in ("", "-pgleap-next", "-pgleap-old", "-pgleap-blue", "-pgleap-green"):
        runtime.remove(name + suffix)
    for v in (volume, volume + "-pgleap-next"):
        runtime.remove_volume(v)
    network.remove()
    second.remove()
    for leftover in runtime.docker.networks.list(names=[f"{name}-pgleap-net"]):
        leftover.remove()


def _version_by_name(runtime, image: str, network: str, host: str, password: str) -> str:
    """`psql -h host` from a throwaway container on the network: what a client of the name reaches."""
    out = runtime.docker.containers.run(
        image, ["psql", "-h", host, "-U", "gis", "-d", "gis", "-tAc", "SHOW server_version_num"],
        environment={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}, network=network, remove=True,
        labels={"org.pgleap.role": "test-client"},
    )  # fmt: skip
    return out.decode().strip()[:2]


def test_logical_by_rename_without_ports(runtime, image_names, compose_like, caplog, capsys):
    """No published port: NAME-pgleap-next carries the user's settings from its start, the hand-over
    stops only the old container and moves the name and the alias; rollback moves them back."""
    caplog.set_level(logging.INFO, logger="toolkit.docker.logical_handover")
    name, network, password = compose_like
    client = image_names["17-3.5"]
    assert _version_by_name(runtime, client, network, "db", password) == "13"
    out = _cli("upgrade", "docker", "-c", name, "--to", image_names["17-3.5"], "--strategy", "logical",
               "--replica-identity-full", "-y", "-o", "json")  # fmt: skip
    handed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hand-over")]
    assert handed and handed[0].startswith("hand-over by rename"), handed
    new = runtime.docker.containers.get(name)
    assert new.attrs["Config"]["Image"] == image_names["17-3.5"]
    assert new.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert new.labels.get("com.example.service") == "db"
    assert not new.attrs["HostConfig"].get("PortBindings")
    assert not runtime.exists(name + "-pgleap-green")
    for host in ("db", name):  # the alias and the name reach the new server, once it is handed over
        assert _version_by_name(runtime, client, network, host, password) == "17", host
    assert _version_by_name(runtime, client, network.replace("-net-", "-net2-"), "db2", password) == "17"
    switch = next(p["seconds"] for p in out["phases"] if p["name"] == "switch")
    phases = ", ".join(f"{p['name']} {p['seconds']:.2f}" for p in out["phases"])
    with capsys.disabled():
        print(f"\n[logical by rename] pgleap's write pause {out['pause_seconds']:.2f} s, switch phase "
              f"{switch:.2f} s; {handed[0]}\n  phases: {phases}")  # fmt: skip

    back = _cli("rollback", "docker", "-c", name, "-y", "-o", "json")
    assert runtime.docker.containers.get(name).attrs["Config"]["Image"] == image_names["13-3.1"]
    for host in ("db", name):
        assert _version_by_name(runtime, client, network, host, password) == "13", host
    assert not runtime.exists(name + "-pgleap-next")
    assert back["pause_seconds"] < 60

    _cli("upgrade", "docker", "-c", name, "--to", image_names["17-3.5"], "--strategy", "logical",
         "--replica-identity-full", "-y", "-o", "json")  # fmt: skip
    _cli("finalize", "docker", "-c", name, "-y", "-o", "json")
    for suffix in ("-pgleap-next", "-pgleap-old", "-pgleap-blue", "-pgleap-green"):
        assert not runtime.exists(name + suffix), suffix
    assert _version_by_name(runtime, client, network, "db", password) == "17"


def test_the_copy_holds_no_alias_before_the_switch(runtime, image_names, compose_like):
    """NAME-pgleap-next runs with the user's settings from its start, but the alias `db` keeps resolving
    to the old server only until the hand-over (a second holder would take part of the lookups)."""
    from toolkit.docker.logical import for_container

    name, network, _password = compose_like
    side = for_container(runtime, name)
    side.start_next(image_names["17-3.5"])
    copy = runtime.docker.containers.get(side.next_name)
    assert copy.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert copy.labels.get("com.example.service") == "db"
    endpoints = copy.attrs["NetworkSettings"]["Networks"]
    second = network.replace("-net-", "-net2-")
    assert {"db", "db2"}.isdisjoint([*(endpoints[network].get("Aliases") or []),
                                     *(endpoints[second].get("Aliases") or [])]), endpoints  # fmt: skip
    old = runtime.docker.containers.get(name).attrs["NetworkSettings"]["Networks"]
    for net, alias in ((network, "db"), (second, "db2")):
        lookup = runtime.docker.containers.run(
            "debian:bookworm", ["getent", "ahostsv4", alias], network=net, remove=True,
            labels={"org.pgleap.role": "test-client"},
        )  # fmt: skip
        found = {line.split()[0] for line in lookup.decode().splitlines() if line.strip()}
        assert found == {old[net]["IPAddress"]}, (alias, found)


def test_with_published_ports_the_new_name_joins_the_users_networks_with_the_aliases(
    runtime, image_names, compose_like
):
    """With published ports NAME-pgleap-next is made with the user's settings on pgleap's internal
    network only (where Docker binds no port); at the hand-over it joins each of the user's networks
    with the user's aliases, the docker compose service name on the one it was created on too."""
    from toolkit.docker import logical_handover, logical_names
    from toolkit.docker.logical import for_container

    name, network, _password = compose_like
    image = image_names["17-3.5"]
    side = for_container(runtime, name)
    logical_handover.ensure_network(runtime, side.net_name, name)
    side = for_container(runtime, name)  # the old container is on pgleap's network too now
    assert side.net_name in side.source.attrs["NetworkSettings"]["Networks"]
    logical_names.create_as_user(
        runtime, side.source, image, side._layout(image), side.next_name, side.next_volume, side.net_name
    )
    copy = runtime.docker.containers.get(side.next_name)
    assert list(copy.attrs["NetworkSettings"]["Networks"]) == [side.net_name]
    assert copy.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    second = network.replace("-net-", "-net2-")
    assert logical_handover.user_networks(side.source.attrs, side.net_name) == [network, second]
    assert logical_handover.join_user_networks(runtime, side.next_name, side.source.attrs, side.net_name) == 2
    endpoints = runtime.docker.containers.get(side.next_name).attrs["NetworkSettings"]["Networks"]
    assert "db" in (endpoints[network].get("Aliases") or []), endpoints
    assert "db2" in (endpoints[second].get("Aliases") or []), endpoints
    assert logical_handover.join_user_networks(runtime, side.next_name, side.source.attrs, side.net_name) == 0
    side.remove_next()  # the copy, its volume and pgleap's network (the old container leaves it)
    assert not runtime.docker.networks.list(names=[side.net_name])
    assert side.net_name not in runtime.docker.containers.get(name).attrs["NetworkSettings"]["Networks"]
