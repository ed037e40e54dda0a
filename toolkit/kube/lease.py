"""One pgleap run at a time per StatefulSet, held in the cluster (not on one machine).

The holder is an annotation on the StatefulSet's state ConfigMap, written with the
ConfigMap's resourceVersion as a precondition: of two runs that read the same version,
the API server lets one write and answers the other 409. The upgrade creates the
ConfigMap with its holder already set (a create is atomic too). A holder left by a run
that died is detectable: same host and its process is gone (taken over with a note), or
shown with its host, pid and start time so an operator can clear it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from toolkit.core.process import pid_alive
from toolkit.errors import Refused
from toolkit.kube.api import Conflict, Kube

HOLDER = "pgleap.io/holder"
_ACTIVE: set[str] = set()  # holder ids this process holds right now


@dataclass(frozen=True)
class Holder:
    id: str
    operation: str
    host: str
    pid: int
    since: str

    def describe(self) -> str:
        return f"{self.operation} by pid {self.pid} on {self.host} since {self.since}"

    @staticmethod
    def parse(text: str | None) -> Holder | None:
        if not text:
            return None
        try:
            return Holder(**json.loads(text))
        except (ValueError, TypeError):
            return Holder("unreadable", "unknown run", "?", 0, text[:40])


class Lease:
    """Take, check and give back the holder annotation of one state ConfigMap."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        configmap: str,
        operation: str,
        *,
        host: str | None = None,
        pid: int | None = None,
        alive: Callable[[int], bool] = pid_alive,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.kube, self.namespace, self.configmap = kube, namespace, configmap
        self.alive, self.log = alive, log
        self.me = Holder(
            id=uuid.uuid4().hex[:12],
            operation=operation,
            host=host or socket.gethostname(),
            pid=os.getpid() if pid is None else pid,
            since=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )

    @property
    def annotation(self) -> dict[str, str]:
        """What the upgrade puts on the ConfigMap it creates (it holds the run from then on)."""
        _ACTIVE.add(self.me.id)
        return {HOLDER: json.dumps(asdict(self.me), sort_keys=True)}

    def _stale(self, other: Holder) -> bool:
        """A holder on this host whose process is gone, or an earlier run of this very process
        that has ended (one process runs its operations one after another)."""
        if other.host != self.me.host:
            return False
        if other.pid == self.me.pid:
            return other.id not in _ACTIVE
        return not self.alive(other.pid)

    def acquire(self) -> None:
        """Hold the run; `Refused` while another live run holds it."""
        cm = self.kube.get("ConfigMap", self.namespace, self.configmap)
        if cm is None:
            return  # nothing recorded: nothing to hold (the upgrade's create is the lock)
        meta = cm.get("metadata") or {}
        other = Holder.parse((meta.get("annotations") or {}).get(HOLDER))
        if other is not None and other.id != self.me.id:
            if not self._stale(other):
                raise Refused(
                    f"another pgleap run works on this StatefulSet: {other.describe()}",
                    "wait for it to finish; if that run is dead (its machine or pod is gone), release it with "
                    f"`kubectl -n {self.namespace} annotate configmap {self.configmap} {HOLDER}-`",
                )
            self.log(f"taking over from a run that died: {other.describe()}")
        patch: dict[str, Any] = {
            "metadata": {"resourceVersion": meta.get("resourceVersion"), "annotations": self.annotation}
        }
        try:
            self.kube.patch("ConfigMap", self.namespace, self.configmap, patch)
        except Conflict:
            raise Refused(
                "another pgleap run started on this StatefulSet at the same moment",
                "wait for it to finish (see `pgleap status sts NAME`)",
            ) from None
        _ACTIVE.add(self.me.id)

    def release(self) -> None:
        """Give the run back if this run still holds it; never fails the run it ends."""
        _ACTIVE.discard(self.me.id)
        try:
            cm = self.kube.get("ConfigMap", self.namespace, self.configmap)
            meta = (cm or {}).get("metadata") or {}
            held = Holder.parse((meta.get("annotations") or {}).get(HOLDER))
            if held is None or held.id != self.me.id:
                return
            patch = {
                "metadata": {"resourceVersion": meta.get("resourceVersion"), "annotations": {HOLDER: None}}
            }
            self.kube.patch("ConfigMap", self.namespace, self.configmap, patch)
        except Exception as exc:  # best effort: a holder left behind stays detectable as stale
            self.log(f"could not release the run's hold on {self.configmap}: {exc}")


def holder_of(cm: dict[str, Any] | None) -> Holder | None:
    """Who holds a state ConfigMap (for `status`)."""
    return Holder.parse((((cm or {}).get("metadata") or {}).get("annotations") or {}).get(HOLDER))
