"""Faults that are not a kill: disk full, an unfit target image, a crashed cluster, a second run.

Each ends in (a) the old cluster on its old image with an identical fingerprint,
or (b) `pgleap resume` finished with an identical fingerprint; see test_kill_docker.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import pytest

from tests.ci import skip_unless_ci
from tests.conftest import volume_hash
from tests.faults.conftest import TARGET
from tests.faults.harness import fault_env, helpers, pgleap, result_json, start, wait_for_point
from tests.faults.test_kill_docker import assert_new, assert_old_back, key, upgrade_args
from toolkit.errors import EXIT_REFUSED

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def small_fs(tmp_path):
    """A 400 MB ext4 on a loop device, mounted on the host: a data volume that can fill up."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4") or not os.path.exists("/dev/loop-control"):
        skip_unless_ci("needs root, mkfs.ext4 and loop devices to make a size-limited volume")
    image, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "400M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_copy_then_rollback(runtime, image_names, small_fs, fresh_db, tmp_path):
    db = fresh_db(bind=str(small_fs))
    vkey = "docker-" + str(small_fs).strip("/").replace("/", "_")
    before = db.fingerprint()
    run = start(*upgrade_args(db, image_names, "copy"), env=fault_env("transfer", tmp_path))
    frozen = wait_for_point(runtime, run, vkey, "transfer")
    # pg_upgrade is copying; fill the volume to its last MiB, then let it go on.
    st = os.statvfs(small_fs)
    filler = small_fs / "filler"
    subprocess.run(["fallocate", "-l", str(st.f_bavail * st.f_frsize - 1024 * 1024), str(filler)], check=True)
    frozen.exec_run(["bash", "-c", "kill -CONT -1"])
    run.proc.wait(timeout=300)
    text = " ".join(run.stderr().split())
    assert run.proc.returncode == 1, text
    assert "pg_upgrade failed; the old cluster is unchanged and usable" in text
    assert "No space left on device" in text
    assert "Traceback" not in text
    filler.unlink()  # the operator frees space, then rolls back
    proc = pgleap("rollback", "docker", "--container", db.name, "-o", "json", "--yes")
    assert result_json(proc)["status"] == "rolled-back"
    assert_old_back(runtime, db, image_names, before)


def derived_image(docker_client, base: str, tag: str, run: str) -> str:
    docker_client.images.build(fileobj=io.BytesIO(f"FROM {base}\nRUN {run}\n".encode()), tag=tag, rm=True)
    return tag


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ("no-postgis", "lacks extensions the cluster uses: postgis"),
        ("old-postgis", "older than the 3.3"),
    ],
)
def test_unfit_target_image_is_refused_while_production_runs(
    runtime, docker_client, image_names, fresh_db, variant, message
):
    lib, share = "/usr/lib/postgresql/17/lib", "/usr/share/postgresql/17/extension"
    run = {
        "no-postgis": f"rm -f {share}/postgis* {lib}/postgis*",
        # PostGIS 3.0 claimed by the control file: older than the source's 3.3
        "old-postgis": f"sed -i \"s/^default_version.*/default_version = '3.0.0'/\" {share}/postgis.control",
    }[variant]
    image = derived_image(docker_client, image_names[TARGET], f"pgleap-test/{variant}:17", run)
    db = fresh_db()
    before = db.fingerprint()
    proc = pgleap("upgrade", "docker", "--container", db.name, "--to", image, "--yes")
    assert proc.returncode == EXIT_REFUSED, proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert_old_back(runtime, db, image_names, before)  # never stopped


def test_crash_stopped_cluster_is_refused_then_starts_on_its_image(runtime, image_names, fresh_db):
    db = fresh_db()
    before = db.fingerprint()
    container = runtime.docker.containers.get(db.name)
    container.kill(signal="SIGKILL")
    container.wait()
    hashed = volume_hash(runtime, db.volume)
    proc = pgleap(*upgrade_args(db, image_names, "link"))
    assert proc.returncode == EXIT_REFUSED
    assert "not shut down cleanly" in " ".join(proc.stderr.split())
    assert volume_hash(runtime, db.volume) == hashed
    container.start()
    runtime.wait_accepting(db.name, db.superuser, db.password)
    assert_old_back(runtime, db, image_names, before)


def test_second_run_on_the_same_volume_is_refused(runtime, image_names, fresh_db, tmp_path):
    db = fresh_db()
    before = db.fingerprint()
    first = start(*upgrade_args(db, image_names, "link"), env=fault_env("initdb", tmp_path))
    wait_for_point(runtime, first, key(db), "initdb")
    try:
        # same machine, same state directory: the lock
        second = pgleap(*upgrade_args(db, image_names, "link"))
        assert second.returncode == 3 and "another pgleap run is working on" in second.stderr  # a refusal
        assert pgleap("resume", "docker", "--container", db.name).returncode == 3
        # another state directory: the helpers on the volume name a live pgleap
        other = pgleap(*upgrade_args(db, image_names, "link"), env={"PGLEAP_STATE_DIR": str(tmp_path / "b")})
        assert other.returncode == 3
        # the lock shared by every state dir of the host (state.LOCK_ROOT) refuses it first
        assert "another pgleap run is working on" in " ".join(other.stderr.split()), other.stderr
        assert helpers(runtime, key(db), "script"), "the first run's upgrade container was touched"
    finally:
        first.proc.kill()
        first.proc.wait()
    assert_new(
        runtime,
        db,
        image_names,
        before,
        result_json(pgleap("resume", "docker", "--container", db.name, "-o", "json")),
    )
