#!/usr/bin/env bash
# Builds the manager, glance-shim, importer, pause, volume provisioner and volcheck images
# locally, with no registry and no Docker: static Go binaries in FROM-scratch layers; the
# importer also gets qemu-img, the provisioner losetup, with the shared libraries they load.
# Imports those that changed, or that containerd lost, into the cluster's containerd when it runs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
mkdir -p "$IMAGES"
build=$(mktemp -d); trap 'rm -rf "$build"' EXIT

for cmd in manager glance-shim importer; do
  (cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags=-s -o "$build/$cmd" "./cmd/$cmd")
done
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags=-s -o "$build/pause" ./hack/local-cluster/pause)
# The volume provisioner and its test tool are a module of their own (provisioner/go.mod).
(cd "$ROOT/hack/local-cluster/provisioner" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags=-s -o "$build/" . ./volcheck)

base() { # a root filesystem with a non-root user and /tmp
  local root=$1
  mkdir -p "$root/etc" "$root/tmp"; chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/:/nonexistent\nnonroot:x:65532:65532:nonroot:/:/nonexistent\n' > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
}
with_libs() { # copy a dynamic binary and every library it loads
  local bin=$1 dest=$2 root=$3
  install -D -m 0755 "$bin" "$root$dest"
  ldd "$bin" | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}' | while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
}
image() { # name ref entrypoint...
  local name=$1 ref=$2; shift 2
  "$ROOT/hack/local-cluster/mkimage.sh" "$build/$name.rootfs" "$ref" "$IMAGES/$name.tar" "$@"
  echo "built $ref"
}

for cmd in manager glance-shim pause; do
  base "$build/$cmd.rootfs"
  install -m 0755 "$build/$cmd" "$build/$cmd.rootfs/$cmd"
done
image manager localhost/imageimport/manager:dev /manager
image glance-shim localhost/imageimport/glance-shim:dev /glance-shim
image pause "$PAUSE_IMAGE" /pause

base "$build/provisioner.rootfs"
install -D -m 0755 "$build/provisioner" "$build/provisioner.rootfs/usr/local/bin/provisioner"
with_libs "$(command -v losetup)" /usr/bin/losetup "$build/provisioner.rootfs"
image provisioner "$PROVISIONER_IMAGE" /usr/local/bin/provisioner
base "$build/volcheck.rootfs"
install -D -m 0755 "$build/volcheck" "$build/volcheck.rootfs/usr/local/bin/volcheck"
image volcheck localhost/imageimport/volcheck:dev /usr/local/bin/volcheck

root=$build/importer.rootfs
base "$root"
install -D -m 0755 "$build/importer" "$root/usr/local/bin/importer"
with_libs "$(command -v qemu-img)" /usr/bin/qemu-img "$root"
# xz decompresses .xz sources, sandboxed (internal/unpack); without it the importer uses Go's decoder.
with_libs "$(command -v xz)" /usr/bin/xz "$root"
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
image importer localhost/imageimport/importer:dev /usr/local/bin/importer

if [[ -S $CTRD_SOCK ]] && ctr -a "$CTRD_SOCK" version >/dev/null 2>&1; then
  import_images
fi
