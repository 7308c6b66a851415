#!/usr/bin/env bash
# N import tasks at once (default 100, 10 clients) through the tasks API: the shim on the local
# cluster (make run) against a real Glance (hack/glance/start.sh) in the same run, then the
# shim's per-phase breakdown. The image is a small qcow2 made by qemu-img. Asserts nothing.
#
# Usage: bench/throughput.sh [TASKS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${1:-100} CLIENTS=${2:-10} PORT=19492
make -s run >/dev/null
hack/glance/start.sh "$PORT" >/dev/null
work=$(mktemp -d)
trap 'hack/glance/stop.sh "$PORT" >/dev/null || true; rm -rf "$work"' EXIT
qemu-img create -q -f raw "$work/disk.raw" 16M
printf 'bench data' | dd of="$work/disk.raw" conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/image.qcow2"
go run ./bench/throughput -image "$work/image.qcow2" -tasks "$TASKS" -clients "$CLIENTS" \
  -glance "http://127.0.0.1:$PORT" -kubeconfig bin/local-cluster/state/admin.kubeconfig
