"""What `upgrade.sh rollback-check` found on the volume, read from its output (pure).

One reading for both runtimes (Docker: toolkit/engine/undo.py; Kubernetes: a short Job,
toolkit/kube/decide.py). The rule itself lives in upgrade.sh: the new cluster "has run" once
its control data changed after pg_upgrade.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.core.facts import parse_results


@dataclass(frozen=True)
class Verdict:
    """What `upgrade.sh rollback-check` found (nothing was changed to find it)."""

    refusal: str  # "" when rollback is possible
    new_ran: bool
    switch_checkpoint: str  # the new cluster's checkpoint right after pg_upgrade
    now_checkpoint: str
    new_state: str

    @classmethod
    def from_output(cls, out: str) -> Verdict:
        r = dict(parse_results(out))
        return cls(
            refusal=r.get("refused", ""),
            new_ran=r.get("new_ran") == "yes",
            switch_checkpoint=r.get("switch_checkpoint", ""),
            now_checkpoint=r.get("now_checkpoint", ""),
            new_state=r.get("new_state", ""),
        )
