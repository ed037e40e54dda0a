"""`pgleap … sts NAME` and `pgleap render`: the Kubernetes commands, added to the CLI by `register`.

Each command is a module-level function (`kube_sts`, `kube_lifecycle`, `kube_render`) that only
parses options, calls the runtime once and prints; errors are the project's `PgleapError`
subclasses, turned into messages and exit codes by `toolkit.cli.app.main`. `-o json|yaml`
prints only data on stdout; progress goes to stderr.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from toolkit.cli import kube_deps, kube_lifecycle, kube_render, kube_sts
from toolkit.cli.kube_deps import Connect, Hook, load_scripts


def register(
    groups: dict[str, typer.Typer],
    app: typer.Typer,
    *,
    connect: Connect | None = None,
    post_upgrade: Hook | None = None,
    job_env: Callable[[Any], dict[str, str]] | None = None,
    standby_probe: Callable[[Any, tuple[str, ...]], Any] | None = None,
    rehearsal_hooks: Callable[[], Any] | None = None,
    preflight: Callable[..., Any] | None = None,
    data_proof: Any = None,
) -> None:
    """Add `sts NAME` to the inspect/plan/upgrade/status/resume/rollback/finalize/cleanup/rehearse groups and `render` to app.

    The dependencies are described on `kube_deps.Deps` (tests pass fakes)."""
    kube_deps.configure(
        kube_deps.Deps(
            connect=connect,
            post_upgrade=post_upgrade,
            job_env=job_env,
            standby_probe=standby_probe,
            rehearsal_hooks=rehearsal_hooks,
            preflight=preflight,
            data_proof=data_proof,
            # late-bound, so that replacing `toolkit.cli.kube.load_scripts` (tests) takes effect
            scripts=lambda folder=None, required=True: load_scripts(folder, required=required),
        )
    )
    groups["inspect"].command("sts")(kube_sts.inspect_sts)
    groups["plan"].command("sts")(kube_sts.plan_sts)
    groups["upgrade"].command("sts")(kube_sts.upgrade_sts)
    groups["status"].command("sts")(kube_sts.status_sts)
    groups["resume"].command("sts")(kube_lifecycle.resume_sts)
    groups["rollback"].command("sts")(kube_lifecycle.rollback_sts)
    groups["finalize"].command("sts")(kube_lifecycle.finalize_sts)
    groups["cleanup"].command("sts")(kube_lifecycle.cleanup_sts)
    groups["rehearse"].command("sts")(kube_lifecycle.rehearse_sts)
    app.command("render")(kube_render.render_cmd)
