"""PostgreSQL's regression database as a test corpus (dev/CI only, not in the wheel).

`build(tag)` makes `pgleap/regress:<major>` FROM the stock test image (see Dockerfile and
build-regress.sh), labelled with a hash of its inputs and of the base image, so an
unchanged corpus is never rebuilt (like toolkit/docker/images.py). `start(...)` restores the
kept cluster into a fresh volume and runs it on the STOCK image, with the test libraries
copied into that container's pkglibdir before it starts: the running container can load
regress.so, the image pgleap probes cannot (issue 13, run 1).

    python -m tests.corpus.corpus build 13-3.1     # build or reuse, prints seconds
    python -m tests.corpus.corpus start 13-3.1 [--adjusted]   # a container to play with
"""

from __future__ import annotations

import hashlib
import io
import secrets
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from toolkit.docker import images

HERE = Path(__file__).parent
REPO = "pgleap/regress"
_INPUTS = ("Dockerfile", "build-regress.sh")
LIBS = ("regress.so", "autoinc.so", "refint.so")


@dataclass
class Built:
    image: str
    action: str  # "built" or "reused"
    seconds: float


def corpus_image(tag: str) -> str:
    return f"{REPO}:{images.spec_for(tag).pg}"


def input_hash(tag: str) -> str:
    """Hash of the build files and of the base image's id: a rebuilt base rebuilds the corpus."""
    digest = hashlib.sha256()
    for name in _INPUTS:
        digest.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    base = images.image_name(tag)
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", base], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"base image {base} is missing: build the test images first ({proc.stderr})")
    digest.update(proc.stdout.strip().encode())
    return digest.hexdigest()[:16]


def _label(image: str) -> str | None:
    fmt = f'{{{{index .Config.Labels "{images.HASH_LABEL}"}}}}'
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", fmt, image], capture_output=True, text=True
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def build(tag: str, *, force: bool = False) -> Built:
    """Build `pgleap/regress:<major>` unless one with the same input hash exists (~5 min cold)."""
    start = time.monotonic()
    image, wanted = corpus_image(tag), input_hash(tag)
    if not force and _label(image) == wanted:
        return Built(image, "reused", time.monotonic() - start)
    proc = subprocess.run(
        ["docker", "build", "--force-rm", "--label", f"{images.HASH_LABEL}={wanted}",
         "--build-arg", f"BASE={images.image_name(tag)}", "-t", image, str(HERE)],
        capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"docker build of {image} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return Built(image, "built", time.monotonic() - start)


def regress_summary(docker_client, tag: str) -> str:
    """pg_regress's summary as recorded at build time ("N of 203 tests failed")."""
    out = docker_client.containers.run(corpus_image(tag), ["cat", "/corpus/regress-summary.txt"], remove=True)
    return out.decode()


def _libs_tar(docker_client, tag: str) -> bytes:
    """The three libraries as a flat tar (put_archive extracts it into the pkglibdir)."""
    container = docker_client.containers.create(corpus_image(tag), ["true"])
    try:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as out:
            for lib in LIBS:
                stream, _ = container.get_archive(f"/corpus/lib/{lib}")
                with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as src:
                    member = src.getmember(lib)
                    member.uid = member.gid = 0
                    out.addfile(member, src.extractfile(member))
        return buf.getvalue()
    finally:
        container.remove(force=True)


def restore_volume(docker_client, tag: str, volume: str) -> None:
    """A fresh volume holding the regression cluster as pg_regress left it (cleanly stopped)."""
    spec = images.spec_for(tag)
    docker_client.volumes.create(volume)
    docker_client.containers.run(
        corpus_image(tag), ["tar", "-xpf", "/corpus/pgdata.tar", "-C", spec.pgdata],
        volumes={volume: {"bind": spec.volume_dir, "mode": "rw"}}, user="root", remove=True,
    )  # fmt: skip


def start(rt, tag: str, *, name: str | None = None, password: str | None = None):
    """The corpus on the stock image, test libraries in the running container's pkglibdir only."""
    from tests.conftest import OldDatabase

    spec = images.spec_for(tag)
    stock = images.image_name(tag)
    name = name or f"pgleap-corpus-{spec.pg}-{uuid.uuid4().hex[:6]}"
    password = password or secrets.token_urlsafe(12)
    client = rt.docker
    restore_volume(client, tag, name)
    container = client.containers.create(
        stock, name=name, detach=True,
        environment={"POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": password},
        volumes={name: {"bind": spec.volume_dir, "mode": "rw"}},
    )  # fmt: skip
    container.put_archive(f"/usr/lib/postgresql/{spec.pg}/lib", _libs_tar(client, tag))
    container.start()
    _exec_psql(container, "postgres", f"ALTER ROLE postgres PASSWORD '{password}'", wait=True)
    rt.wait_accepting(name, "postgres", password, timeout=120)
    return OldDatabase(rt, tag, stock, name, name, "postgres", password)


def _exec_psql(container, db: str, sql: str, *, wait: bool = False) -> str:
    """psql over the container's socket (local trust), as postgres; retries while it starts."""
    deadline = time.monotonic() + (120 if wait else 0)
    while True:
        code, out = container.exec_run(
            ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql], user="postgres"
        )
        if code == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    if code != 0:
        raise RuntimeError(f"psql in {container.name} failed: {out.decode()[-2000:]}")
    return out.decode()


def _main(argv: list[str]) -> int:
    import docker

    from toolkit.docker.runtime import DockerRuntime

    if len(argv) < 2 or argv[0] not in {"build", "start"}:
        print(__doc__)
        return 2
    tag = argv[1]
    if argv[0] == "build":
        result = build(tag, force="--force" in argv)
        print(f"{result.image}: {result.action} in {result.seconds:.0f} s")
        summary = regress_summary(docker.from_env(), tag).splitlines()
        print(
            "pg_regress:",
            "; ".join(
                line.strip()
                for line in summary
                if "tests failed" in line or "tests passed" in line or line.startswith("pg_regress exit")
            ),
        )
        return 0
    db = start(DockerRuntime(docker.from_env()), tag)
    if "--adjusted" in argv:
        from tests.corpus.adjust import adjust

        adjust(db)
    print(f"container {db.name} (volume {db.volume}), user postgres; "
          f"password: docker exec {db.name} printenv POSTGRES_PASSWORD")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
