#!/usr/bin/env bash
# The e2e suite in one command: builds (or reuses) the control plane, brings it up on
# 127.0.0.1, installs the CRD and the operator's RBAC, runs two operator replicas as
# processes with a ServiceAccount token, runs `cargo test -p shmdb-e2e`, and tears it all
# down. Nodes are simulated by kwok; storage pods get host storage-node processes from the
# tests (SHMDB_E2E_DATA_PLANE=host). SHMDB_E2E_KEEP=1 leaves the cluster running.
# Extra arguments go to the test binaries (e.g. a test name filter).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=e2e/harness/env.sh
source "$here/harness/env.sh"
state="$SHMDB_E2E_STATE"
target="${CARGO_TARGET_DIR:-$repo/target}"
started=$(date +%s)

finish() {
  local rc=$?
  if ((rc != 0)); then
    log "failed (exit $rc); last lines of each log in $state/logs:"
    for f in "$state"/logs/*.log; do
      [[ -f "$f" ]] || continue
      echo "--- $f" >&2
      tail -n 15 "$f" >&2
    done
  fi
  if [[ "${SHMDB_E2E_KEEP:-0}" != 1 ]]; then "$here/harness/down.sh"; fi
  log "e2e finished in $(($(date +%s) - started))s (exit $rc)"
}
trap finish EXIT

"$here/harness/build.sh"
log "building the operator and storage-node binaries"
(cd "$repo" && cargo build -j2 -p shmdb-operator --bin operator \
  -p shmdb-storage-node --bin storage-node)
(cd "$repo" && cargo test -j2 -p shmdb-e2e --no-run)

kubeconfig="$("$here/harness/up.sh" | tail -n 1)"
export KUBECONFIG="$kubeconfig"
kubectl="$K8S_BIN/kubectl"

log "installing the CRD and the operator's RBAC"
"$kubectl" apply --server-side -f "$repo/crds/shmdbs.yaml" >/dev/null
"$kubectl" wait --for condition=established --timeout=60s crd/sharedmemdatabases.shmdb.io >/dev/null
"$kubectl" apply -f "$here/manifests/operator-rbac.yaml" >/dev/null
token="$("$kubectl" create token shmdb-operator -n shmdb-system --duration=24h)"
operator_kubeconfig="$state/operator.kubeconfig"
server="$("$kubectl" config view -o jsonpath='{.clusters[0].cluster.server}')"
KUBECONFIG="$operator_kubeconfig" "$kubectl" config set-cluster e2e --server="$server" \
  --certificate-authority="$state/pki/ca.crt" --embed-certs=true >/dev/null
KUBECONFIG="$operator_kubeconfig" "$kubectl" config set-credentials operator --token="$token" >/dev/null
KUBECONFIG="$operator_kubeconfig" "$kubectl" config set-context e2e --cluster=e2e --user=operator >/dev/null
KUBECONFIG="$operator_kubeconfig" "$kubectl" config use-context e2e >/dev/null

# Two replicas, each restarted when it dies (as a Deployment would); a test kills the one
# holding a placement Lease through its pid file.
mkdir -p "$state/operators"
for identity in shmdb-operator-0 shmdb-operator-1; do
  (
    while [[ ! -e "$state/stopping" ]]; do
      KUBECONFIG="$operator_kubeconfig" POD_NAME="$identity" \
        SHMDB_OPERATOR_METRICS_LISTEN=127.0.0.1:0 SHMDB_LOG_FORMAT=json \
        RUST_LOG="${RUST_LOG:-info}" \
        "$target/debug/operator" >>"$state/logs/$identity.log" 2>&1 &
      echo $! >"$state/operators/$identity.pid"
      wait $! || true
      echo "restarting $identity" >>"$state/logs/$identity.log"
      sleep 1
    done
  ) &
  echo "$! $identity-supervisor" >>"$state/pids"
done

log "running the e2e tests"
tests_started=$(date +%s)
SHMDB_E2E=1 SHMDB_E2E_KUBECTL="$kubectl" SHMDB_E2E_DATA_PLANE=host \
  SHMDB_E2E_OPERATOR_PIDS="$state/operators" SHMDB_E2E_LOGS="$state/logs" \
  SHMDB_E2E_BIN_DIR="$target/debug" \
  bash -c "cd '$repo' && cargo test -j2 -p shmdb-e2e -- --test-threads=4 $*"
log "tests took $(($(date +%s) - tests_started))s"
