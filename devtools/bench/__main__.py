"""`scripts/bench [--quick]`: generate the datasets, upgrade each one every way, print and save the table."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from devtools.bench import methods, summary
from devtools.bench.datasets import Dataset, generate
from devtools.bench.harness import Harness
from toolkit.docker import images
from toolkit.docker.runtime import DockerRuntime

QUICK = {
    "sources": "13-3.1",
    "postgis_gb": "0.05,0.2",
    "schema_tables": "1000",
    "methods": "floor,link,copy,naive,proof,logical",
    "repeat": 2,
}
FULL = {
    "sources": "13-3.1,15-3.3",
    "postgis_gb": "0.25,1.5,6",
    "schema_tables": "5000,20000",
    "methods": "floor,link,copy,naive,link-verified,proof,logical",
    "repeat": 2,
}
METHODS = ("floor", "link", "copy", "naive", "link-verified", "proof", "logical")
REPEATED = ("floor", "link")  # the pair the 1.25x target compares


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small datasets, oldest image only (a few minutes)")
    p.add_argument("--sources", help="old image tags, comma-separated (full: 13-3.1,15-3.3)")
    p.add_argument("--target", default="17-3.5", help="new image tag (default 17-3.5)")
    p.add_argument("--postgis-gb", help="PostGIS dataset sizes in GB (full: 0.25,1.5,6); empty for none")
    p.add_argument("--schema-tables", help="schema-heavy dataset table counts (full: 5000,20000)")
    p.add_argument("--methods", help=f"subset of {','.join(METHODS)} (quick: all but link-verified)")
    p.add_argument(
        "--repeat", type=int, help="runs of floor and link per dataset; the median run is shown (2)"
    )
    p.add_argument("--seed", type=int, default=42, help="dataset seed (same seed, same data)")
    p.add_argument("--results", default="results", help="folder for the JSON (default results/)")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def run_dataset(
    h: Harness, ds: Dataset, old_tag: str, new_tag: str, wanted: list[str], seed: int, repeat: int
) -> dict:
    old, new = images.image_name(old_tag), images.image_name(new_tag)
    mount, new_mount = images.spec_for(old_tag).volume_dir, images.spec_for(new_tag).volume_dir
    say(f"{old_tag} -> {new_tag} {ds.key}: generating (seed {seed})")
    t = time.monotonic()
    golden, facts = generate(h, old, mount, ds, seed)
    facts["generate_seconds"] = round(time.monotonic() - t, 1)
    facts["volume_mb"] = h.volume_mb(golden)
    say(
        f"  {facts['volume_mb'] / 1024:.2f} GB on disk, {facts['user_tables']} tables, in {facts['generate_seconds']} s"
    )
    record = {
        "pair": f"{old_tag.split('-')[0]}→{new_tag.split('-')[0]}",
        "source": old_tag,
        "target": new_tag,
        "dataset": ds.key,
        "family": ds.family,
        "size": ds.size,
        "facts": facts,
        "methods": {},
    }
    runners = {
        "floor": lambda: methods.floor(h, golden, old, new, mount),
        "link": lambda: methods.pgleap(h, golden, old, new, mount, mode="link", downtime="minimal"),
        "copy": lambda: methods.pgleap(h, golden, old, new, mount, mode="copy", downtime="minimal"),
        "naive": lambda: methods.naive(h, golden, old, new, mount, new_mount),
        "link-verified": lambda: methods.pgleap(h, golden, old, new, mount, mode="link", downtime="verified"),
        "proof": lambda: methods.proof(h, golden, old, mount),
        "logical": lambda: methods.logical(h, golden, old, new, mount),
    }
    runs: dict[str, list[dict]] = {m: [] for m in wanted}
    try:
        for i in range(repeat):  # round robin, so that a busy minute on a shared machine hits all methods
            for method in wanted:
                if i > 0 and method not in REPEATED:
                    continue
                say(f"  {method} (run {i + 1}) ...")
                load = os.getloadavg()[0]
                try:
                    result = runners[method]()
                except Exception as exc:  # one failed method must not lose the others' numbers
                    traceback.print_exc()
                    result = {"error": f"{exc.__class__.__name__}: {str(exc)[:800]}"}
                result["loadavg_1min"] = round(load, 2)
                runs[method].append(result)
                shown = {k: round(v, 2) for k, v in result.items() if isinstance(v, float)}
                say(f"  {method}: {result.get('error', shown)}")
    finally:
        h.drop(golden)
    record["methods"] = {m: median_run(r) for m, r in runs.items() if r}
    return record


def median_run(runs: list[dict]) -> dict:
    """The run with the median downtime (lower median for an even count); all downtimes kept."""
    ok = sorted((r for r in runs if "error" not in r), key=lambda r: r["downtime"])
    if not ok:
        return runs[0]
    return {
        **ok[(len(ok) - 1) // 2],
        "runs": [round(r["downtime"], 3) for r in ok],
        "failed_runs": len(runs) - len(ok),
    }


def _interrupted(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # leave through `finally`: containers and volumes removed
        signal.signal(sig, _interrupted)
    logging.basicConfig(level=logging.WARNING)
    for name in filter(
        None, os.environ.get("PGLEAP_BENCH_INFO", "").split(",")
    ):  # e.g. toolkit.engine.logical
        logging.getLogger(name).setLevel(logging.INFO)
    wanted = [m for m in args.methods.split(",") if m]
    unknown = set(wanted) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods: {', '.join(sorted(unknown))}")
    datasets = [Dataset("postgis", gb) for gb in _floats(args.postgis_gb)]
    datasets += [Dataset("schema", n) for n in _floats(args.schema_tables)]
    sources = [s for s in args.sources.split(",") if s]
    os.environ["PGLEAP_STATE_DIR"] = tempfile.mkdtemp(prefix="pgleap-bench-state-")
    images.build_all(sorted({*sources, args.target}), log=lambda m: None)
    h = Harness(DockerRuntime())
    started = datetime.now(UTC)
    out_dir = Path(args.results)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = (
        out_dir / f"bench-{'quick-' if args.quick else ''}{started:%Y%m%dT%H%M%S}-{h.run_id}.json"
    )  # two at once differ
    doc = {
        "run_id": h.run_id,
        "started": started.isoformat(),
        "host": {
            "cpus": os.cpu_count(),
            "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3),
        },
        "args": vars(args),
        "records": [],
    }
    t0 = time.monotonic()
    say(
        f"bench {h.run_id}: {len(sources)} source image(s) x {len(datasets)} dataset(s) x {wanted}; JSON -> {out}"
    )
    try:
        for old_tag in sources:
            for ds in datasets:
                doc["records"].append(
                    run_dataset(h, ds, old_tag, args.target, wanted, args.seed, args.repeat)
                )
                doc["elapsed_seconds"] = round(time.monotonic() - t0, 1)
                doc["table"] = summary.render(doc["records"])
                out.write_text(
                    json.dumps(doc, indent=1, default=str)
                )  # after each dataset: partial runs count
    finally:
        h.cleanup()
    print(summary.render(doc["records"]))
    print(f"\n{len(doc['records'])} dataset(s) in {time.monotonic() - t0:.0f} s; JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
