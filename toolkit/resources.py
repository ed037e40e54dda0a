"""Locate the files pgleap ships next to its code (images/, manifests/, container scripts)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """`images` or `manifests`: the repo folder in a checkout, the bundled copy in a wheel."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pgleap data folder {name!r} is missing from the installation")


def container_dir() -> Path:
    """The folder of the shell scripts that run inside the old or new image."""
    return _PACKAGE / "container"


def container_script(name: str) -> Path:
    """A shell script that runs inside the old or new image."""
    return container_dir() / name
