"""`pgleap rehearse dump`: does a schema (a dump) upgrade cleanly from one image to another?

A CI gate for teams whose production database is out of reach: start the OLD image in a
throw-away container and volume, load what the user gives (pg_dump custom or directory
archives, plain `.sql` / `.sql.gz`, optionally a `pg_dumpall --roles-only` file), then run
the whole verified upgrade on it (preflight, pg_upgrade, extension updates and trap repairs,
both fingerprint comparisons, health) and say go / no-go. Everything it made is removed,
unless --keep leaves the upgraded container on a port published on 127.0.0.1.
"""

from __future__ import annotations

import io
import logging
import secrets
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from toolkit.core.report import Report
from toolkit.engine import runner as engine
from toolkit.engine.state import RunState
from toolkit.errors import EXIT_USAGE, PgleapError

logger = logging.getLogger(__name__)

LOAD_DIR = "/tmp/pgleap-load"


@dataclass(frozen=True)
class DumpFile:
    path: Path
    kind: str  # custom | directory | sql | sql.gz

    @property
    def name(self) -> str:
        return self.path.name


def classify(path: Path) -> DumpFile:
    """What a file given on the command line is; a usage error (exit 2) when it is not one."""
    if path.is_dir():
        if (path / "toc.dat").is_file():
            return DumpFile(path, "directory")
        raise PgleapError(f"{path} is a directory without toc.dat (not a pg_dump -Fd archive)",
                          "give a pg_dump archive, a .sql or a .sql.gz file", exit_code=EXIT_USAGE)  # fmt: skip
    if not path.is_file():
        raise PgleapError(f"{path}: no such file", "check the path", exit_code=EXIT_USAGE)
    with path.open("rb") as f:
        head = f.read(5)
    if head == b"PGDMP":
        return DumpFile(path, "custom")
    if head[:2] == b"\x1f\x8b":
        return DumpFile(path, "sql.gz")
    return DumpFile(path, "sql")


