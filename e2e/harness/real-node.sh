#!/usr/bin/env bash
# Adds one real node to the harness's cluster: containerd + runc + CNI bridge from Debian and
# a kubelet built from the Kubernetes modules (SHMDB_E2E_BUILD_KUBELET=1 build.sh), on
# cgroup v1, plus the cluster DNS its pods use (e2e-dns on the bridge's gateway address)
# and their way to the API server (a forwarder on the same address).
# The node is tainted and labelled shmdb.io/e2e-real=true, so only a test that tolerates
# and selects it (tests/real_pods.rs) puts pods there; kwok's nodes keep the others.
# Run after up.sh; waits until the node is Ready; down.sh stops what this starts. The
# project image comes from image.sh. See e2e/README.md, "Real pods".
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/harness/env.sh
source "$here/env.sh"
state="$SHMDB_E2E_STATE"
node="$state/real-node"
logs="$state/logs"
kubeconfig="$state/admin.kubeconfig"
: "${SHMDB_E2E_KUBELET_PORT:=20250}"
: "${SHMDB_E2E_POD_CIDR:=10.88.0.0/16}"
: "${SHMDB_E2E_DNS_METRICS_PORT:=20253}"
repo="$(cd "$here/../.." && pwd)"
bins="${SHMDB_E2E_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/debug}"

missing_pkgs=()
for pkg in containerd runc containernetworking-plugins socat; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing_pkgs+=("$pkg")
done
if ((${#missing_pkgs[@]})); then
  apt-get update -qq && apt-get install -y -qq "${missing_pkgs[@]}" >/dev/null
fi
[[ -x "$K8S_BIN/kubelet" ]] || SHMDB_E2E_BUILD_KUBELET=1 "$here/build.sh"

mkdir -p "$node/cni" "$node/kubelet"
sock="$node/containerd.sock"
cat >"$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd-root"
state = "$node/containerd-state"
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "shmdb.local/pause:e2e"
  # This sandbox refuses a negative oom_score_adj (the kubelet asks -998 for sandboxes):
  # runc then fails with "can't get final child's PID from pipe: EOF". Clamp it instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni"
TOML
cat >"$node/cni/10-e2e.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "e2e", "plugins": [
  {"type": "bridge", "bridge": "e2e0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$SHMDB_E2E_POD_CIDR"}]]}},
  {"type": "loopback"}]}
JSON
cat >"$node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 on these machines; 1.34 still runs there when told to.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
address: 127.0.0.1
port: $SHMDB_E2E_KUBELET_PORT
readOnlyPort: 0
healthzPort: 0
evictionHard: {}
localStorageCapacityIsolation: false
resolvConf: ""
# Containers' logs next to the harness's own (logs/pods/<ns>_<pod>_<uid>/<container>/).
podLogsDir: $logs/pods
# e2e-dns (below): Service and pod names from the API; there is no CoreDNS here.
clusterDNS: [$SHMDB_E2E_POD_GATEWAY]
clusterDomain: cluster.local
# Only pods that tolerate this (tests/real_pods.rs) land here; kwok's nodes keep the rest.
registerWithTaints:
- {key: shmdb.io/e2e-real, value: "true", effect: NoSchedule}
YAML

# The bridge exists before any pod (the CNI plugin adopts it), so the DNS responder can
# listen on its address from the start.
if ! ip link show e2e0 >/dev/null 2>&1; then
  ip link add e2e0 type bridge
fi
prefix="${SHMDB_E2E_POD_CIDR#*/}"
# (Not `ip … | grep -q` under pipefail: grep exits at the first match, `ip` may then die of
# SIGPIPE, and the pipeline counts as failed — a second run added the address again.)
[[ "$(ip -4 addr show dev e2e0)" == *"inet $SHMDB_E2E_POD_GATEWAY/"* ]] ||
  ip addr add "$SHMDB_E2E_POD_GATEWAY/$prefix" dev e2e0
ip link set e2e0 up
# The API server listens on 127.0.0.1 only; pods reach it on their gateway address through
# this forwarder (TLS passes through; the serving certificate names the gateway address),
# and the in-cluster operator is told so with KUBERNETES_SERVICE_HOST/PORT. There is no
# kube-proxy, so the `kubernetes` Service's ClusterIP routes nowhere (e2e/README.md).
echo "$(
  socat "TCP-LISTEN:$SHMDB_E2E_API_PORT,bind=$SHMDB_E2E_POD_GATEWAY,reuseaddr,fork,range=$SHMDB_E2E_POD_CIDR" \
    "TCP:127.0.0.1:$SHMDB_E2E_API_PORT" >"$logs/api-forward.log" 2>&1 &
  echo $!
) api-forward" >>"$state/pids"
[[ -x "$bins/e2e-dns" ]] || { echo "$bins/e2e-dns missing: cargo build -p shmdb-e2e --bin e2e-dns" >&2; exit 1; }
echo "$(
  KUBECONFIG="$kubeconfig" SHMDB_E2E_DNS_LISTEN="$SHMDB_E2E_POD_GATEWAY:53" \
    SHMDB_METRICS_LISTEN="127.0.0.1:$SHMDB_E2E_DNS_METRICS_PORT" SHMDB_LOG_FORMAT=json \
    "$bins/e2e-dns" >"$logs/e2e-dns.log" 2>&1 &
  echo $!
) e2e-dns" >>"$state/pids"

echo "$(
  containerd --config "$node/containerd.toml" >"$logs/containerd.log" 2>&1 &
  echo $!
) containerd" >>"$state/pids"
for _ in $(seq 1 60); do ctr --address "$sock" version >/dev/null 2>&1 && break; sleep 0.5; done

gcc -static -O2 -o "$node/pause" "$here/pause.c"
python3 "$here/oci-image.py" "$node/pause.tar" shmdb.local/pause:e2e /pause "$node/pause"
ctr --address "$sock" -n k8s.io images import "$node/pause.tar" >/dev/null

echo "$(
  "$K8S_BIN/kubelet" --config "$node/kubelet.yaml" --kubeconfig "$kubeconfig" \
    --hostname-override real-node-0 --root-dir "$node/kubelet" \
    --node-labels shmdb.io/e2e-real=true >"$logs/kubelet.log" 2>&1 &
  echo $!
) kubelet" >>"$state/pids"
log "real node real-node-0 starting (kubelet log: $logs/kubelet.log)"
for _ in $(seq 1 240); do
  [[ "$("$K8S_BIN/kubectl" --kubeconfig "$kubeconfig" get node real-node-0 \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] && break
  sleep 0.5
done
[[ "$("$K8S_BIN/kubectl" --kubeconfig "$kubeconfig" get node real-node-0 \
  -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] ||
  { echo "real-node-0 did not turn Ready within 120 s; see $logs/kubelet.log" >&2; exit 1; }
# The responder answers once it has listed Pods and Services (or has already failed).
dns_pid="$(awk '$2 == "e2e-dns" { pid = $1 } END { print pid }' "$state/pids")"
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$SHMDB_E2E_DNS_METRICS_PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$dns_pid" 2>/dev/null || break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$SHMDB_E2E_DNS_METRICS_PORT/readyz" >/dev/null ||
  { echo "e2e-dns is not ready; see $logs/e2e-dns.log" >&2; exit 1; }
log "real node real-node-0 Ready; cluster DNS on $SHMDB_E2E_POD_GATEWAY:53"
