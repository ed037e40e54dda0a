"""Facts read from the fixture StatefulSets (and the objects around them)."""

from __future__ import annotations

import pytest

from tests.kube.conftest import load_docs, load_sts, of_kind
from toolkit.errors import Refused
from toolkit.kube.facts import gather
from toolkit.kube.image_ref import parse_image
from toolkit.kube.owners import detect_owners


def facts_of(name: str):
    docs = load_docs(name)
    return gather(
        load_sts(name),
        pvcs=of_kind(docs, "PersistentVolumeClaim"),
        pvs=of_kind(docs, "PersistentVolume"),
        pods=of_kind(docs, "Pod"),
        services=of_kind(docs, "Service"),
        pdbs=of_kind(docs, "PodDisruptionBudget"),
        snapshot_classes=of_kind(docs, "VolumeSnapshotClass"),
    )


@pytest.mark.parametrize(
    ("ref", "repo", "tag", "kind", "major"),
    [
        ("pgleap/postgis:13-3.1", "pgleap/postgis", "13-3.1", "official", 13),
        ("postgis/postgis:17-3.5-alpine", "postgis/postgis", "17-3.5-alpine", "official", 17),
        ("postgres:16.4", "postgres", "16.4", "official", 16),
        ("docker.io/library/postgres:18", "library/postgres", "18", "official", 18),
        (
            "docker.io/bitnamilegacy/postgresql:16.4.0-debian-12-r0",
            "bitnamilegacy/postgresql",
            None,
            "bitnami",
            16,
        ),
        ("localhost:5000/postgis/postgis:15-3.3@sha256:abc", "postgis/postgis", "15-3.3", "official", 15),
        ("kartoza/postgis:16-3.4", "kartoza/postgis", "16-3.4", "kartoza", 16),
        ("postgres:latest", "postgres", "latest", "official", None),
        ("postgres:9.6", "postgres", "9.6", "official", None),
        ("postgres@sha256:abc", "postgres", None, "official", None),
        ("timescale/timescaledb:2.14.2-pg16", "timescale/timescaledb", "2.14.2-pg16", "unknown", None),
    ],
)
def test_parse_image(ref: str, repo: str, tag: str | None, kind: str, major: int | None) -> None:
    img = parse_image(ref)
    assert (img.repository, img.kind, img.major) == (repo, kind, major)
    if tag is not None:
        assert img.tag == tag


def test_official_plain() -> None:
    f = facts_of("official-plain")
    assert (f.namespace, f.name, f.container) == ("geo", "gis", "postgres")
    assert f.image.major == 13 and f.image.kind == "official"
    assert (f.pgdata, f.pgdata_from_env) == ("/var/lib/postgresql/data", False)
    assert (f.data_claim, f.mount_path, f.sub_path, f.data_pvc) == (
        "data",
        "/var/lib/postgresql/data",
        "",
        "data-gis-0",
    )
    assert (f.uid, f.gid, f.fs_group) == (999, 999, None)
    assert f.replicas == 1 and f.termination_grace_seconds == 60
    assert f.pod_node == "node-a"
    assert f.superuser == "gis"  # POSTGRES_USER made the OID-10 role
    claim = f.data_claim_facts
    assert claim is not None and claim.exists
    assert (claim.size, claim.storage_class, claim.access_modes) == ("10Gi", "local-path", ("ReadWriteOnce",))
    assert claim.node_terms[0]["matchExpressions"][0]["values"] == ["node-a"]
    assert f.services == ("gis",)
    assert f.owners == ()
    assert (f.when_scaled, f.when_deleted) == ("Retain", "Retain")


def test_bitnami() -> None:
    f = facts_of("bitnami")
    assert f.image.kind == "bitnami" and f.image.major == 16
    assert (f.pgdata, f.mount_path, f.data_pvc) == (
        "/bitnami/postgresql/data",
        "/bitnami/postgresql",
        "data-pg-postgresql-0",
    )
    assert (f.uid, f.gid, f.fs_group) == (1001, 0, 1001)
    assert f.superuser == "postgres"
    assert f.services == ("pg-postgresql", "pg-postgresql-hl")
    assert f.pdbs == ("pg-postgresql",)
    assert f.snapshot_classes == ("ebs-snapclass",)
    assert f.data_claim_facts is not None and f.data_claim_facts.csi_driver == "ebs.csi.aws.com"
    kinds = {o.kind for o in f.owners}
    assert kinds == {"helm"}  # the instance label comes from Helm, not Argo CD
    helm = f.owners[0]
    assert (helm.name, helm.namespace) == ("pg", "db")


