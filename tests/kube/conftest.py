"""Shared fixtures: the source StatefulSets in fixtures/ and a fake cluster seeded with them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.yaml"))


def load_docs(name: str) -> list[dict[str, Any]]:
    """All objects of one fixture file."""
    with open(FIXTURES / f"{name}.yaml") as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def load_sts(name: str) -> dict[str, Any]:
    """The StatefulSet of one fixture file (a fresh copy each time)."""
    return copy.deepcopy(next(d for d in load_docs(name) if d["kind"] == "StatefulSet"))


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(params=FIXTURE_NAMES)
def fixture_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def kubelet(docker_client):
    """Runs rendered pod specs on Docker (tests/kube/test_pods_on_docker.py); a fresh Secret."""
    import secrets

    from tests.kube.test_pods_on_docker import Kubelet

    k = Kubelet(docker_client, {"gis-db": {"password": secrets.token_urlsafe(12)}})
    yield k
    k.cleanup()
