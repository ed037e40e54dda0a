"""What the Kubernetes commands depend on and share at run time: the injected dependencies
(`Deps`, set once by `register` in toolkit/cli/kube.py; tests pass fakes), the in-container
scripts, the cluster client and runtime, the Job's environment and the guard's overrides.

Each command is a module-level function in `kube_sts`, `kube_lifecycle` or `kube_render`,
callable on its own; options are in `kube_options`, printers in `kube_output`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.cli import options as cli_options
from toolkit.cli.kube_options import env_pairs
from toolkit.cli.kube_output import log_progress
from toolkit.errors import EnvironmentProblem, VerificationFailed
from toolkit.kube import guard
from toolkit.kube.plan import superuser_for
from toolkit.resources import container_dir

SCRIPT_NAMES = ("collect.sh", "upgrade.sh", "lib.sh")
Connect = Callable[[str | None, str | None], Any]  # (kubeconfig, context) → toolkit.kube.api.Kube
Hook = Callable[[Any], None]


def load_scripts(folder: Path | None = None, *, required: bool = True) -> dict[str, str]:
    """The in-container scripts shipped in toolkit/container/ (name → content)."""
    folder = folder or container_dir()
    scripts = {p.name: p.read_text() for p in sorted(folder.glob("*.sh"))} if folder.is_dir() else {}
    missing = [n for n in SCRIPT_NAMES[:2] if n not in scripts]
    if missing and required:
        raise EnvironmentProblem(
            f"the container scripts {', '.join(missing)} are missing from {folder}",
            "reinstall pgleap; the Job needs them",
        )
    return scripts


@dataclass
class Deps:
    """What the commands call besides the runtime: injected by `register` (tests pass fakes).

    `connect(kubeconfig, context)` builds the `toolkit.kube.api.Kube`;
    `post_upgrade(ctx)` is the engine's post-upgrade/verify step (`HookContext`);
    `job_env(facts)` adds the engine's env for the Job (superuser, initdb flags, …);
    `standby_probe(ctx, slots)` returns the replication slots that stream from the new primary;
    `rehearsal_hooks()` gives the database steps of `rehearse sts` (`RehearsalHooks`);
    `preflight(ctx, images, pgdata=, scripts=)` reads the live cluster before the stop (kube_inspect);
    `scripts(folder=None, required=True)` loads the in-container scripts;
    `data_proof` (DataProof) fingerprints the old cluster after the stop and the new one before the switch.
    """

    connect: Connect | None = None
    post_upgrade: Hook | None = None
    job_env: Callable[[Any], dict[str, str]] | None = None
    standby_probe: Callable[[Any, tuple[str, ...]], Any] | None = None
    rehearsal_hooks: Callable[[], Any] | None = None
    preflight: Callable[..., Any] | None = None
    scripts: Callable[..., dict[str, str]] = load_scripts
    data_proof: Any = None


_deps: list[Deps] = [Deps()]


def configure(deps: Deps) -> None:
    """Set the dependencies every command uses (called by `register`)."""
    _deps[0] = deps


def deps() -> Deps:
    return _deps[0]


def scripts(required: bool = True) -> dict[str, str]:
    return deps().scripts(required=required)


def kube_for(kubeconfig: str | None, context: str | None) -> Any:
    connect = deps().connect
    if connect is not None:
        return connect(kubeconfig, context)
    from toolkit.kube.api import Kube

    return Kube.connect(kubeconfig, context)


def runtime_for(kubeconfig: str | None, context: str | None, output: str) -> Any:
    from toolkit.kube.runtime import KubeRuntime

    return KubeRuntime(kube_for(kubeconfig, context), log=log_progress, proof=deps().data_proof)


def ns_for(namespace: str | None, kubeconfig: str | None, context: str | None) -> str:
    if namespace:
        return namespace
    from toolkit.kube.api import Kube

    return Kube.default_namespace(kubeconfig, context)


def env_for(facts: Any, superuser: str | None, initdb_args: str, set_env: list[str] | None) -> dict[str, str]:
    job_env = deps().job_env
    env = dict(job_env(facts)) if job_env else {}
    extra = env_pairs(set_env)
    given = superuser or extra.get("PGLEAP_SUPERUSER") or env.get("PGLEAP_SUPERUSER")
    env["PGLEAP_SUPERUSER"] = superuser_for(facts, given)
    if initdb_args:
        env["PGLEAP_INITDB_ARGS"] = initdb_args
    env.update(extra)
    return env


def with_way_forward(rt: Any, namespace: str, name: str, run: Callable[[], Any]) -> Any:
    """`run`, with an exit 4 of the fingerprint comparison naming the command that moves forward.

    Past the point of no return (link/swap) rollback is gone; `resume sts --accept fingerprint`
    starts the upgraded data once the operator has read the differences (as on Docker)."""
    try:
        return run()
    except VerificationFailed as exc:
        state = rt.read_state(namespace, name)
        # exit 4 in `compared` leaves phase upgraded; in `proved` (after the extension updates), compared
        if state is not None and state.operation == "upgrade" and state.phase in ("upgraded", "compared"):
            cmd = f"{cli_options.prog()} resume sts {name} -n {namespace} --accept fingerprint"
            exc.hint = f"{exc.hint}; or start the upgraded database as it is with `{cmd}`"
        raise


def overrides(argo: bool, flux: bool, helm: bool, tf: bool, owner: bool) -> guard.GuardOverrides:
    return guard.GuardOverrides(argo, flux, helm, tf, owner)
