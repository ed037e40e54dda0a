#!/usr/bin/env bash
# Rehearse a Kubernetes upgrade end to end on a throwaway kind cluster:
# create the cluster, load the two test images, apply the example PostGIS
# StatefulSet, seed data, apply manifests/rbac.yaml and act as its ServiceAccount (a token,
# not the admin kubeconfig), run `pgleap rehearse sts` (a clone, production untouched) and then
# `pgleap upgrade sts` with its real post-upgrade hook, check PostGIS at the target image's
# version and the data fingerprint on the new major, then delete the cluster (KEEP_CLUSTER=1 keeps it).
#
#   scripts/kind-rehearsal.sh                       # pgleap/postgis:13-3.1 -> 17-3.5
#   OLD_IMAGE=... NEW_IMAGE=... scripts/kind-rehearsal.sh
#   RUN_E2E=1 scripts/kind-rehearsal.sh             # also run tests/kube/test_e2e_cluster.py
set -euo pipefail

CLUSTER="${CLUSTER:-pgleap-rehearsal}"
OLD_IMAGE="${OLD_IMAGE:-pgleap/postgis:13-3.1}"
NEW_IMAGE="${NEW_IMAGE:-pgleap/postgis:17-3.5}"
NAMESPACE="${NAMESPACE:-geo}"
PGLEAP="${PGLEAP:-pgleap}"
PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KUBECONFIG_FILE="$(mktemp -t pgleap-kind.XXXXXX)"
export KUBECONFIG="$KUBECONFIG_FILE"

