#!/usr/bin/env bash
# The e2e suite in one command: builds (or reuses) the control plane, brings it up on
# 127.0.0.1, installs the CRD and the operator's RBAC, runs two operator replicas as
# processes with a ServiceAccount token, runs `cargo test -p shmdb-e2e`, and tears it all
# down. Nodes are simulated by kwok; storage pods get host storage-node processes from the
# tests (SHMDB_E2E_DATA_PLANE=host). One real node (kubelet + containerd, tainted so only
# tests/real_pods.rs uses it) is added when it can be, with the chart's operator running
# in-cluster there (2 replicas) for the databases labelled shmdb.io/operator=in-cluster;
# the host operators then take every other database. SHMDB_E2E_REAL_PODS=0 skips the real
# node (host operators manage everything), and if it or its operator fails to come up the
# suite runs without it (loudly). SHMDB_E2E_KEEP=1 leaves the cluster running.
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

if ! command -v etcd >/dev/null && [[ -z "${SHMDB_E2E_ETCD:-}" && "${SHMDB_E2E_BUILD_ETCD:-0}" != 1 ]]; then
  log "installing Debian's etcd-server"
  apt-get update -qq && apt-get install -y -qq etcd-server >/dev/null
fi
for tool in go openssl curl; do
  command -v "$tool" >/dev/null || { echo "e2e needs $tool on PATH" >&2; exit 1; }
done
want_real="${SHMDB_E2E_REAL_PODS:-1}"
if [[ "$want_real" == 1 ]]; then
  # The real node's kubelet is built like the control plane (about 6 min uncached).
  if ! SHMDB_E2E_BUILD_KUBELET=1 "$here/harness/build.sh"; then
    log "!!! BUILDING THE KUBELET FAILED: no real node; tests/real_pods.rs will skip"
    want_real=0
    "$here/harness/build.sh"
  fi
else
  "$here/harness/build.sh"
fi
log "building the operator, the data-plane binaries (the real node's image) and e2e-dns"
(cd "$repo" && cargo build -j2 -p shmdb-operator --bin operator \
  -p shmdb-storage-node --bin storage-node -p shmdb-processing-node --bin processing-node \
  -p shmdb-commit-manager --bin commit-manager -p shmdb-e2e --bin e2e-dns)
(cd "$repo" && cargo test -j2 -p shmdb-e2e --no-run)

kubeconfig="$("$here/harness/up.sh" | tail -n 1)"
export KUBECONFIG="$kubeconfig"
kubectl="$K8S_BIN/kubectl"

real_pods=0
if [[ "$want_real" == 1 ]]; then
  log "adding the real node (kubelet, containerd, cluster DNS) and importing the project image"
  real_started=$(date +%s)
  if SHMDB_E2E_BIN_DIR="$target/debug" "$here/harness/real-node.sh" &&
    SHMDB_E2E_BIN_DIR="$target/debug" "$here/harness/image.sh"; then
    real_pods=1
    log "real node ready in $(($(date +%s) - real_started))s"
  else
    log "!!! THE REAL NODE DID NOT COME UP: tests/real_pods.rs will skip (logs: $state/logs/kubelet.log, containerd.log, e2e-dns.log)"
  fi
fi

log "installing the CRD and the operator's RBAC"
"$kubectl" apply --server-side -f "$repo/crds/shmdbs.yaml" >/dev/null
# `kubectl wait` fails outright while the new CRD has no status yet; ask until it answers.
for attempt in $(seq 1 120); do
  "$kubectl" wait --for condition=established --timeout=30s \
    crd/sharedmemdatabases.shmdb.io >/dev/null 2>&1 && break
  ((attempt < 120)) || { echo "the CRD was not established" >&2; exit 1; }
  sleep 0.5
done
"$kubectl" apply -f "$here/manifests/operator-rbac.yaml" >/dev/null

# The real node's databases get the chart's operator, in-cluster; the host operators get
# the complementary selector, so no database has two operators (README "Real pods").
in_cluster=0
host_selector=""
if ((real_pods)); then
  log "installing the chart's operator on the real node (in-cluster, 2 replicas)"
  if SHMDB_E2E_IMAGE="${SHMDB_E2E_IMAGE:-shmdb.local/shmdb:e2e}" "$here/harness/in-cluster-operator.sh"; then
    in_cluster=1
    host_selector="shmdb.io/operator!=in-cluster"
  else
    log "!!! THE IN-CLUSTER OPERATOR DID NOT BECOME AVAILABLE: tests/real_pods.rs will skip (logs: $state/logs/pods)"
    real_pods=0
  fi
fi

token="$("$kubectl" create token shmdb-operator -n shmdb-system --duration=24h)"
operator_kubeconfig="$state/operator.kubeconfig"
server="$("$kubectl" config view -o jsonpath='{.clusters[0].cluster.server}')"
KUBECONFIG="$operator_kubeconfig" "$kubectl" config set-cluster e2e --server="$server" \
  --certificate-authority="$state/pki/ca.crt" --embed-certs=true >/dev/null
KUBECONFIG="$operator_kubeconfig" "$kubectl" config set-credentials operator --token="$token" >/dev/null
KUBECONFIG="$operator_kubeconfig" "$kubectl" config set-context e2e --cluster=e2e --user=operator >/dev/null
KUBECONFIG="$operator_kubeconfig" "$kubectl" config use-context e2e >/dev/null

# Two replicas, each replaced when it dies by a new one with a new identity, as a
# Deployment replaces a lost pod with a new pod name; a test kills the replica holding a
# placement Lease through its pid file.
mkdir -p "$state/operators"
for replica in a b; do
  (
    generation=0
    while [[ ! -e "$state/stopping" ]]; do
      identity="shmdb-operator-$replica$generation"
      KUBECONFIG="$operator_kubeconfig" POD_NAME="$identity" \
        SHMDB_OPERATOR_SELECTOR="$host_selector" \
        SHMDB_OPERATOR_METRICS_LISTEN=127.0.0.1:0 SHMDB_LOG_FORMAT=json \
        RUST_LOG="${RUST_LOG:-info}" \
        "$target/debug/operator" >>"$state/logs/$identity.log" 2>&1 &
      echo $! >"$state/operators/$identity.pid"
      wait $! || true
      rm -f "$state/operators/$identity.pid"
      generation=$((generation + 1))
      sleep 1
    done
  ) &
  echo "$! operator-$replica-supervisor" >>"$state/pids"
done

log "running the e2e tests"
tests_started=$(date +%s)
SHMDB_E2E=1 SHMDB_E2E_KUBECTL="$kubectl" SHMDB_E2E_DATA_PLANE=host \
  SHMDB_E2E_REAL_PODS="$real_pods" SHMDB_E2E_IN_CLUSTER_OPERATOR="$in_cluster" \
  SHMDB_E2E_DNS="${SHMDB_E2E_POD_GATEWAY:-10.88.0.1}:53" \
  SHMDB_E2E_OPERATOR_PIDS="$state/operators" SHMDB_E2E_LOGS="$state/logs" \
  SHMDB_E2E_BIN_DIR="$target/debug" \
  bash -c "cd '$repo' && cargo test -j2 --no-fail-fast -p shmdb-e2e -- --test-threads=4 $*"
log "tests took $(($(date +%s) - tests_started))s"
