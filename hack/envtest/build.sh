#!/usr/bin/env bash
# Builds Kubernetes components and etcd from Go modules into DEST: by default the envtest
# control plane (kube-apiserver, kubectl, etcd); the local cluster adds
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy to the same DEST.
# setup-envtest downloads release binaries from hosts CI cannot reach; the Go module proxy
# serves the sources, so we build the same binaries. Idempotent: what DEST has is not rebuilt.
#
# Usage: hack/envtest/build.sh DEST [K8S_VERSION] [ETCD_VERSION] [COMPONENT...]
set -euo pipefail

DEST=$(mkdir -p "$1" && cd "$1" && pwd)
K8S=${2:-v1.37.2}
ETCD=${3:-v3.7.3}

shift $(( $# < 3 ? $# : 3 ))
COMPONENTS=("$@")
[[ ${#COMPONENTS[@]} -gt 0 ]] || COMPONENTS=(kube-apiserver kubectl)
missing=()
for c in "${COMPONENTS[@]}"; do [[ -x $DEST/$c ]] || missing+=("$c"); done
if [[ ${#missing[@]} -eq 0 && -x $DEST/etcd ]]; then
  exit 0
fi

STAGING="v0.${K8S#v1.}"      # staging modules (k8s.io/api, ...) are tagged v0.<minor>.<patch>
MINOR=$(cut -d. -f2 <<<"$K8S")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod

build_kubernetes() {
  mkdir "$WORK/k8s" && cd "$WORK/k8s"
  go mod init envtest-assets/k8s >/dev/null 2>&1
  go mod edit -require "k8s.io/kubernetes@${K8S}"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local
  # paths; replaces do not carry over to a dependent module, so pin each to its tag.
  local modfile
  modfile=$(go mod download -json "k8s.io/kubernetes@${K8S}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$modfile"); do
    go mod edit -replace "${m}=${m}@${STAGING}"
  done
  { printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for cmd in "${missing[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"; done
    printf ')\n'; } >tools.go
  go mod tidy
  local ldflags=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=${K8S} -X $p.gitMajor=1 -X $p.gitMinor=${MINOR} -X $p.gitTreeState=clean"
  done
  for cmd in "${missing[@]}"; do
    go build -ldflags "$ldflags" -o "$DEST/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$DEST/$cmd.tmp" "$DEST/$cmd"
  done
}

build_etcd() {
  # A module of its own: etcd's dependency versions must not bend Kubernetes'.
  mkdir "$WORK/etcd" && cd "$WORK/etcd"
  go mod init envtest-assets/etcd >/dev/null 2>&1
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
  go get "go.etcd.io/etcd/server/v3@${ETCD}"
  go mod tidy
  go build -o "$DEST/etcd.tmp" go.etcd.io/etcd/server/v3 # server/v3 is package main
  mv "$DEST/etcd.tmp" "$DEST/etcd"
}

[[ -x $DEST/etcd ]] || build_etcd
[[ ${#missing[@]} -eq 0 ]] || build_kubernetes
"$DEST/${COMPONENTS[0]}" --version
