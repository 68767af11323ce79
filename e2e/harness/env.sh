# Shared settings of the e2e harness, sourced by the other scripts. Every value can be
# overridden from the environment; the cache lives outside the repository so a fresh clone
# (CI) reuses binaries built by an earlier run on the same machine.
# shellcheck shell=bash

: "${SHMDB_E2E_CACHE:=$HOME/.cache/shmdb-e2e}"
# 1.34 is the newest minor whose kubelet still runs on cgroup v1 by default and whose
# apiserver accepts Debian's etcd 3.4.
: "${K8S_VERSION:=v1.34.4}"
: "${KWOK_VERSION:=v0.8.0}"
: "${SHMDB_E2E_ETCD_VERSION:=v3.6.16}"
# etcd is built from its Go module by default: Debian's 3.4 lacks RequestWatchProgress, so
# the apiserver refuses kwok's watch-list streams; kwok then works from stale caches, its
# node-Lease renewals fail with conflicts, the node controller marks the simulated nodes
# NotReady and evicts their pods (a CI run lost its storage tier that way). Set
# SHMDB_E2E_BUILD_ETCD=0 (Debian's etcd-server) or SHMDB_E2E_ETCD=/path to use another.
if [[ -n "${SHMDB_E2E_ETCD:-}" ]]; then
  : "${SHMDB_E2E_BUILD_ETCD:=0}"
else
  : "${SHMDB_E2E_BUILD_ETCD:=1}"
fi
: "${SHMDB_E2E_STATE:=${TMPDIR:-/tmp}/shmdb-e2e}"
# The API server's port on 127.0.0.1, and the real node's bridge address: its pods' gateway,
# their cluster DNS and, through a forwarder on the same port, their way to the API server
# (real-node.sh; the serving certificate names it too, up.sh).
: "${SHMDB_E2E_API_PORT:=26443}"
: "${SHMDB_E2E_POD_GATEWAY:=10.88.0.1}"
export SHMDB_E2E_API_PORT SHMDB_E2E_POD_GATEWAY
export SHMDB_E2E_CACHE K8S_VERSION KWOK_VERSION SHMDB_E2E_ETCD_VERSION SHMDB_E2E_STATE
export SHMDB_E2E_BUILD_ETCD
export GOMODCACHE="$SHMDB_E2E_CACHE/gomod"
export GOCACHE="$SHMDB_E2E_CACHE/gobuild"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export GOTOOLCHAIN=local
K8S_BIN="$SHMDB_E2E_CACHE/bin/kubernetes-$K8S_VERSION"
KWOK_BIN="$SHMDB_E2E_CACHE/bin/kwok-$KWOK_VERSION"
SHMDB_E2E_ETCD_DIR="$SHMDB_E2E_CACHE/bin/etcd-$SHMDB_E2E_ETCD_VERSION"
export K8S_BIN KWOK_BIN SHMDB_E2E_ETCD_DIR

log() { printf '[e2e %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
