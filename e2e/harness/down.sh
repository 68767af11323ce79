#!/usr/bin/env bash
# Stops every process up.sh and run.sh recorded (supervisors first, then the operator
# replicas they ran, then the control plane, newest first), each by its pid.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/harness/env.sh
source "$here/env.sh"
state="$SHMDB_E2E_STATE"
[[ -d "$state" ]] || exit 0
touch "$state/stopping"
stop() { # pid name
  if kill "$1" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null && log "killed $2 ($1) after 5s"
  fi
}
if [[ -f "$state/pids" ]]; then
  grep -- '-supervisor$' "$state/pids" | while read -r pid name; do stop "$pid" "$name"; done
  for f in "$state"/operators/*.pid; do
    [[ -f "$f" ]] && stop "$(cat "$f")" "$(basename "$f" .pid)"
  done
  # The real node's containers outlive containerd (their shims are daemons): stop the
  # kubelet first so it restarts nothing, then kill and delete every task while containerd
  # still answers.
  grep -- ' kubelet$' "$state/pids" | while read -r pid name; do stop "$pid" "$name"; done
  sock="$state/real-node/containerd.sock"
  if [[ -S "$sock" ]]; then
    tasks="$(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null || true)"
    for task in $tasks; do ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$task" >/dev/null 2>&1; done
    for task in $tasks; do
      for _ in $(seq 1 50); do
        ctr --address "$sock" -n k8s.io tasks delete "$task" >/dev/null 2>&1 && break
        sleep 0.1
      done
    done
  fi
  grep -v -- '-supervisor$' "$state/pids" | tac | while read -r pid name; do stop "$pid" "$name"; done
  rm -f "$state/pids"
fi
# What containerd mounted under the state directory (rootfs, shm, netns), so the next
# up.sh can remove it. None (no real node) is no failure: grep's status 1 made down.sh, and
# with it run.sh, exit 1 after passing tests with SHMDB_E2E_REAL_PODS=0.
{ grep -o " $state/[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | while read -r mnt; do
  umount -l "$mnt" 2>/dev/null || true
done
