# Shared settings of the local cluster scripts. Everything lives under bin/ (git-ignored).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
K8S_BIN=$ROOT/bin/k8s/$K8S_VERSION            # shared with envtest
KC=$ROOT/bin/local-cluster
STATE=$KC/state
PKI=$STATE/pki
LOGS=$KC/logs
IMAGES=$KC/images
CTRD_SOCK=$STATE/run/containerd.sock
KUBECONFIG_ADMIN=$STATE/admin.kubeconfig
NODE=iio-node
# The node's address lives on an interface of ours (a bridge with no ports: this kernel has no
# dummy links), never on eth0. It is a local address: what is sent to it stays on the machine.
NODE_IF=iionode0
NODE_IP=10.88.0.2
BRIDGE=iiobr0
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1

kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ctr_() { ctr -a "$CTRD_SOCK" -n k8s.io "$@"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | xargs printf '%.1f'; }
