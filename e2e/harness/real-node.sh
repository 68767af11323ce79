#!/usr/bin/env bash
# Adds one real node to the harness's cluster: containerd + runc + CNI bridge from Debian and
# a kubelet built from the Kubernetes modules (SHMDB_E2E_BUILD_KUBELET=1 build.sh), on
# cgroup v1. Run after up.sh; down.sh stops what this starts. Not yet used by run.sh: pods
# run (checked: a pod gets a bridge IP and goes Running), but shmdb's pods also need pod
# DNS names and Service VIPs (no cluster DNS, no kube-proxy here) and the project image;
# see e2e/README.md, "Real pods".
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

missing_pkgs=()
for pkg in containerd runc containernetworking-plugins; do
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
YAML

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
    --hostname-override real-node-0 --root-dir "$node/kubelet" >"$logs/kubelet.log" 2>&1 &
  echo $!
) kubelet" >>"$state/pids"
log "real node real-node-0 starting (kubelet log: $logs/kubelet.log)"
