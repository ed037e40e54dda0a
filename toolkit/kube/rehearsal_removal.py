"""Removing a rehearsal: only objects that carry the rehearsal's labels, the StatefulSet first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolkit.kube import objects
from toolkit.kube import rehearsal_manifests as kube_rehearsal
from toolkit.kube.runtime import KubeRuntime


class RehearsalRemoval:
    """`pgleap rehearse sts --remove` and the clean-up at the end of a rehearsal."""

    rt: KubeRuntime
    kube: Any
    log: Any

    # -- removal ------------------------------------------------------------------------------

    def _names(self, namespace: str, name: str) -> list[tuple[str, str]]:
        """(kind, name) of everything a rehearsal of `name` may create, the StatefulSet first."""
        rname = kube_rehearsal.rehearsal_name(name)
        claims = [
            ("PersistentVolumeClaim", pvc["metadata"]["name"])
            for pvc in self.kube.list(
                "PersistentVolumeClaim",
                namespace,
                label_selector=f"{kube_rehearsal.LABEL_REHEARSAL_OF}={kube_rehearsal.label_value(name)}",
            )
        ]
        return [
            ("StatefulSet", rname),
            ("Service", rname),
            ("Job", kube_rehearsal.clone_job_name(name)),
            *(("Job", objects.job_name(rname, a)) for a in ("prepare", "serve-old", "upgrade", "serve-new")),
            ("ConfigMap", objects.scripts_cm_name(rname)),
            ("ConfigMap", objects.state_cm_name(rname)),
            ("VolumeSnapshot", kube_rehearsal.snapshot_name(name)),
            *claims,
        ]

    def remove(self, namespace: str, name: str) -> list[str]:
        """Delete every object a rehearsal of `name` made: only those carrying its labels, the
        StatefulSet first (its pod must stop before its PVC can go)."""
        rname = kube_rehearsal.rehearsal_name(name)
        removed: list[str] = []
        for kind, obj_name in self._names(namespace, name):
            live = self.kube.get(kind, namespace, obj_name)
            if live is None or not self._ours(live, name, rname):
                continue
            self.kube.delete(kind, namespace, obj_name, propagation="Background")
            removed.append(f"{kind} {obj_name}")
            self.log(f"rehearsal: removed {kind} {obj_name}")
            if kind == "StatefulSet":
                self.kube.wait(
                    f"pod {rname}-0 to stop",
                    lambda: True if self.kube.get("Pod", namespace, f"{rname}-0") is None else None,
                    timeout=self.rt.t.delete + self.rt.t.stop_margin,
                    interval=self.rt.t.poll,
                )
        return removed

    @staticmethod
    def _ours(obj: Mapping[str, Any], name: str, rname: str) -> bool:
        """Made by a rehearsal of `name`: its own labels (the clone's upgrade Jobs and ConfigMaps
        carry them too). A name alone proves nothing: `rname` may be a real StatefulSet."""
        return kube_rehearsal.is_rehearsal_object(obj, name)
