"""Bad input gets one clear message, a non-zero exit code, and leaves the volume byte-identical.

Each case runs the real CLI (`python -m toolkit`) against a real volume and
compares a hash of every path, mode, owner and byte in the volume before and after.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.ci import skip_unless_ci
from tests.conftest import volume_hash
from toolkit.errors import EXIT_ENVIRONMENT, EXIT_REFUSED

pytestmark = pytest.mark.docker


def pgleap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def stopped_15(request, docker_client, image_names):
    """A seeded 15 cluster, cleanly stopped, container removed: a bare volume."""
    from tests.conftest import remove_old, start_old
    from toolkit.docker.runtime import DockerRuntime

    rt = DockerRuntime(docker_client)
    db = start_old(rt, image_names["15-3.3"], "15-3.3", rows=500)
    rt.stop_container(db.name)
    rt.remove(db.name)
    yield db
    remove_old(db)


CASES = [
    ("downgrade", ["--to", "{v13}"], "downgrades are not possible"),
    ("same-major", ["--to", "{v15}"], "nothing to upgrade"),
    ("swap-before-18", ["--to", "{v17}", "--mode", "swap"], "swap needs PostgreSQL 18"),
    # an unknown --mode is a usage error now (exit 2, before Docker is asked): tests/test_cli_unit.py
    ("wrong-pgdata", ["--to", "{v17}", "--pgdata", "/var/lib/postgresql/data/nothere"], "does not exist"),
    (
        "wrong-from-image",
        ["--to", "{v17}", "--from", "{v13}"],
        "holds PostgreSQL 15 but the source image runs 13",
    ),
    ("not-postgres", ["--to", "debian:bookworm"], "does not look like a PostgreSQL image"),
]


@pytest.mark.parametrize(("args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusal_leaves_volume_identical(runtime, image_names, stopped_15, args, message):
    tags = {
        "v13": image_names["13-3.1"],
        "v15": image_names["15-3.3"],
        "v17": image_names["17-3.5"],
        "v18": image_names["18-3.x"],
    }
    args = [a.format(**tags) for a in args]
    if "--from" not in args:
        args += ["--from", image_names["15-3.3"]]
    before = volume_hash(runtime, stopped_15.volume)
    proc = pgleap("upgrade", "docker", "--yes", "--volume", stopped_15.volume, *args)
    assert proc.returncode == EXIT_REFUSED, proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert "Traceback" not in proc.stderr
    assert volume_hash(runtime, stopped_15.volume) == before


def test_unknown_volume_and_container(image_names):
    proc = pgleap(
        "upgrade",
        "docker",
        "--yes",
        "--volume",
        f"nope-{uuid.uuid4().hex[:6]}",
        "--from",
        image_names["15-3.3"],
        "--to",
        image_names["17-3.5"],
    )
    assert proc.returncode == EXIT_REFUSED and "no Docker volume named" in proc.stderr
    proc = pgleap(
        "upgrade",
        "docker",
        "--yes",
        "--container",
        f"nope-{uuid.uuid4().hex[:6]}",
        "--to",
        image_names["17-3.5"],
    )
    assert proc.returncode == EXIT_REFUSED and "no container named" in proc.stderr


def test_missing_image_is_an_environment_error(image_names, stopped_15):
    proc = pgleap(
        "upgrade",
        "docker",
        "--yes",
        "--volume",
        stopped_15.volume,
        "--from",
        image_names["15-3.3"],
        "--to",
        "pgleap/does-not-exist:1",
    )
    assert proc.returncode == EXIT_ENVIRONMENT
    assert "not present and cannot be pulled" in " ".join(proc.stderr.split())


def test_empty_volume_is_not_a_cluster(runtime, image_names):
    name = f"pgleap-test-empty-{uuid.uuid4().hex[:6]}"
    runtime.docker.volumes.create(name)
    try:
        before = volume_hash(runtime, name)
        proc = pgleap(
            "upgrade",
            "docker",
            "--yes",
            "--volume",
            name,
            "--from",
            image_names["15-3.3"],
            "--to",
            image_names["17-3.5"],
        )
        assert proc.returncode == EXIT_REFUSED
        assert "not a PostgreSQL cluster" in " ".join(proc.stderr.split())
        assert volume_hash(runtime, name) == before
    finally:
        runtime.remove_volume(name)


def test_crashed_cluster_is_refused(runtime, image_names, old_db_factory):
    db = old_db_factory("15-3.3", seed_data=False)
    runtime.docker.containers.get(db.name).kill(signal="SIGKILL")
    runtime.docker.containers.get(db.name).wait()
    before = volume_hash(runtime, db.volume)
    proc = pgleap(
        "upgrade",
        "docker",
        "--yes",
        "--volume",
        db.volume,
        "--from",
        image_names["15-3.3"],
        "--to",
        image_names["17-3.5"],
    )
    assert proc.returncode == EXIT_REFUSED
    text = " ".join(proc.stderr.split())
    assert "not shut down cleanly" in text and "stop it cleanly" in text
    assert volume_hash(runtime, db.volume) == before


@pytest.fixture(scope="module")
def no_postgis_image(docker_client, image_names):
    """The 17 image with PostGIS removed: a target that cannot take a PostGIS cluster."""
    import io

    dockerfile = (
        f"FROM {image_names['17-3.5']}\n"
        "RUN rm -f /usr/share/postgresql/17/extension/postgis* /usr/lib/postgresql/17/lib/postgis*\n"
    )
    image, _ = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag="pgleap-test/no-postgis:17", rm=True
    )
    return "pgleap-test/no-postgis:17"


def test_target_without_postgis_is_refused_while_the_database_keeps_running(
    runtime, old_db_factory, no_postgis_image
):
    db = old_db_factory("15-3.3", rows=200)
    before = db.fingerprint()
    proc = pgleap("upgrade", "docker", "--yes", "--container", db.name, "--to", no_postgis_image)
    assert proc.returncode == EXIT_REFUSED
    text = " ".join(proc.stderr.split())
    assert "lacks extensions the cluster uses: postgis" in text
    container = runtime.docker.containers.get(db.name)
    assert container.status == "running"
    from toolkit.db.verify import compare

    assert compare(before, db.fingerprint()).identical


def test_dry_run_stages_nothing_and_prints_json(runtime, image_names, stopped_15):
    """A bare volume has no server to ask, so the dry run starts the old cluster read-only once;
    it must stage nothing and leave the cluster cleanly shut down."""
    import json

    proc = pgleap(
        "upgrade", "docker", "--yes", "--volume", stopped_15.volume, "--from", image_names["15-3.3"],
        "--to", image_names["17-3.5"], "--dry-run", "-o", "json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "dry-run"
    assert result["plan"]["old_major"] == 15 and result["plan"]["new_major"] == 17
    assert result["plan"]["superuser"] == stopped_15.superuser  # read from the catalog, no password known
    listing = runtime.docker.containers.run(
        "debian:bookworm",
        ["ls", "-A", "/v"],
        volumes={stopped_15.volume: {"bind": "/v", "mode": "ro"}},
        remove=True,
    ).decode()
    assert ".pgleap" not in listing.split()
    from toolkit.docker.refs import VolumeRef

    data = runtime.probe_data(image_names["15-3.3"], VolumeRef("volume", stopped_15.volume), "")
    assert data.cleanly_shut_down


# ---- more wrong inputs (issue #6): each one line, non-zero, the volume unchanged ------------------


def _one_clear_line(stderr: str) -> str:
    """One `error:` line (rich may wrap it) and a `what to do:`; progress lines may come before."""
    assert "Traceback" not in stderr, stderr
    assert sum(line.startswith("error:") for line in stderr.splitlines()) == 1, stderr
    text = " ".join(stderr[stderr.index("error:") :].split())
    assert "what to do:" in text, stderr
    return text


def test_pgdata_that_is_not_a_cluster(runtime, image_names, stopped_15):
    before = volume_hash(runtime, stopped_15.volume)
    proc = pgleap(
        "upgrade", "docker", "--yes", "--volume", stopped_15.volume, "--from", image_names["15-3.3"],
        "--to", image_names["17-3.5"], "--pgdata", "/var/lib/postgresql/data/base",
    )  # fmt: skip
    assert proc.returncode == EXIT_REFUSED
    assert "not a PostgreSQL cluster" in _one_clear_line(proc.stderr)
    assert volume_hash(runtime, stopped_15.volume) == before


def test_unreachable_docker(image_names):
    import os

    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "upgrade", "docker", "--yes", "--container", "db", "--to", image_names["17-3.5"]],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )  # fmt: skip
    assert proc.returncode == EXIT_ENVIRONMENT
    text = _one_clear_line(proc.stderr)
    assert "Docker engine does not answer" in text and "DOCKER_HOST" in text


def test_permission_denied_on_the_docker_socket(image_names, tmp_path):
    """A socket pgleap may not open: root without CAP_DAC_OVERRIDE, as an unprivileged user would be."""
    import os
    import shutil
    import socket

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        skip_unless_ci("needs root and setpriv to take the permission away")
    path = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    path.chmod(0)
    try:
        proc = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search",
             sys.executable, "-m", "toolkit", "upgrade", "docker", "--yes", "--container", "db", "--to", image_names["17-3.5"]],
            capture_output=True, text=True, timeout=120, env={**os.environ, "DOCKER_HOST": f"unix://{path}"},
        )  # fmt: skip
    finally:
        listener.close()
    assert proc.returncode == EXIT_ENVIRONMENT, proc.stderr
    assert "permission denied on the Docker socket" in _one_clear_line(proc.stderr)


def test_read_only_volume(runtime, image_names, stopped_15, tmp_path):
    import os
    import shutil

    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not os.path.exists("/dev/loop-control"):
        skip_unless_ci("needs root, mkfs.ext4 and loop devices to make a read-only volume")
    img = tmp_path / "ro.img"
    subprocess.run(["truncate", "-s", "300M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    loop = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, capture_output=True, text=True)
    device = loop.stdout.strip()
    name = f"pgleap-test-ro-{uuid.uuid4().hex[:6]}"
    try:
        runtime.docker.volumes.create(name, driver_opts={"type": "ext4", "device": device})
        runtime.docker.containers.run(
            "debian:bookworm", ["bash", "-c", "cp -a /src/. /dst/"], remove=True,
            volumes={stopped_15.volume: {"bind": "/src", "mode": "ro"}, name: {"bind": "/dst", "mode": "rw"}},
        )  # fmt: skip
        runtime.remove_volume(name)
        runtime.docker.volumes.create(name, driver_opts={"type": "ext4", "device": device, "o": "ro"})
        before = volume_hash(runtime, name)
        proc = pgleap(
            "upgrade", "docker", "--yes", "--volume", name, "--from", image_names["15-3.3"], "--to", image_names["17-3.5"]
        )  # fmt: skip
        assert proc.returncode == EXIT_REFUSED, proc.stderr
        assert "read-only or not writable" in _one_clear_line(proc.stderr)
        assert volume_hash(runtime, name) == before
    finally:
        runtime.remove_volume(name)
        subprocess.run(["losetup", "-d", device], check=False)


def test_volume_of_a_running_container(runtime, image_names, old_db_factory):
    db = old_db_factory("15-3.3", seed_data=False)
    proc = pgleap(
        "upgrade", "docker", "--yes", "--volume", db.volume, "--from", image_names["15-3.3"], "--to", image_names["17-3.5"]
    )  # fmt: skip
    assert proc.returncode == EXIT_REFUSED
    assert f"container {db.name} is running on this volume" in _one_clear_line(proc.stderr)
    assert runtime.docker.containers.get(db.name).status == "running"


def test_neither_container_nor_volume(image_names):
    proc = pgleap("upgrade", "docker", "--yes", "--to", image_names["17-3.5"])
    assert proc.returncode == 2
    assert "give --container NAME or --volume VOL --from IMAGE" in " ".join(proc.stderr.split())


def test_volume_without_from(runtime, image_names, stopped_15):
    before = volume_hash(runtime, stopped_15.volume)
    proc = pgleap("upgrade", "docker", "--yes", "--volume", stopped_15.volume, "--to", image_names["17-3.5"])
    assert proc.returncode == 2  # a usage error, said before anything is inspected
    assert "--volume VOL needs --from IMAGE" in " ".join(proc.stderr.split())
    assert volume_hash(runtime, stopped_15.volume) == before


@pytest.mark.parametrize("verb", ["resume", "rollback", "finalize"])
def test_nothing_recorded(runtime, image_names, stopped_15, verb):
    before = volume_hash(runtime, stopped_15.volume)
    proc = pgleap(verb, "docker", "--volume", stopped_15.volume)
    assert proc.returncode == 1
    assert "no upgrade recorded for volume" in _one_clear_line(proc.stderr)
    assert volume_hash(runtime, stopped_15.volume) == before


def test_upgrade_without_a_terminal_and_without_yes(runtime, image_names, stopped_15):
    """Issue 14: one confirmation model; a script that forgot --yes is refused at once, nothing changed."""
    before = volume_hash(runtime, stopped_15.volume)
    args = ["upgrade", "docker", "--volume", stopped_15.volume, "--from", image_names["15-3.3"]]
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", *args, "--to", image_names["17-3.5"]],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    text = " ".join(proc.stderr.split())
    assert proc.returncode == EXIT_REFUSED, proc.stderr
    assert f"upgrade docker-{stopped_15.volume} (stops the database)" in text, text
    assert "not confirmed (no terminal to ask on); nothing was changed" in text, text
    assert "--yes" in text
    assert volume_hash(runtime, stopped_15.volume) == before
