"""Refuse a Kubernetes upgrade that something else would undo or that would lose data (pure).

A GitOps controller that self-heals puts the old StatefulSet back a minute after
pgleap deleted it: the old image then starts on a moved or upgraded data
directory. A `whenScaled: Delete` policy deletes the PVC when pgleap scales to 0.
Both are refused before anything changes; the owner checks can be overridden
with an explicit flag once the operator has paused the controller.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import Refused
from toolkit.kube.facts import StsFacts
from toolkit.kube.image_ref import ImageRef
from toolkit.kube.owners import Owner
from toolkit.kube.topology import Topology


@dataclass(frozen=True)
class GuardOverrides:
    """Explicit `--allow-*` flags: the operator says the owner is paused or handled."""

    allow_argocd: bool = False
    allow_flux: bool = False
    allow_helm: bool = False
    allow_terraform: bool = False
    allow_owner_reference: bool = False

    def allows(self, owner: Owner) -> bool:
        return {
            "argocd": self.allow_argocd,
            "flux-kustomization": self.allow_flux,
            "flux-helmrelease": self.allow_flux,
            "helm": self.allow_helm,
            "terraform": self.allow_terraform,
            "owner-reference": self.allow_owner_reference,
        }.get(owner.kind, False)


@dataclass(frozen=True)
class Problem:
    message: str
    hint: str
    owner: bool = False  # an owner that a flag can override (once paused), not a data problem


def owner_problem(owner: Owner, facts: StsFacts, target: ImageRef) -> Problem:
    """What this owner would do to the upgraded StatefulSet, and how to pause it."""
    p = _owner_problem(owner, facts, target)
    return Problem(p.message, p.hint, owner=True)


def _owner_problem(owner: Owner, facts: StsFacts, target: ImageRef) -> Problem:
    sts = f"StatefulSet {facts.namespace}/{facts.name}"
    tag = target.tag or target.ref
    if owner.kind == "argocd":
        seen = "is synced by" if owner.certain else "may be synced by"
        return Problem(
            f"{sts} {seen} Argo CD application {owner.name!r} ({owner.evidence}); self-heal would "
            "recreate the old StatefulSet on the upgraded volume",
            f"disable auto-sync for the application (remove spec.syncPolicy.automated, or set "
            f"selfHeal: false; e.g. `argocd app set {owner.name} --sync-policy none`), commit the manifests "
            "from `pgleap render` after the upgrade, then re-enable sync; rerun with --allow-argocd",
        )
    if owner.kind == "flux-kustomization":
        ns = f" -n {owner.namespace}" if owner.namespace else ""
        return Problem(
            f"{sts} is applied by Flux Kustomization {owner.name!r}; its next reconcile would put the "
            "old StatefulSet back",
            f"run `flux suspend kustomization {owner.name}{ns}` (or annotate the StatefulSet "
            "kustomize.toolkit.fluxcd.io/reconcile=disabled), commit the manifests from `pgleap render`, "
            f"then `flux resume kustomization {owner.name}{ns}`; rerun with --allow-flux",
        )
    if owner.kind == "flux-helmrelease":
        ns = f" -n {owner.namespace}" if owner.namespace else ""
        return Problem(
            f"{sts} belongs to Flux HelmRelease {owner.name!r}; an upgrade or drift correction of the "
            "release would put the old image back",
            f"run `flux suspend helmrelease {owner.name}{ns}`, set the image tag to {tag} in the "
            f"HelmRelease values after the upgrade, then `flux resume helmrelease {owner.name}{ns}`; "
            "rerun with --allow-flux",
        )
    if owner.kind == "helm":
        return Problem(
            f"{sts} belongs to Helm release {owner.name!r} (namespace {owner.namespace}); the next "
            "`helm upgrade` with the current values would put the old image back",
            f"after pgleap finishes, set the chart's image tag to {tag} (usually `--set image.tag={tag}`) "
            f"and run `helm upgrade {owner.name}` with those values; rerun with --allow-helm",
        )
    if owner.kind == "terraform":
        return Problem(
            f"{sts} looks managed by Terraform ({owner.evidence}); the next `terraform apply` would "
            "replace the new StatefulSet with the old one",
            "add `lifecycle { ignore_changes = [spec[0].template, spec[0].replicas] }` and "
            "`prevent_destroy = true` to the kubernetes_stateful_set resource (or change its image to "
            f"{target.ref} right after the upgrade); rerun with --allow-terraform",
        )
    return Problem(
        f"{sts} is owned by {owner.name}; that controller would recreate or revert it",
        "upgrade through the operator that owns it; rerun with --allow-owner-reference only if it is "
        "scaled down and will not touch the StatefulSet",
    )


def problems(
    facts: StsFacts,
    target: ImageRef,
    overrides: GuardOverrides = GuardOverrides(),
    *,
    patch_retention: bool = True,
    live: bool = True,
    topology: Topology | None = None,
) -> list[Problem]:
    """Everything that blocks the upgrade; empty when it may go ahead."""
    sts = f"StatefulSet {facts.namespace}/{facts.name}"
    out = _image_problems(sts, facts.image, target)
    out += _topology_problems(sts, facts, topology, live=live)
    if facts.uid is None:
        out.append(
            Problem(
                f"{sts}: cannot tell which user owns the data directory",
                "set securityContext.runAsUser in the StatefulSet",
            )
        )
    if live:
        claim = facts.data_claim_facts
        if claim is None or not claim.exists:
            out.append(
                Problem(
                    f"{sts}: PVC {facts.data_pvc} does not exist",
                    "pgleap upgrades the database on the StatefulSet's existing PVC",
                )
            )
    if "Delete" in (facts.when_scaled, facts.when_deleted) and not patch_retention:
        out.append(
            Problem(
                f"{sts} has persistentVolumeClaimRetentionPolicy whenScaled={facts.when_scaled}, "
                f"whenDeleted={facts.when_deleted}: scaling to 0 or deleting it would delete the "
                "database PVC",
                "let pgleap set the policy to Retain for the upgrade (drop --no-patch-retention); the new "
                "StatefulSet gets your policy back",
            )
        )
    out += [owner_problem(owner, facts, target) for owner in facts.owners if not overrides.allows(owner)]
    return out


def _image_problems(sts: str, src: ImageRef, target: ImageRef) -> list[Problem]:
    """Majors pgleap cannot tell, a target that is not newer, or another image family."""
    out: list[Problem] = []
    if target.major is None:
        out.append(
            Problem(
                f"cannot tell the PostgreSQL major from target image {target.ref}",
                "use a versioned tag such as postgis/postgis:17-3.5",
            )
        )
    if src.major is None:
        out.append(
            Problem(
                f"cannot tell the PostgreSQL major of the running image {src.ref}",
                "run a versioned tag first",
            )
        )
    if target.major is not None and src.major is not None and target.major <= src.major:
        out.append(
            Problem(
                f"{sts} already runs PostgreSQL {src.major}; target {target.ref} is "
                f"PostgreSQL {target.major}",
                "pick an image of a newer major",
            )
        )
    if target.kind != src.kind:
        out.append(
            Problem(
                f"{sts} runs {_a(src.kind)} image ({src.ref}) and the target is {_a(target.kind)} "
                "image: their data layout and user differ",
                "upgrade to a newer image of the same family",
            )
        )
    return out


def _topology_problems(sts: str, facts: StsFacts, topology: Topology | None, *, live: bool) -> list[Problem]:
    """Standbys pgleap cannot place: re-seeding them from the new primary needs to know which
    pods stream, from where, as whom; guessing would leave broken replicas behind."""
    if topology is not None and topology.problem:
        return [Problem(topology.problem, topology.hint)]
    out: list[Problem] = []
    if facts.replicas != 1 and (topology is None or topology.kind != "ordinals"):
        out.append(
            Problem(
                f"{sts} has {facts.replicas} replicas and no streaming standbys pgleap understands "
                "(ordinal 0 as primary with replication configured, or a <name>-primary/<name>-read pair)",
                "scale the StatefulSet to 1, or configure the standbys of ordinal 0 "
                "(POSTGRES_REPLICATION_USER / a pg_basebackup init container) so pgleap can re-seed them",
            )
        )
    missing = [sb.pvc for sb in topology.standbys if not sb.pvc_exists] if live and topology else []
    if missing:
        out.append(
            Problem(
                f"{sts}: the standbys' PVCs {', '.join(missing)} do not exist",
                "let the standbys start once (or scale their StatefulSet down to the ones that exist)",
            )
        )
    return out


def check(
    facts: StsFacts,
    target: ImageRef,
    overrides: GuardOverrides = GuardOverrides(),
    *,
    patch_retention: bool = True,
    live: bool = True,
    topology: Topology | None = None,
) -> list[str]:
    """Raise `Refused` listing every problem; return warnings that do not block."""
    found = problems(facts, target, overrides, patch_retention=patch_retention, live=live, topology=topology)
    if found:
        raise Refused("; ".join(p.message for p in found), " | ".join(p.hint for p in found))
    warnings = []
    claim = facts.data_claim_facts
    if claim and "ReadWriteOncePod" in claim.access_modes:
        warnings.append(
            f"PVC {claim.name} is ReadWriteOncePod: `pgleap finalize` must stop the database while its "
            "Job cleans the volume"
        )
    for owner in facts.owners:
        if overrides.allows(owner):
            warnings.append(owner_problem(owner, facts, target).hint.rsplit(";", 1)[0])
    if topology is not None and topology.has_standbys and topology.password_secret is None:
        warnings.append(
            f"the standbys' pg_basebackup connects as {topology.replication_user} without a password (no "
            "replication password Secret found): the primary's pg_hba.conf must trust it"
        )
    return warnings


def _a(word: str) -> str:
    """The article: "an official image", "a bitnami image"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
