"""The guard: refuse what a controller would undo or what would lose data."""

from __future__ import annotations

import dataclasses

import pytest

from tests.kube.test_kube_facts import facts_of
from toolkit.errors import Refused
from toolkit.kube.guard import GuardOverrides, check, problems
from toolkit.kube.image_ref import parse_image
from toolkit.kube.owners import Owner

PG17 = parse_image("pgleap/postgis:17-3.5")


def test_plain_official_passes() -> None:
    assert check(facts_of("official-plain"), PG17) == []


def test_argo_refused_with_pause_hint() -> None:
    with pytest.raises(Refused) as exc:
        check(facts_of("argo"), parse_image("postgis/postgis:17-3.5"))
    assert "Argo CD application 'tiles'" in exc.value.message
    assert "selfHeal: false" in exc.value.hint and "--allow-argocd" in exc.value.hint
    warnings = check(
        facts_of("argo"), parse_image("postgis/postgis:17-3.5"), GuardOverrides(allow_argocd=True), live=False
    )
    assert any("auto-sync" in w for w in warnings)


def test_flux_refused_with_suspend_hint() -> None:
    with pytest.raises(Refused) as exc:
        check(facts_of("flux"), parse_image("postgis/postgis:18-3.6-alpine"))
    assert "flux suspend kustomization apps -n flux-system" in exc.value.hint
    assert "kustomize.toolkit.fluxcd.io/reconcile=disabled" in exc.value.hint
    assert (
        check(
            facts_of("flux"),
            parse_image("postgis/postgis:18-3.6-alpine"),
            GuardOverrides(allow_flux=True),
            live=False,
        )
        != []
    )


def test_helm_refused_with_values_advice() -> None:
    target = parse_image("bitnamilegacy/postgresql:17.2.0-debian-12-r8")
    with pytest.raises(Refused) as exc:
        check(facts_of("bitnami"), target)
    assert "image.tag=17.2.0-debian-12-r8" in exc.value.hint and "helm upgrade pg" in exc.value.hint
    # allowed: no refusal, and the warning still says what to do with the chart afterwards
    warnings = check(facts_of("bitnami"), target, GuardOverrides(allow_helm=True))
    assert len(warnings) == 1 and "image.tag=17.2.0-debian-12-r8" in warnings[0], warnings
    assert "helm upgrade pg" in warnings[0]


def test_terraform_hint() -> None:
    f = dataclasses.replace(
        facts_of("official-plain"), owners=(Owner("terraform", "", "geo", "label managed-by=terraform"),)
    )
    with pytest.raises(Refused) as exc:
        check(f, PG17)
    assert "ignore_changes" in exc.value.hint and "prevent_destroy = true" in exc.value.hint
    warnings = check(f, PG17, GuardOverrides(allow_terraform=True))
    assert len(warnings) == 1 and "ignore_changes" in warnings[0] and PG17.ref in warnings[0], warnings


def test_when_scaled_delete_needs_retention_patch() -> None:
    f = facts_of("when-scaled-delete")
    found = problems(f, PG17, patch_retention=False, live=False)
    assert len(found) == 1 and "whenScaled=Delete" in found[0].message
    assert problems(f, PG17, patch_retention=True, live=False) == []


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"replicas": 3}, "3 replicas"),
        ({"replicas": 0}, "0 replicas"),
        ({"uid": None}, "which user"),
    ],
)
def test_refusals(change: dict, needle: str) -> None:
    f = dataclasses.replace(facts_of("official-plain"), **change)
    with pytest.raises(Refused, match=needle):
        check(f, PG17)


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("pgleap/postgis:13-3.1", "already runs PostgreSQL 13"),
        ("pgleap/postgis:latest", "cannot tell the PostgreSQL major from target"),
        ("bitnamilegacy/postgresql:17.2.0", "same family"),
    ],
)
def test_target_refusals(target: str, needle: str) -> None:
    with pytest.raises(Refused, match=needle):
        check(facts_of("official-plain"), parse_image(target))


def test_missing_pvc_refused_only_live() -> None:
    f = facts_of("sidecar")  # its PVC is not in the fixture file
    target = parse_image("postgis/postgis:17-3.5")
    with pytest.raises(Refused, match="pgdata-maps-0 does not exist"):
        check(f, target)
    assert check(f, target, live=False) == []


def test_all_problems_reported_at_once() -> None:
    f = dataclasses.replace(facts_of("argo"), replicas=2)
    found = problems(f, parse_image("postgis/postgis:17-3.5"), live=False)
    assert len(found) == 2
