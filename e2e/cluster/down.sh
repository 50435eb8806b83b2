#!/usr/bin/env bash
# down.sh — tears down the cluster $STARLING_CLUSTER (default starling). Idempotent: safe on
# a half-started or crashed cluster, and a no-op when nothing is there.
# Owns the removal of everything up.sh made for this cluster name:
#   workloads (deleted through the API while it still answers), the daemons
#   (pid files in <state>/pids, checked against their command line), the
#   containers and shims of the cluster's private containerd, processes left in
#   the cgroupRoot, kube-proxy's rules (kube-proxy --cleanup), every mount under
#   <state>, the cgroupRoot dirs, the host routes, the veth pair and the netns.
# The state dir itself is kept (logs stay readable); --purge removes it too.
# Usage: down.sh [--quiet] [--purge]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

quiet=0 purge=0
for arg in "$@"; do
  case $arg in
    --quiet) quiet=1 ;;
    --purge) purge=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done
need_root
say() { ((quiet)) || log "$@"; }
t0=$SECONDS

have_ns() { [[ -e /run/netns/$NETNS ]]; }

# mentions_state /proc/PID/cmdline: the command line names this cluster's state dir
mentions_state() {
  local cmd
  cmd=$(tr '\0' ' ' <"$1" 2>/dev/null) || return 1
  [[ $cmd == *"$STATE/"* ]]
}

# pid of daemon NAME if its pid file names a live process that is really ours
# (its command line mentions this cluster's state dir).
daemon_pid() {
  local f=$STATE/pids/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(cat "$f")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  mentions_state "/proc/$pid/cmdline" || return 1
  echo "$pid"
}

# running PID: the process exists and is not a zombie (our daemons are
# re-parented to PID 1 once up.sh exits, which may reap them late)
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

stop_pid() { # stop_pid PID NAME: TERM, wait up to 10 s, then KILL
  local pid=$1 name=$2 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    running "$pid" || { say "stopped $name ($pid)"; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  say "killed $name ($pid)"
}

stop_daemon() {
  local pid
  if pid=$(daemon_pid "$1"); then stop_pid "$pid" "$1"; fi
  rm -f "$STATE/pids/$1.pid"
}

# Processes of this cluster whose pid files are gone (a crash, a wiped state
# dir): our binaries, or containerd and its shims, started with this state dir.
stray_pids() {
  local p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case $exe in
      "$BIN_DIR"/*|*/containerd|*/containerd-shim-runc-v2) ;;
      *) continue ;;
    esac
    mentions_state "$p/cmdline" && echo "${p#/proc/}"
  done
  return 0
}

# Every cgroup dir of this cluster, deepest first.
cgroup_dirs() {
  local h
  for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [[ -d $h$CGROUP_ROOT ]] && find "$h$CGROUP_ROOT" -depth -type d
  done
  return 0
}

# --- 1. workloads, through the API while it answers ---------------------------------
if daemon_pid kube-apiserver >/dev/null && daemon_pid kubelet >/dev/null && [[ -f $KUBECONFIG_FILE ]]; then
  say "deleting workloads"
  timeout 30 "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE" delete \
    deployments,statefulsets,daemonsets,replicasets,replicationcontrollers,jobs,cronjobs \
    --all --all-namespaces --wait=false >/dev/null 2>&1 || true
  timeout 60 "$BIN_DIR/kubectl" --kubeconfig "$KUBECONFIG_FILE" delete pods \
    --all --all-namespaces --grace-period=2 --timeout=50s >/dev/null 2>&1 || true
fi

# --- 2. daemons ----------------------------------------------------------------------------
for d in coredns kube-proxy; do stop_daemon "$d"; done
if have_ns && [[ -x $BIN_DIR/kube-proxy ]]; then
  in_ns "$BIN_DIR/kube-proxy" --cleanup >/dev/null 2>&1 || true
fi
for d in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_daemon "$d"; done

