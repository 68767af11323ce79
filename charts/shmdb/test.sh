#!/usr/bin/env bash
# Checks the Helm chart offline: the chart's CRD equals the generated one, `helm lint` and
# `helm template` pass with the default values and with every option on
# (ci/all-options-values.yaml), and every rendered object, and every example under
# examples/, validates strictly against the Kubernetes OpenAPI schema (validate.py). Also
# checks the image's Dockerfile (check_dockerfile.py): multi-stage, non-root, and exactly
# the workspace's binaries.
#
# Tools come from package registries and are cached in $SHMDB_TOOLS (default
# ~/.cache/shmdb-tools): helm is built with `go install` from the Go module proxy; the
# Kubernetes OpenAPI spec and the Prometheus Operator's CRDs are read from their Go modules
# (`go mod download`); the Python checks need PyYAML, jsonschema and dockerfile (PyPI).
#
#   charts/shmdb/test.sh               check everything
#   charts/shmdb/test.sh --update-crds copy crds/shmdbs.yaml into the chart first
set -euo pipefail
cd "$(dirname "$0")/../.."

HELM_VERSION=v3.19.5
KUBERNETES_VERSION=v1.34.4
PROMETHEUS_OPERATOR_VERSION=v0.85.0
TOOLS="${SHMDB_TOOLS:-$HOME/.cache/shmdb-tools}"
CHART=charts/shmdb
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

if [[ "${1:-}" == "--update-crds" ]]; then
  cp crds/shmdbs.yaml "$CHART/crds/shmdbs.yaml"
fi

echo "== chart CRD is the generated one"
if ! cmp -s crds/shmdbs.yaml "$CHART/crds/shmdbs.yaml"; then
  echo "$CHART/crds/shmdbs.yaml differs from crds/shmdbs.yaml; run $0 --update-crds" >&2
  exit 1
fi

echo "== tools"
HELM="$TOOLS/helm-$HELM_VERSION/helm"
if [[ ! -x "$HELM" ]]; then
  mkdir -p "$(dirname "$HELM")"
  GOBIN="$(dirname "$HELM")" GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
module_dir() { go mod download -json "$1@$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }
SWAGGER="$(module_dir k8s.io/kubernetes "$KUBERNETES_VERSION")/api/openapi-spec/swagger.json"
MONITORING_CRDS="$(module_dir github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION")/example/prometheus-operator-crd"
python3 -c 'import yaml, jsonschema' 2>/dev/null || python3 -m pip install --quiet pyyaml jsonschema
python3 -c 'import dockerfile' 2>/dev/null || python3 -m pip install --quiet "dockerfile==3.4.0"
"$HELM" version --short

validate() {
  python3 "$CHART/validate.py" --swagger "$SWAGGER" --crd crds/shmdbs.yaml \
    --crd "$MONITORING_CRDS/monitoring.coreos.com_servicemonitors.yaml" \
    --crd "$MONITORING_CRDS/monitoring.coreos.com_podmonitors.yaml" "$@"
}

echo "== the validator rejects what the API server would"
cat > "$OUT/broken.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec: {containers: [{name: c, image: i, imagePullPolicy: Always, unknownField: 1}]}
YAML
if validate "$OUT/broken.yaml" > "$OUT/broken.log"; then
  cat "$OUT/broken.log"; echo "validate.py accepted an unknown field" >&2; exit 1
fi

echo "== helm lint"
"$HELM" lint --strict --kube-version "$KUBERNETES_VERSION" "$CHART"
"$HELM" lint --strict --kube-version "$KUBERNETES_VERSION" "$CHART" -f "$CHART/ci/all-options-values.yaml"

echo "== helm template (defaults)"
"$HELM" template shmdb "$CHART" --namespace shmdb-system --include-crds --kube-version "$KUBERNETES_VERSION" > "$OUT/default.yaml"
validate "$OUT/default.yaml"

echo "== helm template (every option on)"
"$HELM" template shmdb "$CHART" --namespace shmdb-system --include-crds --kube-version "$KUBERNETES_VERSION" \
  -f "$CHART/ci/all-options-values.yaml" > "$OUT/all.yaml"
validate "$OUT/all.yaml"
# Every optional object is really rendered.
for kind in DaemonSet ServiceMonitor PodMonitor Role RoleBinding; do
  grep -q "^kind: $kind\$" "$OUT/all.yaml" || { echo "no $kind rendered with every option on" >&2; exit 1; }
done
dashboards=$(ls "$CHART"/dashboards/*.json | wc -l)
[[ $(grep -c 'grafana_dashboard: "1"' "$OUT/all.yaml") -eq $dashboards ]] \
  || { echo "expected $dashboards dashboard ConfigMaps" >&2; exit 1; }
# Without the options none of them is.
for kind in DaemonSet ServiceMonitor PodMonitor Role RoleBinding; do
  if grep -q "^kind: $kind\$" "$OUT/default.yaml"; then echo "$kind rendered by default" >&2; exit 1; fi
done

echo "== examples"
validate examples/*.yaml

echo "== Dockerfile (parsed by Docker's parser; no daemon here)"
python3 "$CHART/check_dockerfile.py" .
grep -v '^COPY --from=builder /out/crdgen' Dockerfile > "$OUT/Dockerfile.missing-bin"
sed 's/^USER 10001:10001$/USER 0/' Dockerfile > "$OUT/Dockerfile.root"
for broken in "$OUT/Dockerfile.missing-bin" "$OUT/Dockerfile.root"; do
  if python3 "$CHART/check_dockerfile.py" . "$broken" > "$OUT/dockerfile.log"; then
    cat "$OUT/dockerfile.log"; echo "check_dockerfile.py accepted $broken" >&2; exit 1
  fi
done
echo "chart checks passed"