def test_sidecar_picks_the_postgres_container() -> None:
    f = facts_of("sidecar")
    assert f.container == "db"
    assert (f.data_claim, f.sub_path, f.data_pvc) == ("pgdata", "postgres", "pgdata-maps-0")
    assert (f.uid, f.gid, f.fs_group) == (999, 999, 999)
    assert f.data_claim_facts is not None and not f.data_claim_facts.exists  # no PVC seeded in this file


def test_when_scaled_delete() -> None:
    f = facts_of("when-scaled-delete")
    assert (f.when_scaled, f.when_deleted) == ("Delete", "Delete")
    assert (f.mount_path, f.sub_path, f.pgdata) == ("/var/lib/postgresql", "data", "/var/lib/postgresql/data")


def test_argo_owner() -> None:
    f = facts_of("argo")
    assert [(o.kind, o.name, o.certain) for o in f.owners] == [("argocd", "tiles", True)]


def test_flux_owner_and_alpine_uid() -> None:
    f = facts_of("flux")
    assert [(o.kind, o.name, o.namespace) for o in f.owners] == [
        ("flux-kustomization", "apps", "flux-system")
    ]
    assert (f.uid, f.gid) == (70, 70)


def test_groundhog_pgdata_below_mount() -> None:
    f = facts_of("groundhog2k")
    assert (f.pgdata, f.mount_path, f.data_claim) == (
        "/var/lib/postgresql/data/pg",
        "/var/lib/postgresql/data",
        "pg-data",
    )


def _meta(labels=None, annotations=None, owner_refs=None):
    meta = {"name": "x", "namespace": "n", "labels": labels or {}, "annotations": annotations or {}}
    if owner_refs:
        meta["ownerReferences"] = owner_refs
    return {"metadata": meta}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (_meta(labels={"app.kubernetes.io/instance": "x"}), [("argocd", False)]),
        (_meta(labels={"argocd.argoproj.io/instance": "x"}), [("argocd", True)]),
        (
            _meta(labels={"helm.toolkit.fluxcd.io/name": "pg", "app.kubernetes.io/managed-by": "Helm"}),
            [("flux-helmrelease", True), ("helm", True)],
        ),
        (_meta(labels={"app.kubernetes.io/managed-by": "Terraform"}), [("terraform", True)]),
        (_meta(annotations={"note": "created by terraform-provider-kubernetes"}), [("terraform", True)]),
        (
            _meta(owner_refs=[{"kind": "Cluster", "name": "c", "apiVersion": "x/v1", "uid": "u"}]),
            [("owner-reference", True)],
        ),
        (_meta(labels={"app": "x"}), []),
    ],
)
def test_detect_owners(obj, expected) -> None:
    assert [(o.kind, o.certain) for o in detect_owners(obj)] == expected


def test_two_postgres_containers_refused() -> None:
    sts = load_sts("sidecar")
    sts["spec"]["template"]["spec"]["containers"][1]["image"] = "postgres:15"
    sts["spec"]["template"]["spec"]["containers"][1]["volumeMounts"] = [{"name": "pgdata", "mountPath": "/x"}]
    with pytest.raises(Refused, match="cannot tell which container"):
        gather(sts)


def test_pgdata_from_secret_refused() -> None:
    sts = load_sts("sidecar")
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    env[0] = {"name": "PGDATA", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}
    with pytest.raises(Refused, match="cannot resolve"):
        gather(sts)


def test_unknown_tag_refused() -> None:
    sts = load_sts("official-plain")
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = "postgres:latest"
    with pytest.raises(Refused, match="major"):
        gather(sts)


def test_pgdata_off_volume_refused() -> None:
    sts = load_sts("sidecar")
    sts["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "/srv/pg"
    with pytest.raises(Refused, match="not on any volumeClaimTemplate"):
        gather(sts)
