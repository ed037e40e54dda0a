"""Reproduce issue 13's table on the current code: one pgleap command on a fresh corpus copy.

    python -m tests.corpus.repro 13-3.1 17-3.5 upgrade [--adjusted [--except WORD,…]] [--downtime minimal] [--keep]
    python -m tests.corpus.repro 13-3.1 17-3.5 rehearse

Prints the exit code, seconds, the last lines pgleap printed, and whether the database
container is left running, on which image. Removes the copy afterwards unless --keep.
"""

from __future__ import annotations

import sys
import time

import docker

from tests.conftest import remove_old
from tests.corpus import corpus
from tests.corpus.adjust import adjust
from tests.corpus.test_corpus import pgleap
from toolkit.docker import images
from toolkit.docker.runtime import DockerRuntime


def main(argv: list[str]) -> int:
    old, new, command = argv[:3]
    rt = DockerRuntime(docker.from_env())
    corpus.build(old)
    db = corpus.start(rt, old)
    try:
        if "--adjusted" in argv:
            skip = argv[argv.index("--except") + 1].split(",") if "--except" in argv else []
            adjust(db, keep=tuple(skip))
        args = [command, "docker", "--container", db.name, "--to", images.image_name(new)]
        if "--downtime" in argv:
            args += ["--downtime", argv[argv.index("--downtime") + 1]]
        start = time.monotonic()
        proc = pgleap(*args)
        seconds = time.monotonic() - start
        container = rt.docker.containers.get(db.name)
        print(f"$ pgleap {' '.join(args)}")
        print("\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:]))
        print(f"== exit {proc.returncode} after {seconds:.0f} s; container {container.status} "
              f"on {container.attrs['Config']['Image']}")  # fmt: skip
    finally:
        if "--keep" not in argv:
            remove_old(db)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
