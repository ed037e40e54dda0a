"""The one importer of the Docker SDK (`docker`): the client, its errors, its mount type.

Everything else in pgleap names these through this module, so the contract in pyproject.toml
(`lint-imports`) can keep the SDK at one place, as toolkit/kube/api.py does for `kubernetes`.
"""

from __future__ import annotations

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount

from toolkit.errors import EnvironmentProblem

DockerClient = docker.DockerClient

__all__ = ["APIError", "DockerClient", "DockerException", "ImageNotFound", "Mount", "NotFound", "client"]


def client() -> DockerClient:
    """A client that answered a ping, or an EnvironmentProblem that says what to start or fix."""
    try:
        c = docker.from_env(timeout=600)
        c.ping()
        return c
    except DockerException as exc:
        if "Permission denied" in str(exc) or "PermissionError" in str(exc):
            raise EnvironmentProblem(
                "permission denied on the Docker socket",
                "run pgleap as root or as a member of the docker group",
            ) from None
        raise EnvironmentProblem(
            f"the Docker engine does not answer ({exc.__class__.__name__})",
            "start dockerd, or set DOCKER_HOST; you may need root or the docker group",
        ) from None
