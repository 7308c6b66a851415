#!/usr/bin/env bash
# Installs what the local cluster needs from Debian, when missing, and builds the
# Kubernetes components from Go modules into bin/k8s/<version>/ (shared with envtest).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null || missing+=(iptables)
command -v ip >/dev/null || missing+=(iproute2)
command -v openssl >/dev/null || missing+=(openssl)
command -v bc >/dev/null || missing+=(bc)
command -v qemu-img >/dev/null || missing+=(qemu-utils)
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "Installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$ROOT/hack/envtest/build.sh" "$K8S_BIN" "v$K8S_VERSION" "$ETCD_VERSION" \
  kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy >/dev/null
