#!/usr/bin/env bash
# Brings up a control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok (simulated nodes), with certificates and a kubeconfig generated
# under $SHMDB_E2E_STATE. Waits until the API answers and the nodes are Ready, then prints
# the kubeconfig path. `down.sh` stops every process this started (by the pids it wrote).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/harness/env.sh
source "$here/env.sh"

: "${SHMDB_E2E_ETCD_PORT:=23790}"
: "${SHMDB_E2E_API_PORT:=26443}"
: "${SHMDB_E2E_NODES:=6}"
state="$SHMDB_E2E_STATE"
pki="$state/pki"
logs="$state/logs"
kubeconfig="$state/admin.kubeconfig"

if [[ -f "$state/pids" ]]; then
  log "a control plane from an earlier run is still recorded; stopping it first"
  "$here/down.sh"
fi
rm -rf "$state"
mkdir -p "$pki" "$logs" "$state/etcd"

if [[ "${SHMDB_E2E_BUILD_ETCD:-0}" == 1 ]]; then
  etcd_bin="$SHMDB_E2E_ETCD_DIR/etcd"
else
  etcd_bin="${SHMDB_E2E_ETCD:-$(command -v etcd || true)}"
fi
if [[ -z "$etcd_bin" ]]; then
  echo "etcd not found: apt-get install -y etcd-server (or set SHMDB_E2E_ETCD)" >&2
  exit 1
fi

# --- certificates -------------------------------------------------------------------
ossl() { openssl "$@" 2>>"$logs/openssl.log"; }
ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=shmdb-e2e-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
sign() { # name subject extfile
  ossl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr"
  ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 2 -extfile "$3" -out "$pki/$1.crt"
}
# The real node's pods reach the API server on their gateway address (real-node.sh).
cat >"$pki/server.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$SHMDB_E2E_POD_GATEWAY,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
cat >"$pki/client.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EXT
sign apiserver "/CN=kube-apiserver" "$pki/server.ext"
sign admin "/O=system:masters/CN=shmdb-e2e-admin" "$pki/client.ext"
ossl genrsa -out "$pki/sa.key" 2048
ossl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

api="https://127.0.0.1:$SHMDB_E2E_API_PORT"
KUBECONFIG="$kubeconfig" "$K8S_BIN/kubectl" config set-cluster e2e --server="$api" \
  --certificate-authority="$pki/ca.crt" --embed-certs=true >/dev/null
KUBECONFIG="$kubeconfig" "$K8S_BIN/kubectl" config set-credentials admin \
  --client-certificate="$pki/admin.crt" --client-key="$pki/admin.key" --embed-certs=true >/dev/null
KUBECONFIG="$kubeconfig" "$K8S_BIN/kubectl" config set-context e2e --cluster=e2e --user=admin >/dev/null
KUBECONFIG="$kubeconfig" "$K8S_BIN/kubectl" config use-context e2e >/dev/null
export KUBECONFIG="$kubeconfig"

# --- processes ----------------------------------------------------------------------
start() { # name command...
  local name="$1"
  shift
  "$@" >"$logs/$name.log" 2>&1 &
  echo "$! $name" >>"$state/pids"
}
wait_for() { # what seconds command...
  local what="$1" limit="$2"
  shift 2
  local deadline=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) > deadline)); then
      echo "timed out after ${limit}s waiting for $what; logs in $logs" >&2
      return 1
    fi
    sleep 0.5
  done
}

start etcd "$etcd_bin" --name e2e --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$SHMDB_E2E_ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$SHMDB_E2E_ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((SHMDB_E2E_ETCD_PORT + 1))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((SHMDB_E2E_ETCD_PORT + 1))" \
  --initial-cluster "e2e=http://127.0.0.1:$((SHMDB_E2E_ETCD_PORT + 1))" \
  --unsafe-no-fsync --quota-backend-bytes 2147483648
wait_for etcd 30 curl -fsS "http://127.0.0.1:$SHMDB_E2E_ETCD_PORT/health"

start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$SHMDB_E2E_ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$SHMDB_E2E_API_PORT" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode Node,RBAC --allow-privileged=true \
  --enable-priority-and-fairness=false --profiling=false
wait_for kube-apiserver 120 "$K8S_BIN/kubectl" get --raw /readyz

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" \
  --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$((SHMDB_E2E_API_PORT + 1))" \
  --leader-elect=false --use-service-account-credentials=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --allocate-node-cidrs=true --cluster-cidr 10.244.0.0/16 \
  --service-cluster-ip-range 10.96.0.0/16 \
  --horizontal-pod-autoscaler-sync-period 2s --profiling=false
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" \
  --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$((SHMDB_E2E_API_PORT + 2))" \
  --leader-elect=false --profiling=false
# kwok's own stage definitions (from its module source): nodes turn Ready and keep a
# heartbeat Lease, pods go Running/Ready at once and finish deletion.
stages="$GOMODCACHE/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
  pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  echo "---"
  cat "$stages/$f"
done >"$state/kwok-stages.yaml"
# Node Leases keep the simulated nodes Ready (without them the node controller marks them
# NotReady after its grace period and evicts their pods). kwok's informers ask for
# watch-list streams, which the apiserver refuses on etcd 3.4 (no RequestWatchProgress;
# 3.4.31+/3.5.13+ have it); each refusal leaves kwok's caches stale until a later list, and
# renewing a Lease from a stale copy fails with a conflict. The default etcd (built, 3.6)
# serves them; on any other, client-go's feature gate turns watch-list off for kwok.
KUBE_FEATURE_WatchListClient=false \
start kwok "$KWOK_BIN/kwok" --kubeconfig "$kubeconfig" \
  --config "$state/kwok-stages.yaml" --node-lease-duration-seconds 40 \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-ip 127.0.0.1 --cidr 10.244.0.1/16 --server-address 127.0.0.1:0

wait_for "the default ServiceAccount" 60 "$K8S_BIN/kubectl" get serviceaccount default
for i in $(seq 0 $((SHMDB_E2E_NODES - 1))); do
  echo "---"
  sed "s/NAME/kwok-node-$i/" "$here/../manifests/node.yaml"
done | "$K8S_BIN/kubectl" apply -f - >/dev/null
wait_for "$SHMDB_E2E_NODES Ready nodes" 60 bash -c \
  "[[ \$('$K8S_BIN/kubectl' get nodes --no-headers | grep -cw Ready) -ge $SHMDB_E2E_NODES ]]"
log "control plane up: KUBECONFIG=$kubeconfig"
echo "$kubeconfig"
