"""Where things are inside pgleap's helper containers and Jobs: the contract with toolkit/container/*.sh.

One definition for both runtimes: Docker mounts the volume, the scratch volume and the scripts
here (toolkit/docker/refs.py), Kubernetes renders the same mounts into its Jobs
(toolkit/kube/plan.py, render.py), and upgrade.sh reads them from PGLEAP_VOLUME/PGLEAP_OLD_ROOT.
"""

from __future__ import annotations

VOLUME = "/pgleap/volume"  # the whole data volume (no subPath)
OLD_ROOT = "/pgleap/old"  # the old image's binaries, collected onto a scratch volume
# Kubernetes --downtime minimal: the prepare Job collects the old binaries once onto the data volume
# (pgleap's own folder, removed by finalize and cleanup), so the upgrade Job in the window reuses them.
STAGED_OLD_ROOT = f"{VOLUME}/.pgleap/old-binaries"
SCRIPTS = "/pgleap/scripts"  # the container scripts, read-only
SOCK = "/pgleap/sock"  # the socket directory of a temporary server (Docker)
