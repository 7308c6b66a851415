#!/usr/bin/env bash
# Installs the system packages the tests need, when they are missing:
# qemu-utils (qemu-img, for the importer and its tests). Idempotent.
set -euo pipefail

missing=()
command -v qemu-img >/dev/null || missing+=(qemu-utils)
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
echo "Installing ${missing[*]} (needed by the importer and its tests)"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
