"""The hand-over of a blue/green upgrade on Docker: NAME-pgleap-next, running with the user's settings,
takes the name NAME without a restart.

Without a published port NAME-pgleap-next is on the user's networks from its start (no aliases) and
the hand-over is renames, the old container stopped, the aliases moved (logical_names.py).

With published ports it is created with the user's ports too, but on pgleap's own internal network
NAME-pgleap-net only: an internal network gives no gateway, so Docker programs none of the
container's port bindings and the old container keeps them. The old container joins that network
while it serves (a `connect` disturbs neither its ports nor its other networks): the copy's
subscriptions reach it there. In the hand-over the old container stops (keeping its settings, for
rollback), the names move, and the new one joins the user's networks: Docker programs its port
bindings then, its interface up and the server listening, so no client's first SYN is lost to a
proxy that listens before the container's network is up (docs/logical.md, "Docker's port proxy").
After the pause both leave NAME-pgleap-net; rollback, finalize and discarding the copy remove it.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from typing import TYPE_CHECKING

from toolkit.docker import logical_names
from toolkit.docker.client import APIError, NotFound
from toolkit.docker.refs import LABEL
from toolkit.docker.runtime import DockerRuntime

if TYPE_CHECKING:
    from toolkit.docker.logical import LogicalDocker

logger = logging.getLogger(__name__)


def ensure_network(rt: DockerRuntime, net: str, old: str) -> None:
    """NAME-pgleap-net (internal, pgleap's label) with the old container on it."""
    try:
        network = rt.docker.networks.get(net)
    except NotFound:
        network = rt.docker.networks.create(net, internal=True, labels={LABEL: "logical-net"})
    if net not in _networks(rt, old):
        network.connect(old)


def user_networks(attrs: dict, skip: str) -> list[str]:
    """The user's networks, the one the container was created on first (Docker's inspect lists them
    by name): joined in that order, the first that has a gateway gets the port bindings."""
    listed = [n for n in attrs["NetworkSettings"].get("Networks") or {} if n != skip]
    mode = attrs["HostConfig"].get("NetworkMode") or "default"
    first = "bridge" if mode == "default" else mode
    return sorted(listed, key=lambda n: n != first)


def join_user_networks(rt: DockerRuntime, name: str, attrs: dict, skip: str) -> int:
    """`name` joins the user's networks it is not on, with the user's aliases and static addresses
    (IPAMConfig). Returns how many it joined."""
    aliases = logical_names.user_aliases(attrs)
    have = _networks(rt, name)
    joined = 0
    for net in user_networks(attrs, skip):
        if net in have:
            continue
        ipam = attrs["NetworkSettings"]["Networks"][net].get("IPAMConfig") or {}
        rt.docker.networks.get(net).connect(
            name, aliases=aliases.get(net) or None, ipv4_address=ipam.get("IPv4Address") or None,
            ipv6_address=ipam.get("IPv6Address") or None,
        )  # fmt: skip
        joined += 1
    return joined


def leave_user_networks(rt: DockerRuntime, name: str, attrs: dict, skip: str) -> None:
    """Rollback: the new container (stopped) leaves the user's networks, so that no later start of it
    (a restart policy at the daemon's start) competes with the old one for the ports or the aliases."""
    have = _networks(rt, name)
    for net in user_networks(attrs, skip):
        if net in have:
            rt.docker.networks.get(net).disconnect(name, force=True)


def leave_network(rt: DockerRuntime, net: str, names: list[str]) -> None:
    """The containers leave NAME-pgleap-net (a stopped one too: its settings change)."""
    for name in names:
        if rt.exists(name) and net in _networks(rt, name):
            with suppress(NotFound):
                rt.docker.networks.get(net).disconnect(name, force=True)


def remove_network(rt: DockerRuntime, net: str, names: list[str]) -> None:
    """NAME-pgleap-net goes, once pgleap's containers (running or not) have left it."""
    leave_network(rt, net, names)
    with suppress(NotFound):
        rt.docker.networks.get(net).remove()


def hand_over(side: LogicalDocker) -> None:
    """The running new container takes the name NAME, then the aliases (no published port) or the
    user's networks and with them the ports (published ports), once the old one has stopped (no
    restart). The old server (read-only since the pause) is told to stop first and finishes stopping
    while the names move. Each step checks what is done: an interrupted hand-over is finished."""
    rt, src = side.rt, side.source
    t0 = time.monotonic()
    if not rt.exists(side.old_name):
        if side._running(side.name):
            rt.interrupt(side.name)  # a fast shutdown
        rt.rename(side.name, side.old_name)
    if rt.exists(side.next_name):
        if not side._running(side.next_name):
            rt.start(side.next_name)
            rt.wait_accepting(side.next_name, src.superuser, src.password)
        logical_names.apply_settings(side.server(side.next_name, "new server"))
        rt.rename(side.next_name, side.name)
    t1 = time.monotonic()
    rt.stop_container(side.old_name)  # stopped, it holds no name, alias or port
    t2 = time.monotonic()
    if side.by_rename:
        moved = logical_names.set_aliases(rt, side.name, logical_names.user_aliases(src.attrs))
    else:
        moved = _join_when_free(rt, side.name, src.attrs, side.net_name)
    t3 = time.monotonic()
    if not side._running(side.name):
        rt.start(side.name)
    rt.wait_accepting(side.name, src.superuser, src.password, poll=0.02)
    logger.info("hand-over %s: renames %.3f s, old stopped %.3f s, networks %.3f s (%d), until accepting %.3f s",
                "by rename" if side.by_rename else "with the ports", t1 - t0, t2 - t1, t3 - t2, moved,
                time.monotonic() - t3)  # fmt: skip


def _join_when_free(rt: DockerRuntime, name: str, attrs: dict, skip: str, timeout: float = 5.0) -> int:
    """join_user_networks; a port the stopped container's proxy has not yet let go of is waited for."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return join_user_networks(rt, name, attrs, skip)
        except APIError as error:
            if "already allocated" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _networks(rt: DockerRuntime, name: str) -> dict:
    return rt.docker.containers.get(name).attrs["NetworkSettings"].get("Networks") or {}
