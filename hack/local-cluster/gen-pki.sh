#!/usr/bin/env bash
# Creates the cluster's CA, certificates, service-account key pair and kubeconfigs (ECDSA
# P-256: fast). Idempotent: an existing CA is kept.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
mkdir -p "$PKI"; cd "$PKI"
[[ -f ca.crt ]] && exit 0

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
cert() { # name cn org sans usage
  local name=$1 cn=$2 org=$3 sans=$4 usage=$5 subj="/CN=$2"
  [[ -n $org ]] && subj="/O=$org/CN=$cn"
  key "$name.key"
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"; [[ -n $sans ]] && echo "subjectAltName=$sans"; } > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
key ca.key
openssl req -x509 -new -nodes -key ca.key -subj "/CN=image-import-local-ca" -days 3650 -out ca.crt
key sa.key
openssl pkey -in sa.key -pubout -out sa.pub
cert apiserver kube-apiserver "" "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:$NODE,IP:127.0.0.1,IP:$NODE_IP,IP:$SERVICE_IP" serverAuth
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" clientAuth
cert admin kubernetes-admin system:masters "" clientAuth
cert controller-manager system:kube-controller-manager "" "" clientAuth
cert scheduler system:kube-scheduler "" "" clientAuth
cert kubelet-client "system:node:$NODE" system:nodes "" clientAuth
cert kube-proxy system:kube-proxy "" "" clientAuth
cert kubelet-serving "$NODE" "" "DNS:$NODE,IP:$NODE_IP" serverAuth

kubeconfig() { # name user
  cat > "$STATE/$1.kubeconfig" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority-data: $(base64 -w0 < ca.crt)
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 < "$1.crt")
    client-key-data: $(base64 -w0 < "$1.key")
contexts:
- name: local
  context: {cluster: local, user: "$2"}
current-context: local
KCFG
  chmod 600 "$STATE/$1.kubeconfig"
}
kubeconfig admin kubernetes-admin
kubeconfig controller-manager system:kube-controller-manager
kubeconfig scheduler system:kube-scheduler
kubeconfig kubelet-client "system:node:$NODE"
kubeconfig kube-proxy system:kube-proxy
