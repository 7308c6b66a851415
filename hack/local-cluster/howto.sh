#!/usr/bin/env bash
# Prints how to use the system `make run` brought up.
source "$(dirname "$0")/lib.sh"
cat <<TXT

The image import operator runs on the local cluster.
  kubectl:      export KUBECONFIG=$KUBECONFIG_ADMIN   (kubectl $K8S_VERSION: $K8S_BIN/kubectl)
  Glance API:   http://127.0.0.1:9292 (auth none: every caller is admin of project "admin")
  Image store:  PersistentVolumeClaim images/image-store, made by the operator at the first import; its
                files, named by image id, are in its volume's directory on the node:
                ls $VOLUMES/\$(kubectl -n images get pvc image-store -o jsonpath='{.spec.volumeName}')/
  Volumes:      StorageClass $STORAGE_CLASS, the default: any claim gets a volume on the node when a pod
                uses it (Filesystem or Block), under $VOLUMES; deleting the claim frees it.
  Sources:      importers reach this machine at $NODE_IP (any port) and nothing else.

Serve an image to import:
  python3 -m http.server 8000 --bind $NODE_IP --directory /path/to/images &

Import it with kubectl:
  cat <<'YAML' | $K8S_BIN/kubectl --kubeconfig $KUBECONFIG_ADMIN apply -f -
  apiVersion: tasks.imageimport.io/v1alpha1
  kind: ImageImportTask
  metadata: {name: cirros, namespace: images}
  spec:
    type: import
    input:
      importFrom: http://$NODE_IP:8000/cirros.qcow2
      importFromFormat: qcow2
      imageProperties: {diskFormat: raw, containerFormat: bare}
  YAML
  $K8S_BIN/kubectl --kubeconfig $KUBECONFIG_ADMIN -n images get iit -w

Or with the Glance API:
  curl -s http://127.0.0.1:9292/v2/tasks -H 'Content-Type: application/json' -d '{"type": "import",
    "input": {"import_from": "http://$NODE_IP:8000/cirros.qcow2", "import_from_format": "qcow2",
              "image_properties": {"disk_format": "raw", "container_format": "bare"}}}'
  glance --os-image-url http://127.0.0.1:9292 --os-auth-token local task-list

Stop everything: make stop
TXT
