#!/usr/bin/env bash
# Installs the system packages the tests need, when they are missing:
# qemu-utils (qemu-img, for the importer and its tests), xz-utils, zstd,
# bzip2 and gzip (fixtures of compressed sources), gcc (cgo, for the race
# detector) and
# python3-glanceclient, python3-openstackclient and python3-openstacksdk (the
# real Glance clients the shim is tested with; Debian's import under
# /usr/bin/python3, which may not be the python3 first on PATH).
# Idempotent.
set -euo pipefail

missing=()
command -v qemu-img >/dev/null || missing+=(qemu-utils)
# The compressed-source tests make their fixtures with the real tools.
command -v xz >/dev/null || missing+=(xz-utils)
command -v zstd >/dev/null || missing+=(zstd)
command -v bzip2 >/dev/null || missing+=(bzip2)
command -v gzip >/dev/null || missing+=(gzip)
# The race detector (make test) needs cgo, so a C compiler.
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
command -v glance >/dev/null || missing+=(python3-glanceclient)
command -v openstack >/dev/null || missing+=(python3-openstackclient)
/usr/bin/python3 -c 'import openstack' 2>/dev/null || missing+=(python3-openstacksdk)
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "Installing ${missing[*]} (needed by the tests)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
