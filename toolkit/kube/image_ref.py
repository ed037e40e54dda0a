"""An image reference as pgleap reads it: repository, tag, family, PostgreSQL major (pure).

Only the reference string: what the image really runs is probed (kube/probe.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.core.layout import ImageKind


@dataclass(frozen=True)
class ImageRef:
    """An image reference split into the parts pgleap reasons about."""

    ref: str
    repository: str  # without registry and tag, e.g. "postgis/postgis"
    tag: str | None
    kind: ImageKind
    major: int | None  # PostgreSQL major guessed from the tag

    @property
    def alpine(self) -> bool:
        return bool(self.tag and "alpine" in self.tag)


def parse_image(ref: str) -> ImageRef:
    """Split `registry/repo:tag@digest`; guess kind and PostgreSQL major from it."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # drop the registry host
    repository = "/".join(parts)
    return ImageRef(ref=ref, repository=repository, tag=tag, kind=image_kind(repository), major=_major(tag))


def image_kind(repository: str) -> ImageKind:
    """Which family of images: their PGDATA, uid and layout rules differ."""
    repo = repository.lower()
    if "bitnami" in repo:
        return "bitnami"
    if "kartoza" in repo:
        return "kartoza"
    last = repo.rsplit("/", 1)[-1]
    if last in ("postgres", "postgis") or repo.endswith("postgis/postgis"):
        return "official"
    return "unknown"


def _major(tag: str | None) -> int | None:
    """`13-3.1` → 13, `16.4.0-debian-12-r0` → 16, `17-3.5-alpine` → 17, `latest` → None."""
    if not tag:
        return None
    m = re.match(r"v?(\d+)(?:[.\-_]|$)", tag)
    if not m:
        return None
    major = int(m.group(1))
    return major if 10 <= major < 100 else None
