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
# The pod sandbox image, built by images.sh. A registry host of localhost: should containerd
# ever try to pull it (when it is missing), it knocks on this machine, not on a registry.
PAUSE_IMAGE=localhost/imageimport/pause:v1
# Dynamic provisioning (storage.sh): the provisioner's image, its volumes on the node, its class.
PROVISIONER_IMAGE=localhost/imageimport/provisioner:dev
VOLUMES=$STATE/volumes
STORAGE_CLASS=node-local

kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ctr_() { ctr -a "$CTRD_SOCK" -n k8s.io "$@"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l | xargs printf '%.1f'; }

# Imports into containerd the images under $IMAGES (images.sh builds them) that it lacks or
# holds in another version, and pins them: no registry can give them back. What was imported
# is recorded under $STATE/images (image config digest, name, manifest digest in containerd),
# so an unchanged image is not imported again, and an image deleted from containerd is.
import_images() {
  local tar manifest ref cfg stamp c r d listed
  mkdir -p "$STATE/images"
  listed=$(ctr_ images ls)
  for tar in "$IMAGES"/*.tar; do
    [[ -f $tar ]] || continue
    manifest=$(tar -xOf "$tar" manifest.json)
    ref=$(sed -n 's/.*"RepoTags":\["\([^"]*\)".*/\1/p' <<<"$manifest")
    cfg=$(sed -n 's/.*"Config":"\([0-9a-f]*\)\.json".*/\1/p' <<<"$manifest")
    stamp=$STATE/images/$(basename "$tar" .tar)
    if [[ -f $stamp ]] && read -r c r d <"$stamp" && [[ $c == "$cfg" && $r == "$ref" ]] &&
      awk -v r="$ref" -v d="$d" '$1 == r && $3 == d {found = 1} END {exit !found}' <<<"$listed"; then
      continue
    fi
    ctr_ images import "$tar" >/dev/null
    ctr_ images label "$ref" io.cri-containerd.pinned=pinned >/dev/null
    d=$(ctr_ images ls | awk -v r="$ref" '$1 == r {print $3}')
    echo "$cfg $ref $d" >"$stamp"
    echo "imported $ref into containerd"
  done
}
