#!/usr/bin/env bash
# The shim against a real Glance, in one run: starts Glance (hack/glance/start.sh), runs
# bench/glance (POST, GET one, GET list; p50, p99, throughput; 1,000 and 10,000 tasks)
# and prints the ratios. Asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=19392
make -s setup-envtest
hack/glance/start.sh "$PORT" >/dev/null
trap 'hack/glance/stop.sh "$PORT" >/dev/null' EXIT
KUBEBUILDER_ASSETS=$PWD/bin/k8s/1.37.2 go run ./bench/glance \
  -glance "http://127.0.0.1:$PORT" -glance-db "$PWD/bin/real-glance/run-$PORT/glance.sqlite" -requests "${REQUESTS:-200}"
