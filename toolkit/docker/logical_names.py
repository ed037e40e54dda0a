"""The hand-over without a restart, for a user container that publishes no port.

Clients of such a container reach it by name (and by network aliases, as docker compose gives the
service name) on user-defined networks. Then NAME-pgleap-next is created from its start with the
user's configuration (env, labels, restart policy, networks, mounts, command), without the aliases
(a second holder of an alias would get half the clients' lookups), and the hand-over is: the old
container stops, the names move (NAME -> NAME-pgleap-old, NAME-pgleap-next -> NAME) and the aliases
follow. Docker's embedded DNS answers for a running container's new name as soon as it is renamed,
and a stopped container is answered for by no name. With published ports NAME-pgleap-next has the
user's ports too but starts on pgleap's internal network only; it gains the user's networks, and
with them the ports, in the hand-over (logical_handover.py).
"""

from __future__ import annotations

import copy
import logging
import time
from types import SimpleNamespace

from toolkit.db.sql import Server
from toolkit.docker.refs import SourceContainer
from toolkit.docker.runtime import DockerRuntime

logger = logging.getLogger(__name__)

# initialisation scripts run on an empty data directory: the copy's schema comes from the old server
INITDB_DIR = "/docker-entrypoint-initdb.d"


def publishes_ports(attrs: dict) -> bool:
    """Whether the container publishes a port on the host (then it is reached through the host)."""
    return any(bindings for bindings in (attrs["HostConfig"].get("PortBindings") or {}).values())


def user_aliases(attrs: dict) -> dict[str, list[str]]:
    """network -> the aliases the user gave (not the container's own name or id, which Docker adds)."""
    own = {attrs["Name"].lstrip("/")}
    found = {}
    for net, endpoint in (attrs["NetworkSettings"].get("Networks") or {}).items():
        aliases = [a for a in endpoint.get("Aliases") or [] if a not in own and not attrs["Id"].startswith(a)]
        if aliases:
            found[net] = aliases
    return found


def create_as_user(
    rt: DockerRuntime, source: SourceContainer, image: str, layout, name: str, volume: str,
    network: str | None = None,
) -> None:  # fmt: skip
    """The user's container on the new image and the new volume, created (not started) as `name`:
    no aliases (they move at the hand-over) and no initialisation scripts (the schema is copied).
    With `network` (published ports): on that network only, its ports those the clients use now."""
    attrs = copy.deepcopy(source.attrs)
    attrs["Mounts"] = [m for m in attrs.get("Mounts", []) if m["Destination"] != INITDB_DIR]
    for endpoint in (attrs["NetworkSettings"].get("Networks") or {}).values():
        endpoint["Aliases"] = None
    if network:
        pin_ports(attrs)
        attrs["HostConfig"]["NetworkMode"] = network
        attrs["NetworkSettings"]["Networks"] = {network: {}}
    for m in attrs["Mounts"]:
        if m["Destination"] == source.mount:
            m["Name"] = volume
    src = SourceContainer(**{**source.__dict__, "attrs": attrs})
    # recreate() reads only these two fields of an UpgradePlan
    rt.recreate(src, SimpleNamespace(target_image=image, layout=layout), name)  # type: ignore[arg-type]


def pin_ports(attrs: dict) -> None:
    """A port published as "any free port" keeps the one the clients know now (live in `attrs`)."""
    live = attrs["NetworkSettings"].get("Ports") or {}
    for port, bindings in (attrs["HostConfig"].get("PortBindings") or {}).items():
        for i, b in enumerate(bindings or []):
            actual = (live.get(port) or [])[i : i + 1]
            if not b.get("HostPort") and actual:
                b["HostPort"] = actual[0].get("HostPort")


def set_aliases(rt: DockerRuntime, name: str, wanted: dict[str, list[str]]) -> int:
    """The container's aliases on each network are `wanted` (none where not named): an endpoint that
    differs is reconnected (Docker cannot change a connected endpoint's aliases). Returns how many."""
    container = rt.docker.containers.get(name)
    endpoints = container.attrs["NetworkSettings"].get("Networks") or {}
    own = {name, container.id[:12]}
    moved = 0
    for net, endpoint in endpoints.items():
        if net in ("bridge", "host", "none"):
            continue
        have = {a for a in endpoint.get("Aliases") or [] if a not in own and not container.id.startswith(a)}
        if have == set(wanted.get(net, [])):
            continue
        network = rt.docker.networks.get(net)
        network.disconnect(container)
        network.connect(container, aliases=wanted.get(net) or None)
        moved += 1
    return moved


def apply_settings(server: Server, timeout: float = 5.0) -> None:
    """The hand-over does not restart the new server: what was set for its next start
    (`--verify-after`: default_transaction_read_only) is reloaded, and waited for in a new session."""
    server.query("postgres", "SELECT pg_reload_conf()")
    wanted = "SELECT setting FROM pg_file_settings WHERE name = 'default_transaction_read_only' ORDER BY seqno DESC"
    deadline = time.monotonic() + timeout
    while True:
        rows = server.query("postgres", wanted)
        now = server.query("postgres", "SHOW default_transaction_read_only")[0][0]
        if not rows or rows[0][0] == now or time.monotonic() > deadline:
            return
        time.sleep(0.01)
