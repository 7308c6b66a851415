#!/usr/bin/env bash
# Deploys the operator and the Glance shim (config/local) and the image store (a hostPath
# PersistentVolume on the node, bound to the claim image-store in the namespace images) to the
# local cluster, and waits until they run. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
STORE=$KC/store
mkdir -p "$STORE"
chown 65532:65532 "$STORE"   # the importer runs as 65532; hostPath volumes are not chowned
chmod 0750 "$STORE"

"$ROOT/bin/kustomize" build "$ROOT/config/local" | kubectl_ apply --server-side --force-conflicts -f - >/dev/null
kubectl_ apply --server-side -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: images
  labels:
    pod-security.kubernetes.io/enforce: restricted
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: image-store
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: images, name: image-store}
  hostPath: {path: $STORE, type: Directory}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: image-store
  namespace: images
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: image-store
  resources: {requests: {storage: 100Gi}}
YAML
# A new image under the same tag needs new pods.
kubectl_ -n image-import-system rollout restart deployment/image-import-controller-manager deployment/image-import-glance-shim >/dev/null
kubectl_ -n image-import-system rollout status deployment/image-import-controller-manager --timeout=180s >/dev/null
kubectl_ -n image-import-system rollout status deployment/image-import-glance-shim --timeout=180s >/dev/null
for _ in $(seq 100); do curl -fs http://127.0.0.1:9292/versions >/dev/null && break; sleep 0.3; done
echo "operator and Glance shim deployed; images are stored in $STORE"
