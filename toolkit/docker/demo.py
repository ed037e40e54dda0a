"""`pgleap demo`: seed an old PostGIS database on Docker, upgrade it across the widest jump, show the proof."""

from __future__ import annotations

import secrets
import uuid

from toolkit.core.report import Report
from toolkit.db.seed import seed
from toolkit.docker import images
from toolkit.docker.runtime import DockerRuntime
from toolkit.docker.target import DockerTarget
from toolkit.engine import runner as engine
from toolkit.engine import undo
from toolkit.engine.state import RunState, locked


def run_demo(
    *, old_tag: str | None = None, new_tag: str | None = None, mode: str = "link", keep: bool = False,
    rows: int = 20000, report: Report,
) -> dict:  # fmt: skip
    matrix = images.load_matrix()
    old_tag = old_tag or matrix[0].tag
    new_tag = new_tag or matrix[-1].tag
    with report.phase("images", f"{old_tag} -> {new_tag} (build or reuse)") as ph:
        results = images.build_all([old_tag, new_tag], log=report.say)
        ph.detail = ", ".join(f"{r.tag} {r.action}" for r in results)
    rt = DockerRuntime()
    suffix = uuid.uuid4().hex[:6]
    name, volume = f"pgleap-demo-{suffix}", f"pgleap-demo-{suffix}"
    password = secrets.token_urlsafe(18)  # lives only in this process and the container's env
    old_image, new_image = images.image_name(old_tag), images.image_name(new_tag)
    old_pgdata = images.spec_for(old_tag).volume_dir
    rt.docker.volumes.create(volume)
    try:
        with report.phase("start the old database", f"{old_image}, superuser 'gis'"):
            rt.docker.containers.run(
                old_image, name=name, detach=True,
                environment={"POSTGRES_USER": "gis", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "gis"},
                volumes={volume: {"bind": old_pgdata, "mode": "rw"}},
            )  # fmt: skip
            rt.wait_accepting(name, "gis", password, timeout=180)
        with report.phase("seed PostGIS data", f"{rows} points, polygons, topology, raster, 2 databases"):
            live = rt.live_server(rt.source_container(name))
            seed(live, "gis", rows=rows)
        target = DockerTarget(rt, container=name)
        state = RunState(target.key)
        with locked(target.key):
            result = engine.upgrade(target, new_image, mode=mode, report=report, state=state)
        result["container"] = name
        result["volume"] = volume
        if not keep:
            with report.phase("clean up", "demo container and volume"):
                with locked(target.key):
                    undo.finalize(target, report=Report(quiet=True), state=state)
                rt.remove(name)
                rt.remove_volume(volume)
        else:
            report.say(f"kept container [bold]{name}[/] and volume [bold]{volume}[/]")
        return result
    except BaseException:
        if not keep:
            report.say(
                f"[yellow]the demo failed; container {name} and volume {volume} are kept for inspection[/]"
            )
        raise