# --- 3. containers, while containerd still runs --------------------------------------------------
if daemon_pid containerd >/dev/null && [[ -S $CONTAINERD_SOCK ]]; then
  if [[ -x $BIN_DIR/crictl ]]; then
    # stops and removes every pod sandbox, tearing its network down through CNI
    timeout 60 "$BIN_DIR/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" \
      --image-endpoint "unix://$CONTAINERD_SOCK" rmp --all --force >/dev/null 2>&1 || true
  fi
  for c in $(ctr_ns containers list --quiet 2>/dev/null); do
    ctr_ns tasks kill --signal SIGKILL "$c" >/dev/null 2>&1 || true
  done
  sleep 0.3
  for c in $(ctr_ns containers list --quiet 2>/dev/null); do
    ctr_ns tasks delete --force "$c" >/dev/null 2>&1 || true
    ctr_ns containers delete "$c" >/dev/null 2>&1 || true
  done
fi
stop_daemon containerd

# --- 4. anything of ours still running --------------------------------------------------------------
for ((round = 0; round < 20; round++)); do
  pids=$(stray_pids)
  for d in $(cgroup_dirs); do
    if [[ -f $d/cgroup.procs ]]; then pids+=" $(tr '\n' ' ' <"$d/cgroup.procs")"; fi
  done
  pids=$(for p in $(echo "$pids" | tr ' ' '\n' | grep -E '^[0-9]+$' | sort -un); do
    if [[ $p != "$$" ]] && running "$p"; then echo "$p"; fi
  done)
  [[ -n $pids ]] || break
  say "killing leftover processes: ${pids//$'\n'/ }"
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  sleep 0.3
done

# Shims killed above leave their sockets in /run/containerd/s, named
# sha256("<containerd address>/<namespace>/<shim id>") by containerd 1.6.
for d in "$STATE"/containerd/state/io.containerd.runtime.v2.task/k8s.io/*/; do
  [[ -d $d ]] || continue
  id=$(basename "$d")
  sock=/run/containerd/s/$(printf '%s' "$CONTAINERD_SOCK/k8s.io/$id" | sha256sum | cut -c1-64)
  if [[ -S $sock ]]; then rm -f "$sock"; fi
done

# --- 5. mounts under the state dir (deepest first; the kubelet bind-mounts its root) ---------------
for ((round = 0; round < 10; round++)); do
  mapfile -t mounts < <(awk -v s="$STATE" '$5 == s || index($5, s "/") == 1 {print $5}' /proc/self/mountinfo |
    awk '{print length($0) " " $0}' | sort -rn | cut -d' ' -f2-)
  ((${#mounts[@]})) || break
  for m in "${mounts[@]}"; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
done
((${#mounts[@]} == 0)) || log "WARNING: mounts left under $STATE: ${mounts[*]}"

# --- 6. cgroups ------------------------------------------------------------------------------------
for d in $(cgroup_dirs); do rmdir "$d" 2>/dev/null || log "WARNING: could not remove cgroup $d"; done

# --- 7. network --------------------------------------------------------------------------------
for cidr in "$POD_CIDR" "$SERVICE_CIDR"; do
  if [[ $(ip route show "$cidr") == *"dev $HOST_VETH"* ]]; then ip route del "$cidr" dev "$HOST_VETH" 2>/dev/null || true; fi
done
if ip link show "$HOST_VETH" >/dev/null 2>&1; then ip link del "$HOST_VETH" && say "deleted veth $HOST_VETH"; fi
if have_ns; then ip netns delete "$NETNS" && say "deleted netns $NETNS"; fi

# The kubelet serves the device-plugin registration socket at a fixed host path
# (/var/lib/kubelet/device-plugins/kubelet.sock) whatever its --root-dir; remove
# it, and the empty dirs the kubelet and the shims made, when no kubelet runs.
live_named() { # live_named NAME: a non-zombie process of that exact name runs
  local p
  for p in $(pgrep -x "$1"); do running "$p" && return 0; done
  return 1
}
if ! live_named kubelet; then
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
fi
if ! live_named containerd; then
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
fi

if ((purge)); then rm -rf "$STATE"; say "removed $STATE"; fi
rm -rf "$STATE/pids" 2>/dev/null || true
say "cluster $CLUSTER_NAME down ($((SECONDS - t0))s)"
