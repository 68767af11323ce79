#!/usr/bin/env bash
# Builds the control-plane binaries (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, optionally kubelet) from the Kubernetes Go modules through the Go module proxy,
# and kwok from its own module. Everything lands in $SHMDB_E2E_CACHE (default
# ~/.cache/shmdb-e2e): the Go module cache, the Go build cache and bin/<version>/. A second
# run with the same version finds the binaries and returns at once.
#
# Why a generated go.mod: k8s.io/kubernetes replaces its staging modules (k8s.io/api, ...)
# with ./staging paths, which do not apply to a module that requires it; pinning each
# staging module to the matching published v0.X.Y version makes `go build` of the
# kubernetes commands work from the proxy alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/harness/env.sh
source "$here/env.sh"

want=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
if [[ "${SHMDB_E2E_BUILD_KUBELET:-0}" == 1 ]]; then want+=(kubelet); fi

missing=()
for b in "${want[@]}"; do [[ -x "$K8S_BIN/$b" ]] || missing+=("$b"); done

if ((${#missing[@]})); then
  mkdir -p "$K8S_BIN" "$GOCACHE" "$GOMODCACHE"
  src="$SHMDB_E2E_CACHE/src/kubernetes-$K8S_VERSION"
  mkdir -p "$src"
  if [[ ! -f "$src/go.mod" ]]; then
    log "generating $src/go.mod for k8s.io/kubernetes $K8S_VERSION"
    upstream_mod="$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
      sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
    staging_version="v0${K8S_VERSION#v1}"
    mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$upstream_mod")
    {
      echo "module shmdb.io/e2e-kubernetes"
      echo
      echo "go $(sed -n 's/^go \(.*\)/\1/p' "$upstream_mod")"
      echo
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo
      echo "replace ("
      for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
      echo ")"
    } >"$src/go.mod.tmp"
    mv "$src/go.mod.tmp" "$src/go.mod"
  fi
  ver="$K8S_VERSION"
  minor="${ver#v1.}"
  minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  pkgs=()
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  log "building ${missing[*]} ($K8S_VERSION); the first, uncached build takes a while"
  start=$(date +%s)
  (cd "$src" && CGO_ENABLED=0 go build -mod=mod -p "${SHMDB_E2E_GO_JOBS:-2}" \
    -ldflags "$ldflags" -o "$K8S_BIN/" "${pkgs[@]}")
  log "built ${missing[*]} in $(($(date +%s) - start))s"
fi

# etcd from go.etcd.io/etcd/server/v3 (SHMDB_E2E_BUILD_ETCD=1; about a minute): Debian's
# 3.4 is accepted but lacks RequestWatchProgress (see up.sh). Its go.mod replaces the
# sibling etcd modules with paths, so they are pinned to the same published version.
if [[ "${SHMDB_E2E_BUILD_ETCD:-0}" == 1 && ! -x "$SHMDB_E2E_ETCD_DIR/etcd" ]]; then
  src="$SHMDB_E2E_CACHE/src/etcd-$SHMDB_E2E_ETCD_VERSION"
  mkdir -p "$src" "$SHMDB_E2E_ETCD_DIR"
  upstream_mod="$(cd "$src" && go mod download -json "go.etcd.io/etcd/server/v3@$SHMDB_E2E_ETCD_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  {
    echo "module shmdb.io/e2e-etcd"
    echo
    echo "go $(sed -n 's/^go \(.*\)/\1/p' "$upstream_mod")"
    echo
    echo "require go.etcd.io/etcd/server/v3 $SHMDB_E2E_ETCD_VERSION"
    echo
    echo "replace ("
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
      echo "	go.etcd.io/etcd/$m => go.etcd.io/etcd/$m $SHMDB_E2E_ETCD_VERSION"
    done
    echo ")"
  } >"$src/go.mod"
  log "building etcd $SHMDB_E2E_ETCD_VERSION"
  start=$(date +%s)
  (cd "$src" && CGO_ENABLED=0 go build -mod=mod -p "${SHMDB_E2E_GO_JOBS:-2}" -ldflags "-s -w" \
    -o "$SHMDB_E2E_ETCD_DIR/etcd" go.etcd.io/etcd/server/v3)
  log "built etcd in $(($(date +%s) - start))s"
fi

if [[ ! -x "$KWOK_BIN/kwok" ]]; then
  mkdir -p "$KWOK_BIN"
  log "building kwok $KWOK_VERSION"
  start=$(date +%s)
  CGO_ENABLED=0 GOBIN="$KWOK_BIN" go install -p "${SHMDB_E2E_GO_JOBS:-2}" -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  log "built kwok in $(($(date +%s) - start))s"
fi
