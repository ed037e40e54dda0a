"""`pgleap rehearse docker`: the whole upgrade on a clone, while production keeps running.

clone (pg_basebackup --wal-method=stream from the running server into a new volume)
-> recover the clone once (a temporary server, then a clean shutdown)
-> the engine's upgrade on the clone (preflight, pg_upgrade, post-upgrade, verify)
-> a report: every check, collation-dependent indexes, extensions before/after,
   the time of each phase and the predicted downtime of the real run
-> keep the upgraded clone running on a port (--keep) or remove it.
Exit code 0 is "go"; any other is "no-go" and the report says why.
"""

from __future__ import annotations

import logging
import time

from toolkit.core.layout import rel_to_mount
from toolkit.core.report import Report
from toolkit.db.replication import replication_problems
from toolkit.engine import runner as engine
from toolkit.engine.state import RunState
from toolkit.errors import PgleapError, Refused

logger = logging.getLogger(__name__)

# Stopping the production container and starting it on the new image are not part of a
# rehearsal on a bare volume: without --keep (which measures the start) this allowance is
# added, an assumption rather than a measurement, and the report says which one it used.
STOP_START_SECONDS = 4.0


def predicted_downtime(report: dict, started_seconds: float | None) -> float:
    """The phases a real run spends with the database stopped, as measured on the clone."""
    down = sum(p["seconds"] for p in report["phases"] if p["in_downtime"])
    return round(down + (started_seconds if started_seconds is not None else STOP_START_SECONDS), 1)


def rehearse_docker(
    rt, container: str, target_image: str, *, mode: str, keep: bool, port: int | None, report: Report
) -> dict:
    """Clone, upgrade the clone, report; the clone is removed unless `keep`."""
    from toolkit.docker.target import DockerTarget

    source = rt.source_container(container)
    live = rt.live_server(source)
    if live is None:
        raise Refused(
            f"container {container!r} is not running: a rehearsal clones a running server",
            "start it, or use `pgleap plan docker` for a plan without a clone",
        )
    result: dict = {"source": container, "target_image": target_image, "mode": mode}
    clone = f"pgleap-rehearsal-{source.volume.key}"[:120]
    _check_replication_access(live, report)
    target = None
    try:
        _clone(rt, source, clone, container, report)
        target = DockerTarget(rt, volume=clone, source_image=source.image, pgdata=source.pgdata)
        target.mount, target.key = source.mount, f"docker-{clone}"
        state = RunState(f"rehearsal-{clone}")
        state.clear()
        upgraded = engine.upgrade(target, target_image, mode=mode, report=report, state=state)
        state.clear()
        result.update(upgraded)
        started = None
        if keep:
            t0 = time.monotonic()
            name, host_port = rt.run_clone(
                source, upgraded["plan"], clone, f"{container}-pgleap-rehearsal", port
            )
            started = time.monotonic() - t0
            result["kept"] = {"container": name, "volume": clone, "port": host_port,
                              "connect": f"postgresql://{source.superuser}@127.0.0.1:{host_port}/"}  # fmt: skip
        result.update(_findings(upgraded, started))
        result["verdict"] = "go"
        return result
    finally:
        if target is not None:
            target.cleanup_scratch()
        if not (keep and result.get("verdict") == "go"):
            rt.remove_volume(clone)


def _check_replication_access(live, report: Report) -> None:
    """A clone is a pg_basebackup: refuse before anything is made when the server does not allow it."""
    with report.phase("check replication access", "role, wal_level, wal senders, pg_hba.conf") as ph:
        problems = replication_problems(live, live.host)
        ph.detail = "ok" if not problems else f"{len(problems)} missing"
    if problems:
        raise Refused(
            "cannot clone the running server: " + "; ".join(problems), problems[-1].split(": ", 1)[-1]
        )


def _clone(rt, source, clone: str, container: str, report: Report) -> None:
    """pg_basebackup of the running server into the volume `clone`, recovered and cleanly shut down."""
    old = rt.probe_image(source.image)
    data = rt.probe_data(source.image, source.volume, _rel(source))
    uid, gid = data.owner_uid or 999, data.owner_gid or 999
    with report.phase("clone (pg_basebackup)", f"{container} -> volume {clone}") as ph:
        rt.remove_volume(clone)
        rt.basebackup(source, old.bindir, clone, _rel(source), uid=uid, gid=gid)
        with rt.temp_server(
            source.image, old.bindir, _volume(clone), _rel(source), uid=uid, gid=gid,
            superuser=source.superuser, read_only=False, label="clone (recovering)",
        ):  # fmt: skip
            pass  # started: recovery done; leaving it: clean shutdown
        ph.detail = f"{data.data_kb / 1024:.0f} MiB"


def _findings(upgraded: dict, started: float | None) -> dict:
    """What the rehearsal tells the operator: extension actions, reindexed indexes, predicted downtime."""
    plan = upgraded["plan"]
    return {
        "extensions": [
            {
                "database": a["database"],
                "extension": a["extension"],
                "before": a["installed"],
                "after": a["target"],
                "action": a["action"],
            }
            for a in plan["extension_actions"]
        ],
        "collation_indexes": upgraded.get("reindexed", []),
        "predicted_downtime_seconds": predicted_downtime(upgraded, started),
        "predicted_downtime_basis": "phases measured on the clone while the database would be down, plus "
        + (
            "the measured start of the kept clone"
            if started is not None
            else f"{STOP_START_SECONDS} s assumed for stop/start"
        ),
    }


def _rel(source) -> str:
    return rel_to_mount(source.pgdata, source.mount)


def _volume(name: str):
    from toolkit.docker.refs import VolumeRef

    return VolumeRef("volume", name)


def no_go(exc: PgleapError, container: str, target_image: str, report: Report) -> dict:
    return {
        **report.to_dict(),
        "source": container,
        "target_image": target_image,
        "verdict": "no-go",
        "reason": exc.message,
        "what_to_do": exc.hint,
        "exit_code": exc.exit_code,
    }
