"""Build pgleap itself as an image (images/pgleap.Dockerfile), cached like the test images.

The image is built from a wheelhouse made on this machine (`pip wheel` of the checkout:
pgleap's wheel and every dependency's), so the build needs no package index, only
`debian:<release>` (made with debootstrap when missing, as for the test images). The
input hash covers the package's sources, the templates and the Dockerfile; an image
with the same hash is reused. It needs a source checkout (pyproject.toml): an installed
wheel has nothing to build a wheel from.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit import __version__ as VERSION
from toolkit.docker.images import HASH_LABEL, BuildResult, _docker, _label, ensure_base
from toolkit.errors import EnvironmentProblem

REPO = "pgleap/pgleap"
RELEASE = "bookworm"
_ROOT = Path(__file__).resolve().parents[2]  # toolkit/docker/ -> the checkout


def image_name() -> str:
    return f"{REPO}:{VERSION}"


def source_tree() -> Path | None:
    """The checkout this pgleap runs from, or None when it is an installed wheel."""
    return _ROOT if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "images").is_dir() else None


def input_hash(root: Path) -> str:
    digest = hashlib.sha256()
    files = [root / "pyproject.toml", root / "README.md", root / "images" / "pgleap.Dockerfile"]
    for folder in ("toolkit", "manifests", "images"):
        files += [p for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for path in sorted(set(files)):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(RELEASE.encode())
    return digest.hexdigest()[:16]


def build(*, force: bool = False, log=print) -> BuildResult:
    """Build (or reuse) pgleap/pgleap:<version>; returns what was done."""
    start = time.monotonic()
    root = source_tree()
    image = image_name()
    if root is None:
        return BuildResult("pgleap", image, "skipped (no source checkout)", 0.0)
    wanted = input_hash(root)
    if not force and _label(image) == wanted:
        return BuildResult("pgleap", image, "reused", time.monotonic() - start)
    base = ensure_base(RELEASE, log)
    log(f"building {image} from a wheelhouse of {root}")
    with tempfile.TemporaryDirectory(prefix="pgleap-image-") as tmp:
        context = Path(tmp)
        wheels = context / "wheels"
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), str(root)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise EnvironmentProblem(
                f"pip wheel of pgleap failed: {proc.stderr[-2000:]}",
                "check that PyPI (or your index) is reachable",
            )
        shutil.copy(root / "images" / "pgleap.Dockerfile", context / "Dockerfile")
        proc = _docker(
            "build", "--force-rm", "--label", f"{HASH_LABEL}={wanted}", f"--build-arg=BASE={base}",
            "-t", image, str(context), check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        raise EnvironmentProblem(
            f"docker build of {image} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        )
    return BuildResult("pgleap", image, "built", time.monotonic() - start)
