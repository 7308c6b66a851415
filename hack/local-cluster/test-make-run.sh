#!/usr/bin/env bash
# Tests what `make run` promises beyond the first run, on the local cluster:
#  1. it is idempotent: run again and again, it passes every time (TIMES runs, 10 by default);
#  2. the kubelet never deletes our images (no registry can give them back) and evicts only when
#     the disk is nearly full: checked in the configuration the running kubelet reports; the
#     default StorageClass is ours, and its provisioner runs;
#  3. it repairs a cluster whose images containerd lost (as image GC under disk pressure did):
#     the images are deleted from containerd and the pods with them; the pods cannot start; one
#     more make run and they do, and a new pod of the importer image runs.
# CI runs it after make test-e2e, on the cluster that one left up.
#
# Usage: hack/local-cluster/test-make-run.sh [TIMES]
# MAKE_RUN overrides the command (default: make run).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TIMES=${1:-10}
MAKE_RUN=${MAKE_RUN:-make run}
NS=image-import-system
LOCAL_IMAGES=("$PAUSE_IMAGE" localhost/imageimport/manager:dev localhost/imageimport/glance-shim:dev localhost/imageimport/importer:dev "$PROVISIONER_IMAGE")
cd "$ROOT"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; kubectl_ -n default delete pod make-run-check --ignore-not-found --wait=false >/dev/null 2>&1 || true' EXIT

fail() { echo "FAIL: $*"; exit 1; }
make_run() { # what
  local t; t=$(now)
  $MAKE_RUN >"$tmp/make-run.log" 2>&1 || { cat "$tmp/make-run.log"; fail "$MAKE_RUN failed ($1)"; }
  echo "$MAKE_RUN ($1): $(since "$t") s"
  grep -E '^(imported|restart)' "$tmp/make-run.log" | sed 's/^/    /' || true
}

echo "--- 1. $MAKE_RUN $TIMES times in a row"
for i in $(seq "$TIMES"); do make_run "run $i of $TIMES"; done

echo "--- 2. the kubelet keeps our images and evicts late"
kubectl_ get --raw "/api/v1/nodes/$NODE/proxy/configz" >"$tmp/configz.json"
for want in '"imageMinimumGCAge":"876000h0m0s"' '"imageGCHighThresholdPercent":100' \
  '"nodefs.available":"1Gi"' '"imagefs.available":"1Gi"' '"evictionPressureTransitionPeriod":"30s"'; do
  grep -F -- "$want" "$tmp/configz.json" >/dev/null || fail "the running kubelet's configuration lacks $want: $(cat "$tmp/configz.json")"
done
ctr_ images ls >"$tmp/images"
for ref in "${LOCAL_IMAGES[@]}"; do
  awk -v r="$ref" '$1 == r && /io.cri-containerd.pinned=pinned/ {found = 1} END {exit !found}' "$tmp/images" ||
    fail "$ref is not in containerd with the label io.cri-containerd.pinned=pinned"
done
echo "kubelet: imageMinimumGCAge 876000h, eviction at 1Gi free; images pinned"
default=$(kubectl_ get storageclass -o jsonpath='{range .items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")]}{.metadata.name}{" "}{end}')
[[ $default == "$STORAGE_CLASS " ]] || fail "the default StorageClass is '$default', not $STORAGE_CLASS alone"
kubectl_ -n local-storage rollout status daemonset/node-volume-provisioner --timeout=10s >/dev/null ||
  fail "the volume provisioner does not run: $(kubectl_ -n local-storage get pods 2>&1)"
echo "StorageClass $STORAGE_CLASS is the only default; its provisioner runs"

echo "--- 3. containerd loses the images; make run repairs the cluster"
for ref in "${LOCAL_IMAGES[@]}"; do ctr_ images rm "$ref" >/dev/null; done
kubectl_ -n "$NS" delete pods --all --timeout=120s >/dev/null
broken=""
for _ in $(seq 120); do
  pods=$(kubectl_ -n "$NS" get pods -o jsonpath='{.items[*].metadata.name}')
  events=$(kubectl_ -n "$NS" get events --field-selector reason=FailedCreatePodSandBox -o jsonpath='{range .items[*]}{.involvedObject.name}{"\n"}{end}')
  for p in $pods; do grep -qx "$p" <<<"$events" && broken=$p && break 2; done
  sleep 0.5
done
[[ -n $broken ]] || fail "no pod failed to start after the images were deleted: the test deleted nothing that mattered"
echo "without its images, pod $broken cannot start (FailedCreatePodSandBox)"

make_run "repair"
for ref in "${LOCAL_IMAGES[@]}"; do
  grep -q "^$ref " <<<"$(ctr_ images ls)" || fail "$MAKE_RUN did not import $ref again"
done
kubectl_ -n "$NS" wait deployment --all --for=condition=Available --timeout=60s >/dev/null ||
  fail "the operator and the shim do not run again: $(kubectl_ -n "$NS" get pods 2>&1)"
curl -fsS http://127.0.0.1:9292/versions >/dev/null || fail "the Glance shim does not answer"
kubectl_ -n default delete pod make-run-check --ignore-not-found >/dev/null
kubectl_ -n default apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: make-run-check}
spec:
  restartPolicy: Never
  containers:
  - name: importer
    image: localhost/imageimport/importer:dev
    imagePullPolicy: Never
    command: [/usr/bin/qemu-img, --version]
YAML
kubectl_ -n default wait pod/make-run-check --for=jsonpath='{.status.phase}'=Succeeded --timeout=90s >/dev/null ||
  fail "a new importer pod does not run: $(kubectl_ -n default describe pod make-run-check 2>&1 | tail -15)"
echo "after $MAKE_RUN: images back, operator and shim available, a new importer pod ran"
echo "PASS"
