#!/usr/bin/env bash
# Installs the chart's operator (charts/shmdb, rendered with `helm template`) onto the real
# node and waits until its Deployment is available: 2 replicas of the project image
# (image.sh), the chart's ServiceAccount and RBAC, in-cluster configuration (no kubeconfig
# file). It manages only the databases labelled shmdb.io/operator=in-cluster (the chart's
# operator.selector); run.sh gives the host-process operators the complementary selector,
# so no database is managed by both. Run after real-node.sh, image.sh and the CRD; on
# failure it removes what it applied, so no stray operator remains. See e2e/README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=e2e/harness/env.sh
source "$here/env.sh"
state="$SHMDB_E2E_STATE"
kubectl=("$K8S_BIN/kubectl" --kubeconfig "$state/admin.kubeconfig")
: "${SHMDB_E2E_IMAGE:=shmdb.local/shmdb:e2e}"
: "${SHMDB_E2E_OPERATOR_RELEASE:=shmdb-e2e}"
: "${SHMDB_E2E_OPERATOR_NAMESPACE:=shmdb-system}"
# The label that hands a database to this operator (tests/real_pods.rs sets it).
label="shmdb.io/operator=in-cluster"

# helm as the chart's own check builds it (same version, same cache).
helm_version="$(sed -n 's/^HELM_VERSION=//p' "$repo/charts/shmdb/test.sh")"
helm="${SHMDB_TOOLS:-$HOME/.cache/shmdb-tools}/helm-$helm_version/helm"
if [[ ! -x "$helm" ]]; then
  log "building helm $helm_version (go install; cached in $(dirname "$helm"))"
  mkdir -p "$(dirname "$helm")"
  GOBIN="$(dirname "$helm")" go install "helm.sh/helm/v3/cmd/helm@$helm_version"
fi

values="$state/in-cluster-operator.values.yaml"
cat >"$values" <<YAML
image:
  repository: ${SHMDB_E2E_IMAGE%:*}
  tag: ${SHMDB_E2E_IMAGE##*:}
  pullPolicy: Never
operator:
  replicas: 2
  selector: "$label"
  # No kube-proxy here: the \`kubernetes\` Service's ClusterIP routes nowhere, so the pods
  # are pointed at the API server's forwarder on their gateway (real-node.sh).
  extraEnv:
    - {name: KUBERNETES_SERVICE_HOST, value: "$SHMDB_E2E_POD_GATEWAY"}
    - {name: KUBERNETES_SERVICE_PORT, value: "$SHMDB_E2E_API_PORT"}
    - {name: RUST_LOG, value: "${RUST_LOG:-info}"}
  nodeSelector: {shmdb.io/e2e-real: "true"}
  tolerations:
    - {key: shmdb.io/e2e-real, operator: Exists, effect: NoSchedule}
dashboards:
  enabled: false
YAML
rendered="$state/in-cluster-operator.yaml"
"$helm" template "$SHMDB_E2E_OPERATOR_RELEASE" "$repo/charts/shmdb" \
  --namespace "$SHMDB_E2E_OPERATOR_NAMESPACE" --kube-version "$K8S_VERSION" -f "$values" >"$rendered"

deployment="deployment/$SHMDB_E2E_OPERATOR_RELEASE-operator"
"${kubectl[@]}" create namespace "$SHMDB_E2E_OPERATOR_NAMESPACE" --dry-run=client -o yaml |
  "${kubectl[@]}" apply -f - >/dev/null
"${kubectl[@]}" apply -n "$SHMDB_E2E_OPERATOR_NAMESPACE" -f "$rendered" >/dev/null
if ! "${kubectl[@]}" -n "$SHMDB_E2E_OPERATOR_NAMESPACE" rollout status "$deployment" --timeout=180s >&2; then
  echo "the in-cluster operator did not become available; its pods:" >&2
  "${kubectl[@]}" -n "$SHMDB_E2E_OPERATOR_NAMESPACE" describe pods \
    -l app.kubernetes.io/component=operator >&2 || true
  "${kubectl[@]}" delete -n "$SHMDB_E2E_OPERATOR_NAMESPACE" -f "$rendered" \
    --ignore-not-found --wait=false >/dev/null || true
  exit 1
fi
log "in-cluster operator available ($SHMDB_E2E_OPERATOR_NAMESPACE/$SHMDB_E2E_OPERATOR_RELEASE-operator, selector $label)"
