#!/usr/bin/env bash
# Deploys dynamic provisioning to the local cluster: the node-volume provisioner (provisioner/,
# on sig-storage-lib-external-provisioner) as a privileged DaemonSet, and the StorageClass
# $STORAGE_CLASS that it serves, the cluster's default: WaitForFirstConsumer, reclaimPolicy
# Delete. Filesystem claims get a directory under $VOLUMES, Block claims a loop device over a
# sparse file there. Idempotent; waits until the provisioner runs.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
NS=local-storage
mkdir -p "$VOLUMES"
loop_control=/dev/loop-control
[[ -e $loop_control ]] || echo "NOTE: this kernel has no loop devices ($loop_control is missing): Block claims will fail with an event that says so; Filesystem claims work"

existed=$(kubectl_ -n "$NS" get daemonset node-volume-provisioner -o name --ignore-not-found 2>/dev/null || true)
kubectl_ apply --server-side --force-conflicts -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
  labels:
    pod-security.kubernetes.io/enforce: privileged
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: node-volume-provisioner, namespace: $NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-volume-provisioner}
rules:
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, delete, update, patch]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch, update, patch]
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: node-volume-provisioner}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: node-volume-provisioner}
subjects: [{kind: ServiceAccount, name: node-volume-provisioner, namespace: $NS}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-volume-provisioner, namespace: $NS}
spec:
  selector: {matchLabels: {app: node-volume-provisioner}}
  template:
    metadata: {labels: {app: node-volume-provisioner}}
    spec:
      serviceAccountName: node-volume-provisioner
      terminationGracePeriodSeconds: 5
      containers:
      - name: provisioner
        image: $PROVISIONER_IMAGE
        imagePullPolicy: Never
        args: [--dir=$VOLUMES]
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        # Root and privileged: it creates loop devices and device nodes.
        securityContext: {privileged: true, runAsUser: 0, runAsGroup: 0}
        resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {memory: 128Mi}}
        volumeMounts:
        - {name: volumes, mountPath: $VOLUMES}   # the same path as on the node: volumes name node paths
        - {name: dev, mountPath: /dev}           # loop devices made after the container started
      volumes:
      - name: volumes
        hostPath: {path: $VOLUMES, type: Directory}
      - name: dev
        hostPath: {path: /dev, type: Directory}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: imageimport.local/node-volume
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
YAML

# A new pod when the image changed since the last rollout, or when the provisioner does not run
# (it could not start while its image was missing, say); otherwise leave it alone. A DaemonSet
# created just now starts with the image as it is.
image=$(ctr_ images ls | awk -v r="$PROVISIONER_IMAGE" '$1 == r {print $3}')
IFS=/ read -r want ready updated < <(kubectl_ -n "$NS" get daemonset node-volume-provisioner \
  -o jsonpath='{.status.desiredNumberScheduled}/{.status.numberReady}/{.status.updatedNumberScheduled}{"\n"}') || true
if [[ -n $existed ]] && [[ -z $want || $want == 0 || $ready != "$want" || $updated != "$want" ||
  ! -f $STATE/provisioner-image || $(cat "$STATE/provisioner-image") != "$image" ]]; then
  rm -f "$STATE/provisioner-image"
  kubectl_ -n "$NS" rollout restart daemonset/node-volume-provisioner >/dev/null
  echo "restarted the volume provisioner"
fi
kubectl_ -n "$NS" rollout status daemonset/node-volume-provisioner --timeout=120s >/dev/null ||
  { echo "the volume provisioner does not run: kubectl -n $NS logs daemonset/node-volume-provisioner"; exit 1; }
printf '%s\n' "$image" >"$STATE/provisioner-image"
echo "volume provisioner running; StorageClass $STORAGE_CLASS is the default (volumes in $VOLUMES)"
