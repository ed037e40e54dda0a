"""A failed `upgrade sts` before the point of no return puts the old StatefulSet back by itself.

Issue 13's rule, as `undo.auto_restore` does for Docker: a failure in a phase where the new
cluster has not started (up to the upgrade Job) leaves the old data directory usable, so the
run rolls back on its own instead of leaving the database scaled to 0. upgrade.sh's read-only
`rollback-check` decides first (toolkit/kube/decide.py): a volume it refuses is left
as it is, with the way forward in the message. `--no-auto-restore` keeps the old behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from toolkit.errors import PgleapError
from toolkit.kube.model import Outcome, State

if TYPE_CHECKING:
    from toolkit.kube.runtime import KubeRuntime

# Recorded phases after which something was stopped and the failing step had not yet started
# the new cluster: the next step is at most the upgrade Job (pg_upgrade on the volume, undone by
# upgrade.sh rollback). Before them the primary still serves and nothing needs restoring.
BEFORE_NO_RETURN = ("replicas-stopped", "stopped", "snapshotted", "fingerprinted")


def restore_after_failure(rt: KubeRuntime, namespace: str, name: str, scripts: Mapping[str, str],
                          exc: PgleapError) -> None:  # fmt: skip
    """Roll back under the run's own hold when the failed run never started the new cluster;
    `exc` (re-raised by the caller) then says the database serves again, or why it does not."""
    from toolkit.kube import decide as kube_decide

    state = rt.read_state(namespace, name)
    if state is None or state.operation != "upgrade" or state.phase not in BEFORE_NO_RETURN:
        return
    out = Outcome("rollback", state.phase)
    try:
        kube_decide.decide(rt, state, scripts, out, None)
        rt._set_phase(state.plan, "rollback", "rollback-started", out)
        restored = State("rollback", "rollback-started", state.plan, state.original, state.read_original)
        rt._run_rollback(restored, scripts, out)
    except PgleapError as again:
        exc.hint = (
            f"the automatic restore did not finish either ({again.message}); "
            f"`pgleap rollback sts {name} -n {namespace}` retries it. {exc.hint}"
        )
        return
    exc.message += f"; {namespace}/{name} serves again on its old image (automatic restore)"
    exc.hint = (
        f"{exc.hint + '; then ' if exc.hint else ''}run the upgrade again once the cause is fixed "
        f"(`pgleap finalize sts {name} -n {namespace}` first clears pgleap's record of this run)"
    )
