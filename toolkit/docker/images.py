"""Build (or reuse) the test images from `images/`, offline, from Debian's packages.

No registry is needed: a missing `debian:<release>` base is made with
debootstrap + `docker import`. Images carry a label with the hash of their
inputs, so an unchanged image is never rebuilt. `PGLEAP_IMAGES` maps tags to
other images (e.g. real `postgis/postgis` tags); those are used as they are.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import EnvironmentProblem, PgleapError
from toolkit.resources import data_dir

logger = logging.getLogger(__name__)

DEFAULT_REPO = "pgleap/postgis"
HASH_LABEL = "org.pgleap.input-hash"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
_BUILD_INPUTS = ("Dockerfile", "docker-entrypoint.sh", "initdb-postgis.sh")


@dataclass(frozen=True)
class ImageSpec:
    """One row of images/matrix.toml."""

    tag: str
    release: str
    pg: int
    postgis: str
    eol: bool

    @property
    def pgdata(self) -> str:
        """Where the official image of this major keeps PGDATA."""
        return "/var/lib/postgresql/data" if self.pg < 18 else f"/var/lib/postgresql/{self.pg}/docker"

    @property
    def volume_dir(self) -> str:
        return "/var/lib/postgresql/data" if self.pg < 18 else "/var/lib/postgresql"


def load_matrix(path: Path | None = None) -> list[ImageSpec]:
    """The image matrix, oldest major first."""
    path = path or data_dir("images") / "matrix.toml"
    rows = tomllib.loads(path.read_text())["image"]
    specs = [ImageSpec(**row) for row in rows]
    return sorted(specs, key=lambda s: s.pg)


def spec_for(tag: str) -> ImageSpec:
    for spec in load_matrix():
        if spec.tag == tag:
            return spec
    known = ", ".join(s.tag for s in load_matrix())
    raise PgleapError(f"unknown image tag {tag!r}", f"known tags: {known}")


def overrides() -> dict[str, str]:
    """`PGLEAP_IMAGES="13-3.1=postgis/postgis:13-3.1,…"`: tag → image used instead of building."""
    raw = os.environ.get("PGLEAP_IMAGES", "").strip()
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        tag, sep, image = item.partition("=")
        if not sep or not image:
            raise PgleapError(
                f"PGLEAP_IMAGES entry {item!r} is not TAG=IMAGE",
                "write it like 13-3.1=postgis/postgis:13-3.1",
            )
        mapping[tag.strip()] = image.strip()
    return mapping


def image_name(tag: str) -> str:
    """The image to run for a matrix tag (override, or the locally built one)."""
    return overrides().get(tag) or f"{DEFAULT_REPO}:{tag}"


def input_hash(spec: ImageSpec, folder: Path | None = None) -> str:
    """Hash of everything that goes into the image: files, release and build args."""
    folder = folder or data_dir("images")
    digest = hashlib.sha256()
    for name in _BUILD_INPUTS:
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    digest.update(repr(sorted(_build_args(spec).items())).encode())
    return digest.hexdigest()[:16]


def _build_args(spec: ImageSpec) -> dict[str, str]:
    return {
        "RELEASE": spec.release,
        "PG_MAJOR": str(spec.pg),
        "POSTGIS_MAJOR": spec.postgis.split(".")[0],
        "PGDATA_DEFAULT": spec.pgdata,
        "VOLUME_DIR": spec.volume_dir,
    }


def _docker(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["docker", *args], check=check, text=True, capture_output=True, **kwargs)
    except FileNotFoundError as exc:
        raise EnvironmentProblem("the docker command is not installed", "apt-get install docker.io") from exc


def _label(image: str) -> str | None:
    proc = _docker(
        "image", "inspect", "--format", f'{{{{index .Config.Labels "{HASH_LABEL}"}}}}', image, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (other repositories such as NodeSource are skipped)."""
    texts = []
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]:
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    for text in texts:
        for url in re.findall(r"(?:^URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            if url.rstrip("/").endswith("/debian"):
                return url.rstrip("/")
    return FALLBACK_MIRROR


def ensure_base(release: str, log: Callable[[str], None] = logger.info) -> str:
    """`debian:<release>`, created with debootstrap + docker import when not present."""
    base = f"debian:{release}"
    if _docker("image", "inspect", base, check=False).returncode == 0:
        return base
    if not shutil.which("debootstrap"):
        raise EnvironmentProblem(
            f"{base} is not present and debootstrap is not installed",
            "apt-get install debootstrap (or docker pull debian:" + release + ")",
        )
    mirror = apt_mirror()
    log(f"creating {base} with debootstrap from {mirror}")
    with tempfile.TemporaryDirectory(prefix=f"pgleap-{release}-") as tmp:
        root = Path(tmp) / "rootfs"
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", release, str(root), mirror],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise EnvironmentProblem(
                f"debootstrap of {release} failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}",
                "check that the Debian mirror is reachable",
            )
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            ["docker", "import", "-", base], stdin=tar.stdout, capture_output=True, text=True
        )
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise EnvironmentProblem(f"docker import of {base} failed: {imp.stderr}")
    return base


@dataclass
class BuildResult:
    tag: str
    image: str
    action: str  # "built", "reused", "external"
    seconds: float


def build_one(
    spec: ImageSpec, *, force: bool = False, log: Callable[[str], None] = logger.info
) -> BuildResult:
    """Build one image unless an image with the same input hash already exists."""
    start = time.monotonic()
    if spec.tag in overrides():
        return BuildResult(spec.tag, image_name(spec.tag), "external", 0.0)
    image = image_name(spec.tag)
    wanted = input_hash(spec)
    if not force and _label(image) == wanted:
        return BuildResult(spec.tag, image, "reused", time.monotonic() - start)
    ensure_base(spec.release, log)
    log(f"building {image} (Debian {spec.release}, PostgreSQL {spec.pg})")
    args = [f"--build-arg={k}={v}" for k, v in _build_args(spec).items()]
    proc = _docker(
        "build",
        "--force-rm",
        "--label",
        f"{HASH_LABEL}={wanted}",
        *args,
        "-t",
        image,
        str(data_dir("images")),
        check=False,
    )
    if proc.returncode != 0:
        raise EnvironmentProblem(
            f"docker build of {image} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        )
    return BuildResult(spec.tag, image, "built", time.monotonic() - start)


def build_all(
    tags: list[str] | None = None,
    *,
    force: bool = False,
    jobs: int = 2,
    log: Callable[[str], None] = logger.info,
) -> list[BuildResult]:
    """Build or reuse every image of the matrix (or the given tags), `jobs` at a time."""
    specs = [s for s in load_matrix() if not tags or s.tag in tags]
    if tags and len(specs) != len(set(tags)):
        known = ", ".join(s.tag for s in load_matrix())
        raise PgleapError(f"unknown image tag in {tags}", f"known tags: {known}")
    if _docker("info", check=False).returncode != 0:
        raise EnvironmentProblem("the Docker engine does not answer", "start dockerd (see README)")
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda s: build_one(s, force=force, log=log), specs))
