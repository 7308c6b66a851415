#!/usr/bin/env bash
# Brings up a single-node Kubernetes cluster on this machine: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet (containerd, runc, bridge CNI) and
# kube-proxy, all from bin/. Idempotent: what runs already is left alone.
#
# Network safety, a hard rule: no packet leaves this machine.
#  - The node address is on an interface of ours (never eth0's); every component listens
#    on it or on 127.0.0.1.
#  - The service CIDR is a local route: without a kube-proxy rule, nothing goes out.
#  - Anything a pod sends that is not for the pod network or this node is dropped (mangle
#    FORWARD, before any other rule), and pods are never masqueraded.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
t0=$(now); t0iso=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$STATE/run" "$STATE/etcd" "$STATE/kubelet" "$STATE/pod-logs" "$STATE/cni/net.d" "$STATE/cni/ipam" "$LOGS"
"$ROOT/hack/local-cluster/gen-pki.sh"

running() { [[ -f $STATE/$1.pid ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
start() { # name command...
  local name=$1; shift
  running "$name" && return 0
  nohup "$@" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

# Writes a component's configuration from stdin; a component that runs with another
# configuration is stopped here, to be started again below with this one.
config() { # file component
  local file=$1 name=$2 content; content=$(cat)
  [[ -f $file && $(cat "$file") == "$content" ]] && return 0
  printf '%s\n' "$content" >"$file"
  running "$name" || return 0
  echo "restarting $name: its configuration changed"
  local pid; pid=$(cat "$STATE/$name.pid")
  kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$STATE/$name.pid"
}

network() {
  ip link show "$NODE_IF" >/dev/null 2>&1 || ip link add "$NODE_IF" type bridge
  # Never `cmd | grep -q` under pipefail: grep exits at the first match, cmd may get SIGPIPE and the
  # pipeline then fails at random.
  grep -q "inet $NODE_IP/32" <<<"$(ip addr show dev "$NODE_IF")" || ip addr add "$NODE_IP/32" dev "$NODE_IF"
  ip link set "$NODE_IF" up
  grep -q "^local $SERVICE_CIDR " <<<"$(ip route show table local type local)" || ip route add local "$SERVICE_CIDR" dev lo
  for ipt in iptables ip6tables; do
    $ipt -t mangle -C FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -j DROP 2>/dev/null ||
      $ipt -t mangle -I FORWARD 1 -i "$BRIDGE" ! -o "$BRIDGE" -j DROP
  done
  [[ -f $STATE/ip_forward.orig ]] || sysctl -n net.ipv4.ip_forward >"$STATE/ip_forward.orig"
}

configs() {
  config "$STATE/containerd.toml" containerd <<TOML
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$CTRD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  # Block volumes' device nodes belong to the pod's runAsUser/runAsGroup (as CDI asks), so
  # that a non-root importer can write an image onto one.
  device_ownership_from_security_context = true
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
  cat >"$STATE/cni/net.d/10-image-import.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "image-import", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  config "$STATE/kubelet.yaml" kubelet <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $PKI/ca.crt}}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CTRD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: []
resolvConf: /etc/resolv.conf
podLogsDir: $STATE/pod-logs
localStorageCapacityIsolation: true
# Our images come from no registry: an image the kubelet deletes cannot come back until the next
# make run. Disk pressure makes the eviction manager delete every unused image whatever
# imageGCHighThresholdPercent says; imageMinimumGCAge holds for that reclaim too, so no image is
# ever old enough. (Pinning, which images.sh also does, needs containerd >= 1.7; Debian's 1.6
# does not report it.)
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 876000h
# A development machine's disk holds everything else too, and is often fuller than the kubelet's
# default thresholds (10 %, 15 %): evict only when about to run out, early enough that etcd can
# still write, and let pods schedule again 30 s after space is freed (not 5 minutes).
evictionHard: {memory.available: "100Mi", nodefs.available: "1Gi", imagefs.available: "1Gi", nodefs.inodesFree: "1%", imagefs.inodesFree: "1%"}
evictionPressureTransitionPeriod: 30s
syncFrequency: 10s
nodeStatusUpdateFrequency: 5s
maxPods: 60
YAML
  config "$STATE/kube-proxy.yaml" kube-proxy <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0}
YAML
}

network
configs
if ! ctr -a "$CTRD_SOCK" version >/dev/null 2>&1; then
  rm -f "$STATE/containerd.pid"
  start containerd containerd --config "$STATE/containerd.toml"
  for _ in $(seq 100); do ctr -a "$CTRD_SOCK" version >/dev/null 2>&1 && break; sleep 0.1; done
fi
import_images   # before the kubelet starts pods: the sandbox image first of all

start etcd "$K8S_BIN/etcd" --name local --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster local=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
  --bind-address="$NODE_IP" --secure-port=6443 --advertise-address="$NODE_IP" \
  --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local --service-cluster-ip-range="$SERVICE_CIDR" \
  --kubelet-preferred-address-types=InternalIP \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true --profiling=false
for _ in $(seq 300); do kubectl_ get --raw /readyz >/dev/null 2>&1 && break; sleep 0.2; done
kubectl_ get --raw /readyz >/dev/null || { echo "kube-apiserver did not become ready: see $LOGS/kube-apiserver.log"; exit 1; }
echo "kube-apiserver ready after $(since "$t0")s"

start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --use-service-account-credentials=true --leader-elect=false --bind-address=127.0.0.1 --profiling=false
start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --leader-elect=false --bind-address=127.0.0.1 --profiling=false
# A kubelet that runs already needs a recent heartbeat only (the node controller's grace period
# is 40 s); one started now needs one from this run (etcd keeps an old Ready=True across restarts).
running kubelet && t0iso=$(date -u -d '-40 sec' +%Y-%m-%dT%H:%M:%SZ)
start kubelet "$K8S_BIN/kubelet" --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet-client.kubeconfig" \
  --root-dir="$STATE/kubelet" --hostname-override="$NODE" --node-ip="$NODE_IP" -v=1
start kube-proxy "$K8S_BIN/kube-proxy" --config="$STATE/kube-proxy.yaml" -v=1

# Ready, with a heartbeat from this kubelet run.
for _ in $(seq 600); do
  r=$(kubectl_ get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}' 2>/dev/null || true)
  if [[ ${r%% *} == True && ! ${r#* } < $t0iso ]]; then
    for _ in $(seq 300); do kubectl_ -n default get sa default >/dev/null 2>&1 && break; sleep 0.2; done
    echo "node $NODE Ready after $(since "$t0")s (kubeconfig: $KUBECONFIG_ADMIN)"
    exit 0
  fi
  sleep 0.5
done
echo "node $NODE not Ready after 300s: see $LOGS/kubelet.log"
exit 1
