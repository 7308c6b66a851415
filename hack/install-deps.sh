#!/usr/bin/env bash
# Installs the system packages the tests need, when they are missing:
# qemu-utils (qemu-img, for the importer and its tests), xz-utils, zstd,
# bzip2 and gzip (fixtures of compressed sources) and
# python3-glanceclient (the real Glance CLI the shim is tested with).
# Idempotent.
set -euo pipefail

missing=()
command -v qemu-img >/dev/null || missing+=(qemu-utils)
# The compressed-source tests make their fixtures with the real tools.
command -v xz >/dev/null || missing+=(xz-utils)
command -v zstd >/dev/null || missing+=(zstd)
command -v bzip2 >/dev/null || missing+=(bzip2)
command -v gzip >/dev/null || missing+=(gzip)
command -v glance >/dev/null || missing+=(python3-glanceclient)
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "Installing ${missing[*]} (needed by the tests)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
