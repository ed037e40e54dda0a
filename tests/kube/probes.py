"""Probe output recorded from real runs of probe.sh on the test images (uid 999, caps dropped).

`recorded_runner` answers the fake API's probe Pods with them, by the image the Pod names,
so the fast tests read real images' facts. Regenerate with:
    docker run --rm --user 999:999 --cap-drop ALL --entrypoint bash IMAGE -c "$(inline_script)" probe.sh
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.kube.harness import SCRIPTS
from toolkit.cli.kube import load_scripts

PROBES = Path(__file__).parent / "probes"
IMAGES = {
    "pgleap/postgis:13-3.1": "pgleap-postgis-13-3.1.txt",
    "pgleap/postgis:15-3.3": "pgleap-postgis-15-3.3.txt",
    "pgleap/postgis:17-3.5": "pgleap-postgis-17-3.5.txt",
    "pgleap/postgis:18-3.x": "pgleap-postgis-18-3.x.txt",
}
# The job scripts of the harness plus the real probe (lib.sh, probe.sh): the runtime probes.
PROBE_SCRIPTS = {**SCRIPTS, **{k: v for k, v in load_scripts().items() if k in ("lib.sh", "probe.sh")}}


def recorded(name: str) -> str:
    return (PROBES / IMAGES[name]).read_text()


def recorded_runner(
    aliases: Mapping[str, str] | None = None, edit: Callable[[str, str], str] | None = None
) -> Callable[[dict[str, Any]], tuple[str, str]]:
    """A pod runner: `aliases` maps other references (digests, registries) to a recorded image;
    `edit(image, text)` changes what the probe printed (a forced fact)."""
    aliases = dict(aliases or {})

    def run(pod: dict[str, Any]) -> tuple[str, str]:
        image = pod["spec"]["containers"][0]["image"]
        name = aliases.get(image, image)
        if name not in IMAGES:
            return "Failed", f"exec: image {image} not known to this fake\n"
        text = recorded(name)
        return "Succeeded", edit(image, text) if edit else text

    return run
