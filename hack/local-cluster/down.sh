#!/usr/bin/env bash
# Stops the local cluster and removes everything it created on the host: its processes (by
# PID), containers, loop devices, mounts, iptables rules and chains, the bridges and the service
# route, and the ip_forward setting. The state under bin/local-cluster/state is kept unless
# --purge is given.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

stop() {
  local f=$STATE/$1.pid
  [[ -f $f ]] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$f"
  echo "stopped $1"
}

# First what would start new pods (the controllers: a DaemonSet's or a ReplicaSet's pod deleted
# below would be back at once, and the wait for no containers would last its full 30 s).
stop kube-scheduler
stop kube-controller-manager
if [[ -f $STATE/kubelet.pid ]] && kill -0 "$(cat "$STATE/kubelet.pid")" 2>/dev/null; then
  kubectl_ delete jobs --all -A --wait=false >/dev/null 2>&1
  kubectl_ delete pods --all -A --grace-period=0 --force --wait=false >/dev/null 2>&1
  for _ in $(seq 60); do [[ -z $(ctr_ tasks ls -q 2>/dev/null) ]] && break; sleep 0.5; done
fi
stop kube-proxy
stop kubelet
if [[ -S $CTRD_SOCK ]]; then
  for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1; done
  sleep 1
  for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$c" >/dev/null 2>&1; done
  for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1; done
fi
stop kube-apiserver
stop etcd
stop containerd

# Loop devices: those of Block volumes (over $VOLUMES/*.img; the provisioner gives them back at
# the next start) and those the kubelet holds over mapped volumes under its root-dir.
# losetup -j matches by inode, whatever path the file had when it was attached.
loops=$(for img in "$VOLUMES"/*.img; do [[ -f $img ]] && losetup -n -O NAME -j "$img"; done
  losetup -l -n -O NAME,BACK-FILE | awk -v kc="$KC/" 'index($2, kc) == 1 {print $1}')
for dev in $(sort -u <<<"$loops"); do losetup -d "$dev" && echo "detached $dev"; done
grep " $STATE" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
[[ -x $K8S_BIN/kube-proxy ]] && "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1
for ipt in iptables ip6tables; do
  while $ipt -t mangle -D FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -j DROP 2>/dev/null; do :; done
  while $ipt -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
  while $ipt -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
  for t in filter nat mangle; do
    chains=$($ipt -t "$t" -S 2>/dev/null | awk '$1=="-N" && $2 ~ /^KUBE-/ {print $2}' | sort -u)
    for c in $chains; do $ipt -t "$t" -F "$c" 2>/dev/null; done
    for c in $chains; do $ipt -t "$t" -X "$c" 2>/dev/null; done
  done
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
ip link show "$NODE_IF" >/dev/null 2>&1 && ip link del "$NODE_IF"
grep -q "^local $SERVICE_CIDR " <<<"$(ip route show table local type local)" && ip route del local "$SERVICE_CIDR" dev lo
for n in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns del "$n"; done
if [[ -f $STATE/ip_forward.orig ]]; then
  sysctl -qw net.ipv4.ip_forward="$(cat "$STATE/ip_forward.orig")"
  rm -f "$STATE/ip_forward.orig"
fi
if [[ ${1:-} == --purge ]]; then
  rm -rf "$STATE" "$LOGS"
  echo "removed the cluster state"
fi
echo "local cluster down"
