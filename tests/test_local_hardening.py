"""Local safety of the Docker side without Docker: the state files, the per-volume lock, the
rehearsal clone's published port, and shell characters in data paths (refused before any change)."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from toolkit.docker.refs import SourceContainer, VolumeRef
from toolkit.docker.runtime import DockerRuntime
from toolkit.docker.target import DockerTarget
from toolkit.engine import state
from toolkit.errors import PgleapError, Refused


@pytest.fixture
def lock_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "host-locks"
    root.mkdir()
    monkeypatch.setattr(state, "LOCK_ROOT", root)
    return root


def test_truncated_state_file_names_the_file_and_the_way_out(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PGLEAP_STATE_DIR", str(tmp_path / "s"))
    state.RunState("docker-gis").save(phase="stopped", source={"container": "gis"})
    path = tmp_path / "s" / "docker-gis.json"
    path.write_text(path.read_text()[:20])  # a crash or a full disk while someone copied it
    with pytest.raises(PgleapError) as exc:
        state.RunState("docker-gis")
    assert str(path) in exc.value.message and "damaged" in exc.value.message
    assert f"mv {path} {path}.damaged" in exc.value.hint and "pgleap status" in exc.value.hint


def test_state_is_private(monkeypatch, tmp_path) -> None:
    folder = tmp_path / "s"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)  # made by an older pgleap
    monkeypatch.setenv("PGLEAP_STATE_DIR", str(folder))
    run = state.RunState("docker-gis")
    run.save(phase="stopped", tables={"public.parcels": 10})
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(run.path.stat().st_mode) == 0o600
    run.save(phase="upgraded")  # a rewrite keeps it private
    assert stat.S_IMODE(run.path.stat().st_mode) == 0o600


def test_lock_is_keyed_on_the_volume_not_the_state_dir(monkeypatch, tmp_path, lock_root) -> None:
    """`sudo pgleap` and `pgleap` have two state dirs; they must still exclude each other."""
    monkeypatch.setenv("PGLEAP_STATE_DIR", str(tmp_path / "root-state"))
    with state.locked("docker-gisdata"):
        monkeypatch.setenv("PGLEAP_STATE_DIR", str(tmp_path / "user-state"))
        busy = "another pgleap run is working on docker-gisdata"
        with pytest.raises(Refused, match=busy), state.locked("docker-gisdata"):
            pass
        with state.locked("docker-othervolume"):  # another volume is not blocked
            pass
    with state.locked("docker-gisdata"):  # released
        pass


def test_lock_file_of_another_user_is_usable_read_only(monkeypatch, tmp_path, lock_root) -> None:
    """The shared lock needs only read access: a file made by root (0644) still locks for a user."""
    monkeypatch.setenv("PGLEAP_STATE_DIR", str(tmp_path / "s"))
    with state.locked("docker-gisdata"):
        pass
    (held,) = list(lock_root.iterdir())
    held.chmod(0o444)
    with state.locked("docker-gisdata"):
        pass


class _Containers:
    def __init__(self) -> None:
        self.runs: list[dict] = []

    def get(self, name: str):
        import docker.errors

        raise docker.errors.NotFound(name)

    def run(self, image: str, **kw):
        self.runs.append(kw)
        raise RuntimeError("stop here: no engine")


def test_rehearsal_clone_is_published_on_loopback_only() -> None:
    containers = _Containers()
    rt = DockerRuntime(SimpleNamespace(containers=containers))
    source = SourceContainer(
        name="gis", image="x", pgdata="/var/lib/postgresql/data", mount="/var/lib/postgresql/data",
        volume=VolumeRef("volume", "gisdata"), superuser="gis", password=None, attrs={}, running=True,
    )  # fmt: skip
    plan = {"target_image": "y", "layout": {"new_pgdata": "/var/lib/postgresql/18/docker", "new_mount": "/v"}}
    for port in (None, 15432):
        with pytest.raises(RuntimeError, match="stop here"):
            rt.run_clone(source, plan, "clone-vol", "gis-rehearsal", port)
        assert containers.runs[-1]["ports"] == {"5432/tcp": ("127.0.0.1", port)}


class _Runtime:
    """Answers what DockerTarget reads; anything that would change something fails the test."""

    def __init__(self, volumes: list[str]) -> None:
        self.docker = SimpleNamespace(volumes=SimpleNamespace(get=lambda name: None))
        self._volumes = volumes

    def image_pgdata(self, image: str) -> str:
        return "/var/lib/postgresql/data"

    def image_volumes(self, image: str) -> list[str]:
        return self._volumes

    def __getattr__(self, name: str):
        raise AssertionError(f"DockerTarget called {name} before refusing")


@pytest.mark.parametrize("pgdata", ["/var/lib/postgresql/data/$(id)", "/data/`id`", "/data/a\nb", "/d/${X}"])
def test_shell_characters_in_pgdata_refused_before_any_change(pgdata: str) -> None:
    with pytest.raises(Refused, match="PGDATA"):
        DockerTarget(
            _Runtime(["/var/lib/postgresql/data"]), volume="gisdata", source_image="i", pgdata=pgdata
        )


def test_shell_characters_in_a_bind_mounted_data_directory_refused() -> None:
    saved = {
        "volume": {"kind": "bind", "source": "/srv/pg`id`"},
        "source_image": "i",
        "pgdata": "/var/lib/postgresql/data",
        "mount": "/var/lib/postgresql/data",
    }
    with pytest.raises(Refused, match="bind-mounted data directory"):
        DockerTarget(_Runtime([]), saved=saved)


def test_plain_paths_pass() -> None:
    target = DockerTarget(_Runtime(["/var/lib/postgresql/data"]), volume="gisdata", source_image="i")
    assert target.pgdata == "/var/lib/postgresql/data" and target.key == "docker-gisdata"