def _tar_of(files: list[Path]) -> bytes:
    """The files (and directory archives) as one tar for put_archive, owned by postgres (999)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, path in enumerate(files):

            def owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid = info.gid = 999
                info.uname = info.gname = ""
                return info

            tar.add(str(path), arcname=f"{i}-{path.name}", filter=owned)
    return buf.getvalue()


def _load_command(i: int, dump: DumpFile, database: str) -> str:
    """The shell line that loads one file inside the old container (psql / pg_restore as postgres)."""
    src = f"{LOAD_DIR}/{i}-{dump.name}"
    quoted = "'" + src.replace("'", "'\\''") + "'"
    db = "'" + database.replace("'", "'\\''") + "'"
    if dump.kind in ("custom", "directory"):
        return f"pg_restore --create --exit-on-error -d postgres {quoted}"
    if dump.kind == "sql.gz":
        return f"gunzip -c {quoted} | psql -X -q -v ON_ERROR_STOP=1 -d {db}"
    return f"psql -X -q -v ON_ERROR_STOP=1 -d {db} -f {quoted}"


def rehearse_dump(
    rt,
    files: list[Path],
    *,
    from_image: str,
    to_image: str,
    roles: Path | None = None,
    database: str = "postgres",
    superuser: str = "postgres",
    mode: str = "link",
    keep: bool = False,
    report: Report,
) -> dict:
    """Load the dumps into the old image, upgrade, report; remove everything unless `keep`."""
    dumps = [classify(Path(f)) for f in files]
    if roles is not None and not Path(roles).is_file():
        raise PgleapError(
            f"{roles}: no such file", "give the file of pg_dumpall --roles-only", exit_code=EXIT_USAGE
        )
    for image in (from_image, to_image):
        rt.image_config(image)  # present, or pulled, or a clear error (exit 5)
    suffix = uuid.uuid4().hex[:8]
    name = volume = f"pgleap-rehearse-dump-{suffix}"
    password = secrets.token_urlsafe(18)  # lives only in this process and the container's env
    result: dict = {"from_image": from_image, "to_image": to_image, "files": [str(f) for f in files]}
    made = {"container": name, "volume": volume}
    try:
        _start_old(rt, name, volume, from_image, superuser, password, report)
        _load(rt, name, dumps, roles, database, superuser, report, result)
        target = _target(rt, name)
        state = RunState(target.key)
        state.clear()
        upgraded = engine.upgrade(target, to_image, mode=mode, report=report, state=state)
        result.update(upgraded)
        result["extensions"] = [
            {"database": a["database"], "extension": a["extension"], "before": a["installed"],
             "after": a["target"], "action": a["action"]}
            for a in upgraded["plan"]["extension_actions"]
        ]  # fmt: skip
        result["verdict"] = "go"
        if keep:
            result["kept"] = _kept(rt, name, volume, superuser)
        return result
    finally:
        if not (keep and result.get("verdict") == "go"):
            _remove(rt, made)


def _start_old(
    rt, name: str, volume: str, from_image: str, superuser: str, password: str, report: Report
) -> None:
    """The old image on a fresh volume, its port on 127.0.0.1 only, ready for the load."""
    with report.phase("start the old image", f"{from_image}, throw-away volume"):
        mount = (rt.image_volumes(from_image) or [rt.image_pgdata(from_image)])[0]
        rt.docker.volumes.create(volume, labels={"org.pgleap.role": "rehearse-dump"})
        rt.docker.containers.run(
            from_image, name=name, detach=True,
            environment={"POSTGRES_USER": superuser, "POSTGRES_PASSWORD": password, "POSTGRES_DB": "postgres"},
            volumes={volume: {"bind": mount, "mode": "rw"}},
            ports={"5432/tcp": ("127.0.0.1", None)},
            labels={"org.pgleap.role": "rehearse-dump"},
        )  # fmt: skip
        rt.wait_accepting(name, superuser, password, timeout=180)


def _kept(rt, name: str, volume: str, superuser: str) -> dict:
    """--keep: how to reach the upgraded container and how to remove it (never the password)."""
    container = rt.docker.containers.get(name)
    container.reload()
    port = container.attrs["NetworkSettings"]["Ports"]["5432/tcp"][0]["HostPort"]
    return {
        "container": name, "volume": volume,
        "connect": f"postgresql://{superuser}@127.0.0.1:{port}/postgres",
        "password": "in the container's POSTGRES_PASSWORD (docker inspect)",
        "remove": f"docker rm -f {name} {name}-pgleap-old && docker volume rm {volume} "
                  f"pgleap-old-binaries-{volume}",
    }  # fmt: skip


def _target(rt, name: str):
    from toolkit.docker.target import DockerTarget

    return DockerTarget(rt, container=name)


def _load(rt, name, dumps, roles, database, superuser, report, result) -> None:
    """Copy the files in, load roles then each dump; a load error is a no-go naming the file."""
    container = rt.docker.containers.get(name)
    paths = ([Path(roles)] if roles else []) + [d.path for d in dumps]
    container.exec_run(["mkdir", "-p", LOAD_DIR], user="postgres")
    container.put_archive(LOAD_DIR, _tar_of(paths))
    env = {"PGUSER": superuser, "PGHOST": "/var/run/postgresql"}
    loaded = []
    with report.phase("load the dumps", ", ".join(p.name for p in paths)) as ph:
        if roles:
            src = f"{LOAD_DIR}/0-{Path(roles).name}"
            code, out = container.exec_run(["psql", "-X", "-q", "-d", "postgres", "-f", src], user="postgres",
                                           environment=env)  # fmt: skip
            errors = [line for line in out.decode(errors="replace").splitlines()
                      if "ERROR:" in line and "already exists" not in line]  # fmt: skip
            if code != 0 or errors:
                raise PgleapError(f"loading the roles file {roles} failed: {'; '.join(errors[:3])}",
                                  "check that it is the output of pg_dumpall --roles-only")  # fmt: skip
            loaded.append({"file": str(roles), "kind": "roles"})
        offset = 1 if roles else 0
        for i, dump in enumerate(dumps):
            cmd = _load_command(i + offset, dump, database)
            code, out = container.exec_run(["sh", "-c", cmd], user="postgres", environment=env)
            if code != 0:
                text = out.decode(errors="replace").strip().splitlines()
                error = next((line for line in reversed(text) if "ERROR" in line), text[-1] if text else "")
                raise PgleapError(
                    f"loading {dump.path} ({dump.kind}) into {_image_of(container)} failed: {error}",
                    "the dump does not load on the old image itself: fix that first",
                )
            loaded.append({"file": str(dump.path), "kind": dump.kind})
        ph.detail = f"{len(loaded)} files"
    result["loaded"] = loaded


def _image_of(container) -> str:
    return container.attrs["Config"]["Image"]


def _remove(rt, made: dict) -> None:
    """Every container and volume the rehearsal (and the upgrade inside it) made."""
    name, volume = made["container"], made["volume"]
    for c in (name, f"{name}-pgleap-old", f"{name}-pgleap-new"):
        rt.remove(c)
    for v in (volume, f"pgleap-old-binaries-{volume}"):
        rt.remove_volume(v)
    RunState(f"docker-{volume}").clear()
