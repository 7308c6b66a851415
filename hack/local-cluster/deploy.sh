#!/usr/bin/env bash
# Deploys the operator and the Glance shim (config/local) to the local cluster, and the namespace
# images, and waits until they run. The image store is no claim made here: the operator creates
# images/image-store (--store-storage-class=node-local, storage.sh's provisioner) at the first
# import. A cluster that a former make run gave a hostPath PersistentVolume and a claim bound to
# it keeps them: this script no longer applies them and so leaves them alone. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

"$ROOT/bin/kustomize" build "$ROOT/config/local" | kubectl_ apply --server-side --force-conflicts -f - >/dev/null
kubectl_ apply --server-side -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: images
  labels:
    pod-security.kubernetes.io/enforce: restricted
YAML
# New pods when an image changed under its tag since the last rollout (pods keep the image they
# started with), or when the deployments are not all ready (pods that could not start while their
# images were missing, say). Otherwise leave running pods alone: make run runs again quickly.
deployments=(image-import-controller-manager image-import-glance-shim)
images=$(ctr_ images ls | awk '$1 ~ /^localhost\/imageimport\/(manager|glance-shim):/ {print $1, $3}' | sort)
ready=true
for d in "${deployments[@]}"; do
  IFS=/ read -r want have updated ready_ unavailable < <(kubectl_ -n image-import-system get deployment "$d" \
    -o jsonpath='{.spec.replicas}/{.status.replicas}/{.status.updatedReplicas}/{.status.readyReplicas}/{.status.unavailableReplicas}{"\n"}') || true
  [[ -n $want && $have == "$want" && $updated == "$want" && $ready_ == "$want" && -z $unavailable ]] || ready=false
done
if [[ $ready != true || ! -f $STATE/deployed-images || $(cat "$STATE/deployed-images") != "$images" ]]; then
  rm -f "$STATE/deployed-images"
  kubectl_ -n image-import-system rollout restart "${deployments[@]/#/deployment/}" >/dev/null
  echo "restarted the operator and the Glance shim"
fi
for d in "${deployments[@]}"; do
  kubectl_ -n image-import-system rollout status "deployment/$d" --timeout=180s >/dev/null
done
for _ in $(seq 100); do curl -fs http://127.0.0.1:9292/versions >/dev/null && break; sleep 0.3; done
curl -fsS http://127.0.0.1:9292/versions >/dev/null ||
  { echo "the Glance shim does not answer on 127.0.0.1:9292: kubectl -n image-import-system logs deployment/image-import-glance-shim"; exit 1; }
printf '%s\n' "$images" >"$STATE/deployed-images"
echo "operator and Glance shim deployed; images are stored in the claim images/image-store (made at the first import)"