log() { printf '%s rehearsal: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

cleanup() {
    local rc=$?
    if [[ "${KEEP_CLUSTER:-0}" == "1" ]]; then
        log "keeping cluster $CLUSTER (kubeconfig $KUBECONFIG_FILE)"
    else
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
        rm -f "$KUBECONFIG_FILE" "$KUBECONFIG_FILE".*
    fi
    exit "$rc"
}
trap cleanup EXIT

for tool in kind kubectl docker "$PGLEAP"; do
    command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
for image in "$OLD_IMAGE" "$NEW_IMAGE"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "image $image is missing (pgleap images build)"
done

psql_in() {  # psql_in SQL: run SQL in the database pod, print unaligned tuples
    kubectl -n "$NAMESPACE" exec gis-0 -c postgres -- psql -U gis -d gis -v ON_ERROR_STOP=1 -tA -c "$1"
}

log "creating kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" --wait 180s
log "loading $OLD_IMAGE and $NEW_IMAGE"
kind load docker-image --name "$CLUSTER" "$OLD_IMAGE" "$NEW_IMAGE"

log "applying the example StatefulSet in namespace $NAMESPACE"
kubectl create namespace "$NAMESPACE"
kubectl -n "$NAMESPACE" create secret generic gis-db --from-literal=password="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
sed "s#image: pgleap/postgis:13-3.1#image: ${OLD_IMAGE}#" "$ROOT/manifests/examples/postgis-statefulset.yaml" \
    | kubectl -n "$NAMESPACE" apply -f -
kubectl -n "$NAMESPACE" rollout status statefulset/gis --timeout=300s
kubectl -n "$NAMESPACE" wait pod/gis-0 --for=condition=Ready --timeout=300s

log "seeding data"
psql_in "CREATE EXTENSION IF NOT EXISTS postgis;
         CREATE TABLE places (id serial PRIMARY KEY, name text, geom geometry(Point, 4326));
         INSERT INTO places (name, geom)
           SELECT 'p' || i, ST_SetSRID(ST_MakePoint(i % 360 - 180, i % 180 - 90), 4326)
           FROM generate_series(1, 10000) AS i;
         CREATE INDEX places_geom ON places USING gist (geom);" >/dev/null
fingerprint() {  # every row of the table, hashed in key order
    psql_in "SELECT count(*) || ' ' || md5(string_agg(p::text, ',' ORDER BY id)) FROM places p"
}
before="$(psql_in "SELECT count(*), sum(ST_X(geom))::bigint FROM places")"
fp_before="$(fingerprint)"
pvc_uid="$(kubectl -n "$NAMESPACE" get pvc data-gis-0 -o jsonpath='{.metadata.uid}')"
log "before: rows,sum = $before; PVC uid $pvc_uid"

log "acting as manifests/rbac.yaml's ServiceAccount from here on"
sed "s/NAMESPACE/$NAMESPACE/g" "$ROOT/manifests/rbac.yaml" | kubectl apply -f - >/dev/null
SA_KUBECONFIG="$KUBECONFIG_FILE.pgleap-sa"
server_url="$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')"
ca_data="$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
sa_config() { KUBECONFIG="$SA_KUBECONFIG" kubectl config "$@" >/dev/null; }
sa_config set-cluster kind --server="$server_url"
sa_config set clusters.kind.certificate-authority-data "$ca_data"
sa_config set-credentials pgleap --token="$(kubectl -n "$NAMESPACE" create token pgleap --duration=2h)"
sa_config set-context pgleap --cluster=kind --user=pgleap --namespace="$NAMESPACE"
sa_config use-context pgleap
[[ "$(KUBECONFIG="$SA_KUBECONFIG" kubectl auth can-i delete namespaces || true)" == "no" ]] \
    || die "the ServiceAccount's kubeconfig is not limited to the Role"

log "pgleap rehearse sts gis --to $NEW_IMAGE (production keeps running)"
# The official images have no replication line in pg_hba.conf; pg_basebackup needs one
# (md5 accepts md5- and SCRAM-stored passwords alike).
# shellcheck disable=SC2016  # $PGDATA expands in the pod
kubectl -n "$NAMESPACE" exec gis-0 -c postgres -- sh -c \
    'echo "host replication gis all md5" >> "$PGDATA/pg_hba.conf"'
psql_in "SELECT pg_reload_conf()" >/dev/null
pod_uid="$(kubectl -n "$NAMESPACE" get pod gis-0 -o jsonpath='{.metadata.uid}')"
"$PGLEAP" rehearse sts gis -n "$NAMESPACE" --to "$NEW_IMAGE" --kubeconfig "$SA_KUBECONFIG" -o json \
    >"$KUBECONFIG_FILE.rehearsal.json" || die "rehearsal said no-go: $(cat "$KUBECONFIG_FILE.rehearsal.json")"
log "rehearsal: go, predicted downtime $(sed -nE 's/.*"predicted_downtime_seconds": ([0-9.]+).*/\1/p' "$KUBECONFIG_FILE.rehearsal.json") s"
[[ "$(kubectl -n "$NAMESPACE" get pod gis-0 -o jsonpath='{.metadata.uid}')" == "$pod_uid" ]] \
    || die "production's pod was restarted by the rehearsal"
[[ -z "$(kubectl -n "$NAMESPACE" get statefulset,pvc,job -l pgleap.io/rehearsal-of=gis -o name)" ]] \
    || die "the rehearsal left objects behind"

grep -q '"identical": true' "$KUBECONFIG_FILE.rehearsal.json" || die "the rehearsal's fingerprint differs"

log "pgleap upgrade sts gis --to $NEW_IMAGE (with the post-upgrade hook, as the ServiceAccount)"
"$PGLEAP" upgrade sts gis -n "$NAMESPACE" --to "$NEW_IMAGE" --kubeconfig "$SA_KUBECONFIG" --no-snapshot --yes \
    2>"$KUBECONFIG_FILE.upgrade.log" || die "upgrade failed: $(tail -n 20 "$KUBECONFIG_FILE.upgrade.log")"
grep -q "extensions updated: " "$KUBECONFIG_FILE.upgrade.log" || die "the post-upgrade hook did not run"
kubectl -n "$NAMESPACE" wait pod/gis-0 --for=condition=Ready --timeout=300s

log "verifying"
image="$(kubectl -n "$NAMESPACE" get statefulset gis -o jsonpath='{.spec.template.spec.containers[0].image}')"
[[ "$image" == "$NEW_IMAGE" ]] || die "StatefulSet runs $image, expected $NEW_IMAGE"
[[ "$(kubectl -n "$NAMESPACE" get pvc data-gis-0 -o jsonpath='{.metadata.uid}')" == "$pvc_uid" ]] \
    || die "the data PVC was replaced"
postgis="$(psql_in "SELECT postgis_full_version()")"
log "postgis_full_version: $postgis"
[[ "$postgis" == *POSTGIS=* ]] || die "postgis_full_version() returned nothing useful"
[[ "$postgis" != *"need upgrade"* ]] || die "PostGIS needs an upgrade: $postgis"
installed="$(psql_in "SELECT extversion FROM pg_extension WHERE extname = 'postgis'")"
offered="$(psql_in "SELECT default_version FROM pg_available_extensions WHERE name = 'postgis'")"
[[ "$installed" == "$offered" ]] || die "PostGIS is $installed, the target image offers $offered"
server="$(psql_in "SHOW server_version_num")"
want_major="$(sed -E 's/.*:([0-9]+).*/\1/' <<<"$NEW_IMAGE")"
[[ "$((server / 10000))" == "$want_major" ]] || die "server is $server, expected major $want_major"
after="$(psql_in "SELECT count(*), sum(ST_X(geom))::bigint FROM places")"
[[ "$after" == "$before" ]] || die "data differs: before $before, after $after"
[[ "$(fingerprint)" == "$fp_before" ]] || die "the table's fingerprint differs after the upgrade"
"$PGLEAP" status sts gis -n "$NAMESPACE" --kubeconfig "$SA_KUBECONFIG"

if [[ "${RUN_E2E:-0}" == "1" ]]; then
    log "running tests/kube/test_e2e_cluster.py"
    (cd "$ROOT" && PGLEAP_E2E_KUBECONFIG="$KUBECONFIG_FILE" PGLEAP_E2E_OLD_IMAGE="$OLD_IMAGE" \
        PGLEAP_E2E_NEW_IMAGE="$NEW_IMAGE" "$PYTHON" -m pytest tests/kube/test_e2e_cluster.py -q)
fi
log "OK: $OLD_IMAGE -> $NEW_IMAGE, $after rows/sum unchanged"
