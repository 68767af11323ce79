#!/usr/bin/env bash
# Builds the project image shmdb.local/shmdb:e2e for the real node, with no registry: a root
# file system staged from the debug binaries of the in-cluster operator (`operator`) and of
# the pods it creates (storage-node, commit-manager, processing-node), the shared libraries
# they load (ldd, the loader included) and a static busybox as /bin/sh (the storage pods'
# command runs through sh), packed by oci-image.py and imported into the real node's
# containerd (real-node.sh must have started it). Prints nothing on success; the archive stays in $SHMDB_E2E_STATE.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=e2e/harness/env.sh
source "$here/env.sh"
state="$SHMDB_E2E_STATE"
node="$state/real-node"
bins="${SHMDB_E2E_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/debug}"
: "${SHMDB_E2E_IMAGE:=shmdb.local/shmdb:e2e}"

# Debian's busybox-static: one static binary, so /bin/sh needs no library of its own.
dpkg -s busybox-static >/dev/null 2>&1 ||
  { apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null; }
busybox=/bin/busybox

root="$node/image-root"
rm -rf "$root"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/data"
chmod 1777 "$root/tmp"
for bin in operator storage-node commit-manager processing-node; do
  [[ -x "$bins/$bin" ]] || { echo "$bins/$bin missing: cargo build -p <its crate>" >&2; exit 1; }
  cp "$bins/$bin" "$root/bin/$bin"
  # Each library at the path the loader looks for it (and the loader at its fixed path).
  ldd "$bins/$bin" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
cp "$busybox" "$root/bin/busybox"
ln -sf busybox "$root/bin/sh"
# Names: the kubelet mounts /etc/hosts and /etc/resolv.conf; glibc asks files, then DNS.
echo "hosts: files dns" >"$root/etc/nsswitch.conf"
echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"

python3 "$here/oci-image.py" "$node/shmdb-image.tar" "$SHMDB_E2E_IMAGE" /bin/sh "$root:/"
ctr --address "$node/containerd.sock" -n k8s.io images import "$node/shmdb-image.tar" >/dev/null
rm -rf "$root"
log "image $SHMDB_E2E_IMAGE imported ($(du -h "$node/shmdb-image.tar" | cut -f1))"
