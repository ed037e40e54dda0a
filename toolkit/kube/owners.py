"""Who else manages a StatefulSet (Argo CD, Flux, Helm, Terraform, an owner) and may undo
pgleap's change: read from its labels, annotations and ownerReferences (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Owner:
    """Something that manages the StatefulSet and may undo pgleap's change."""

    kind: str  # argocd | flux-kustomization | flux-helmrelease | helm | terraform | owner-reference
    name: str
    namespace: str
    evidence: str  # the label/annotation that gave it away
    certain: bool = True


def _meta_items(obj: Obj) -> tuple[dict[str, str], dict[str, str]]:
    meta = obj.get("metadata") or {}
    return dict(meta.get("labels") or {}), dict(meta.get("annotations") or {})


def detect_owners(sts: Obj) -> tuple[Owner, ...]:
    """Controllers and tools whose labels/annotations sit on the StatefulSet."""
    labels, ann = _meta_items(sts)
    meta = sts.get("metadata") or {}
    ns = meta.get("namespace") or ""
    owners: list[Owner] = []
    helm = labels.get("app.kubernetes.io/managed-by", "").lower() == "helm" or any(
        k.startswith("meta.helm.sh/") for k in ann
    )
    if "argocd.argoproj.io/tracking-id" in ann:
        app = ann["argocd.argoproj.io/tracking-id"].split(":", 1)[0]
        owners.append(Owner("argocd", app, "", "annotation argocd.argoproj.io/tracking-id"))
    elif "argocd.argoproj.io/instance" in labels:
        owners.append(
            Owner("argocd", labels["argocd.argoproj.io/instance"], "", "label argocd.argoproj.io/instance")
        )
    elif "app.kubernetes.io/instance" in labels and not helm:
        # Argo CD's label tracking uses this label, but so do Helm and many
        # hand-written manifests: report it as a possibility only.
        owners.append(
            Owner(
                "argocd",
                labels["app.kubernetes.io/instance"],
                "",
                "label app.kubernetes.io/instance without Helm labels (Argo CD label tracking?)",
                certain=False,
            )
        )
    if "kustomize.toolkit.fluxcd.io/name" in labels:
        owners.append(
            Owner(
                "flux-kustomization",
                labels["kustomize.toolkit.fluxcd.io/name"],
                labels.get("kustomize.toolkit.fluxcd.io/namespace", ""),
                "label kustomize.toolkit.fluxcd.io/name",
            )
        )
    if "helm.toolkit.fluxcd.io/name" in labels:
        owners.append(
            Owner(
                "flux-helmrelease",
                labels["helm.toolkit.fluxcd.io/name"],
                labels.get("helm.toolkit.fluxcd.io/namespace", ""),
                "label helm.toolkit.fluxcd.io/name",
            )
        )
    if helm:
        owners.append(
            Owner(
                "helm",
                ann.get("meta.helm.sh/release-name", labels.get("app.kubernetes.io/instance", "")),
                ann.get("meta.helm.sh/release-namespace", ns),
                "label app.kubernetes.io/managed-by=Helm or meta.helm.sh annotations",
            )
        )
    tf = [f"{k}={v}" for k, v in {**labels, **ann}.items() if "terraform" in f"{k}={v}".lower()]
    if tf:
        owners.append(Owner("terraform", "", ns, f"metadata mentions terraform: {', '.join(sorted(tf))}"))
    for ref in meta.get("ownerReferences") or []:
        owners.append(Owner("owner-reference", f"{ref.get('kind')}/{ref.get('name')}", ns, "ownerReferences"))
    return tuple(owners)
