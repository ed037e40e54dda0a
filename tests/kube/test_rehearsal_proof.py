"""A rehearsal proves its clone as a real `upgrade sts` does (kube/fingerprint.py's Prover), against
the recording fake: serve-old fingerprints the stopped clone, serve-new compares right after
pg_upgrade, then runs the post-upgrade and compares the user data again (`proved`), all before
the upgraded rehearsal StatefulSet exists; no hook runs on the clone's serving pod afterwards."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from tests.kube.harness import Cluster, make_cluster
from tests.kube.test_fingerprint_kube import FP, serving
from tests.kube.test_rehearsal import TARGET, Hooks, created, rehearsal_left, rehearse
from toolkit.errors import EXIT_VERIFY
from toolkit.kube import objects
from toolkit.kube.model import DataProof

REHEARSAL = "gis-rehearsal"


def _proof(c: Cluster, *, corrupt: bool) -> list[tuple[str, str]]:
    """A DataProof whose post-upgrade may change a value (a skipped repair); records its reads."""
    seen: list[tuple[str, str]] = []
    value = {"v": "abc"}

    def fingerprint(ctx) -> dict[str, Any]:
        seen.append(("fingerprint", ctx.pod))
        fp = copy.deepcopy(FP)
        fp["tables"]["gis"]["public.t"] = [3, value["v"]]
        fp["extensions"] = {"gis": {"postgis": "3.1.1"}}
        return fp

    def post_upgrade(ctx) -> dict[str, Any]:
        seen.append(("post_upgrade", ctx.pod))
        # before the switch: no StatefulSet on the target image was created yet
        images = [s["spec"]["template"]["spec"]["containers"][0]["image"] for s in created(c, "statefulsets")]
        assert TARGET not in images, images
        if corrupt:
            value["v"] = "abd"
        return {
            "extensions_updated": ["gis: postgis 3.1.1 -> 3.5.2"],
            "trap_repairs": [],
            "extensions": {"gis": {"postgis": "3.5.2"}},
            "collation_indexes": ["gis.public.names_idx"],
            "health": [{"check": "amcheck", "ok": True, "detail": "3 indexes"}],
        }

    def compare_user(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[str], list[str]]:
        return ([] if before == after else ["table gis.public.t: rows or content differ"]), []

    c.runtime.proof = DataProof(fingerprint, lambda a, b: [] if a == b else ["x"], post_upgrade, compare_user)
    serving(dataclasses.replace(c, name=REHEARSAL))  # the rehearsal StatefulSet's serve Jobs
    return seen


def _pod(action: str) -> str:
    return f"{objects.job_name(REHEARSAL, action)}-p"


def test_the_rehearsal_runs_the_post_upgrade_on_serve_new_and_compares_again_before_the_switch() -> None:
    c = make_cluster("official-plain")
    seen = _proof(c, corrupt=False)
    hooks = Hooks()
    result = rehearse(c, hooks)

    assert result["verdict"] == "go", result
    assert seen == [
        ("fingerprint", _pod("serve-old")),
        ("fingerprint", _pod("serve-new")),
        ("post_upgrade", _pod("serve-new")),
        ("fingerprint", _pod("serve-new")),  # again after the extension updates and trap repairs
    ]
    assert hooks.seen == [("replication", "gis-0")]  # nothing on the clone's serving pod
    jobs = [j["metadata"]["name"] for j in created(c, "jobs")]
    assert jobs[-4:] == [
        objects.job_name(REHEARSAL, a) for a in ("serve-old", "upgrade", "serve-new", "serve-new")
    ]
    assert result["fingerprint"] == {"identical": True, "differences": []}
    assert result["fingerprint_after_extensions"] == {"identical": True, "differences": []}
    assert result["extensions"] == [
        {"database": "gis", "extension": "postgis", "before": "3.1.1", "after": "3.5.2"}
    ]
    assert result["collation_indexes"] == ["gis.public.names_idx"]
    proved = next(p for p in result["phases"] if p["name"] == "upgrade: proved")
    assert proved["in_downtime"] and proved["seconds"] > 0
    assert "fingerprint before" not in [p["name"] for p in result["phases"]]  # serve-old's is the before
    assert rehearsal_left(c) == []


def test_a_value_changed_by_the_clones_post_upgrade_is_no_go_before_the_switch() -> None:
    c = make_cluster("official-plain")
    _proof(c, corrupt=True)
    result = rehearse(c, Hooks())

    assert result["verdict"] == "no-go" and result["exit_code"] == EXIT_VERIFY, result
    assert "after the extension updates" in result["reason"] and "gis.public.t" in result["reason"]
    assert "do not upgrade production" in result["what_to_do"]
    assert result["fingerprint"]["identical"] is True
    assert result["fingerprint_after_extensions"] == {
        "identical": False,
        "differences": ["table gis.public.t: rows or content differ"],
    }
    images = [s["spec"]["template"]["spec"]["containers"][0]["image"] for s in created(c, "statefulsets")]
    assert TARGET not in images  # the upgraded clone never started
    assert rehearsal_left(c) == []
