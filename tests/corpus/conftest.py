"""Fixtures for the regression-database corpus (tests/corpus, marker `corpus`).

The corpus image is built once per machine (cached by input hash, see corpus.py); each test
gets its own fresh copy of the cluster in its own volume, running on the stock old image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# 13 -> 17 always; 15 -> 18 too with PGLEAP_CORPUS_ALL=1 (a second ~6 min cold build).
PAIRS = [("13-3.1", "17-3.5")]
if os.environ.get("PGLEAP_CORPUS_ALL"):
    PAIRS.append(("15-3.3", "18-3.x"))


@pytest.fixture(scope="session")
def corpus_images(docker_client, image_names) -> dict[str, str]:
    """old tag -> corpus image, built or reused once per session."""
    from tests.corpus import corpus

    return {old: corpus.build(old).image for old, _ in PAIRS}


@pytest.fixture
def corpus_factory(runtime, corpus_images) -> Iterator:
    """start(tag, adjusted=False) -> OldDatabase: a fresh regression cluster, cleaned up after."""
    from tests.conftest import remove_old
    from tests.corpus import corpus
    from tests.corpus.adjust import adjust

    made = []

    def start(tag: str, *, adjusted: bool = False):
        db = corpus.start(runtime, tag)
        made.append(db)
        if adjusted:
            adjust(db)
        return db

    yield start
    for db in made:
        # a rehearsal that fails half-way must not leave its clone behind either
        clone = f"pgleap-rehearsal-{db.volume}"
        runtime.remove(f"{db.name}-pgleap-rehearsal")
        for volume in (clone, f"pgleap-old-binaries-{clone}"):
            runtime.remove_volume(volume)
        remove_old(db)


# The pods-on-Docker kubelet stand-in, for the Kubernetes variant of the refusal.
from tests.kube.conftest import kubelet  # noqa: E402, F401
