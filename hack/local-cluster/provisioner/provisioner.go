package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

const (
	hostnameLabel = "kubernetes.io/hostname"
	// provisionedBy is the annotation the provision controller sets on the volumes it creates.
	provisionedBy = "pv.kubernetes.io/provisioned-by"
)

type provisioner struct {
	name, dir, node string
	client          kubernetes.Interface
}

var _ controller.BlockProvisioner = (*provisioner)(nil)

// SupportsBlock is always true: a claim for Block on a kernel without loop devices fails in
// Provision, with an event that says why, rather than with the library's generic refusal.
func (p *provisioner) SupportsBlock(context.Context) bool { return true }

func (p *provisioner) Provision(ctx context.Context, o controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	if o.SelectedNodeName != p.node {
		return nil, controller.ProvisioningFinished, &controller.IgnoredError{Reason: fmt.Sprintf("for node %q, this provisioner serves %q", o.SelectedNodeName, p.node)}
	}
	if o.SelectedNodeName == "" {
		return nil, controller.ProvisioningFinished, errors.New("no node selected: the StorageClass must bind WaitForFirstConsumer")
	}
	size, ok := o.PVC.Spec.Resources.Requests[corev1.ResourceStorage]
	if !ok || size.Value() <= 0 {
		return nil, controller.ProvisioningFinished, errors.New("the claim requests no storage size")
	}
	hostname, err := p.hostname(ctx)
	if err != nil {
		return nil, controller.ProvisioningInBackground, err
	}
	mode := corev1.PersistentVolumeFilesystem
	if o.PVC.Spec.VolumeMode != nil {
		mode = *o.PVC.Spec.VolumeMode
	}
	var path string
	switch mode {
	case corev1.PersistentVolumeBlock:
		path, err = p.createBlock(o.PVName, size.Value())
	default:
		path, err = p.createDirectory(o.PVName)
	}
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	klog.InfoS("provisioned", "pv", o.PVName, "claim", klog.KObj(o.PVC), "mode", mode, "path", path, "bytes", size.Value())
	return p.volume(o, mode, path, hostname), controller.ProvisioningFinished, nil
}

// hostname is the node's kubernetes.io/hostname label, which a local volume's node affinity
// names (it differs from the node name under --hostname-override, say).
func (p *provisioner) hostname(ctx context.Context) (string, error) {
	n, err := p.client.CoreV1().Nodes().Get(ctx, p.node, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if h := n.Labels[hostnameLabel]; h != "" {
		return h, nil
	}
	return "", fmt.Errorf("node %s has no %s label", p.node, hostnameLabel)
}

func (p *provisioner) volume(o controller.ProvisionOptions, mode corev1.PersistentVolumeMode, path, hostname string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: o.PVName},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: *o.StorageClass.ReclaimPolicy,
			AccessModes:                   o.PVC.Spec.AccessModes,
			VolumeMode:                    &mode,
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: o.PVC.Spec.Resources.Requests[corev1.ResourceStorage]},
			MountOptions:                  o.StorageClass.MountOptions,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: path}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: hostnameLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{hostname}}},
			}}}},
		},
	}
}

func (p *provisioner) Delete(ctx context.Context, pv *corev1.PersistentVolume) error {
	if pv.Spec.Local == nil || !p.owns(pv.Spec.Local.Path, pv.Name) {
		return &controller.IgnoredError{Reason: "not a volume of this node's provisioner"}
	}
	var err error
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		err = p.deleteBlock(pv.Name)
	} else {
		err = os.RemoveAll(pv.Spec.Local.Path)
	}
	if err == nil {
		klog.InfoS("deleted", "pv", pv.Name, "path", pv.Spec.Local.Path)
	}
	return err
}

// owns tells whether path is where this provisioner puts volume name: on another node, the
// same path is another node's business; elsewhere, it was never ours to delete.
func (p *provisioner) owns(path, name string) bool {
	return path == p.directoryPath(name) || path == p.devicePath(name)
}

func (p *provisioner) directoryPath(name string) string { return filepath.Join(p.dir, name) }
func (p *provisioner) devicePath(name string) string    { return filepath.Join(p.dir, name+".dev") }
func (p *provisioner) imagePath(name string) string     { return filepath.Join(p.dir, name+".img") }

func (p *provisioner) createDirectory(name string) (string, error) {
	path := p.directoryPath(name)
	if err := os.MkdirAll(path, 0o777); err != nil {
		return "", err
	}
	// World-writable, as local-path-provisioner does: pods of any user write to it (the
	// local volume plugin applies an fsGroup too, but not every pod sets one).
	return path, os.Chmod(path, 0o777)
}

// reattach gives every Block volume of this node's that has no loop device one again.
func (p *provisioner) reattach(ctx context.Context) error {
	pvs, err := p.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, pv := range pvs.Items {
		if pv.Annotations[provisionedBy] != p.name || pv.Spec.Local == nil || pv.Spec.Local.Path != p.devicePath(pv.Name) {
			continue
		}
		if _, err := p.attach(pv.Name); err != nil {
			klog.ErrorS(err, "cannot give the Block volume its loop device back", "pv", pv.Name)
			continue
		}
		klog.InfoS("reattached", "pv", pv.Name)
	}
	return nil
}
