"""The superuser and password as the database pod sees them, read through pods/exec.

The official images take each of POSTGRES_USER / POSTGRES_PASSWORD either as the variable
or as a file named by POSTGRES_USER_FILE / POSTGRES_PASSWORD_FILE (a mounted Secret): the
pod's own shell reads whichever is set, so the value never appears in a manifest or a log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the pure part (password_file_mount) is used by the object renderers
    from toolkit.kube.api import Kube

# Prints "USER\nPASSWORD"; a *_FILE that is unreadable counts as unset (the caller's login then fails
# with PostgreSQL's own message, never with the file's content).
LOGIN_SH = (
    'u="${POSTGRES_USER:-}"; p="${POSTGRES_PASSWORD:-}"; '
    'if [ -z "$u" ] && [ -n "${POSTGRES_USER_FILE:-}" ]; then u="$(cat "$POSTGRES_USER_FILE" 2>/dev/null)"; fi; '
    'if [ -z "$p" ] && [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then p="$(cat "$POSTGRES_PASSWORD_FILE" 2>/dev/null)"; fi; '
    'printf "%s\\n%s" "${u:-postgres}" "$p"'
)
COMMAND = ["sh", "-c", LOGIN_SH]
VOLUME = "pgleap-password"


def parse(out: str | None) -> tuple[str, str | None]:
    user, _, password = (out or "").partition("\n")
    return user.strip() or "postgres", password or None


def pod_login(kube: Kube, namespace: str, pod: str, container: str) -> tuple[str, str | None]:
    """(superuser, password) of the pod's container; kept in memory by the caller, never printed."""
    return parse(kube.exec(namespace, pod, container, COMMAND))


def password_file_mount(pod_spec: dict[str, Any], container: dict[str, Any]) -> tuple[dict, dict, str] | None:
    """(volume, volumeMount, path) that hold the container's POSTGRES_PASSWORD_FILE, when the
    password comes from a mounted Secret (or projected) volume rather than an env entry: a Job
    that logs in as the superuser mounts the same volume read-only."""
    path = next((e.get("value") for e in container.get("env") or [] if e.get("name") == "POSTGRES_PASSWORD_FILE"),
                None)  # fmt: skip
    if not path:
        return None
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    for mount in sorted(container.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"])):
        base = mount["mountPath"].rstrip("/")
        volume = volumes.get(mount["name"])
        if (
            volume
            and (path == base or path.startswith(base + "/"))
            and ("secret" in volume or "projected" in volume)
        ):
            kept = {k: mount[k] for k in ("mountPath", "subPath") if k in mount}
            # its own name in the Job: the user's volume name could be one the Job already uses
            return {**volume, "name": VOLUME}, {**kept, "name": VOLUME, "readOnly": True}, path
    return None
