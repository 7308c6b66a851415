// Command provisioner provisions the local cluster's PersistentVolumes on demand: a claim of its
// StorageClass gets a local PersistentVolume on the node the scheduler chose (the class binds
// WaitForFirstConsumer), a directory for volumeMode Filesystem and a loop device over a sparse
// file for volumeMode Block. Deleting the claim deletes the volume and frees its storage (the
// class's reclaimPolicy is Delete). Built on sig-storage-lib-external-provisioner, the provision
// controller the SIG keeps for external provisioners.
//
// It runs on every node it serves (a DaemonSet), privileged, with the volumes directory mounted
// at the same path as on the host (the PersistentVolumes name host paths) and the host's /dev.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

func main() {
	name := flag.String("name", "imageimport.local/node-volume", "the provisioner name StorageClasses give")
	dir := flag.String("dir", "", "where volumes live on the node; mounted at the same path in this container")
	node := flag.String("node", os.Getenv("NODE_NAME"), "the node this provisioner serves")
	klog.InitFlags(nil)
	flag.Parse()
	if *dir == "" || *node == "" {
		fmt.Fprintln(os.Stderr, "provisioner: --dir and --node (or $NODE_NAME) are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *name, *dir, *node); err != nil {
		klog.ErrorS(err, "provisioner failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, name, dir, node string) error {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	p := &provisioner{name: name, dir: dir, node: node, client: client}
	// Loop devices do not outlive the machine nor `make stop`: give Block volumes theirs back
	// before pods that use them start again.
	if err := p.reattach(ctx); err != nil {
		return err
	}
	klog.InfoS("provisioning", "name", name, "node", node, "dir", dir, "block", loopSupported())
	// No leader election: one instance per node, each provisions only for its own node.
	controller.NewProvisionController(ctx, client, name, p, controller.LeaderElection(false)).Run(ctx)
	return nil
}
