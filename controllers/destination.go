package controllers

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// Where an import lands: the namespace's shared store claim (a file named
// by the image id), or a PersistentVolumeClaim of the image's own, which
// the Image owns and a KubeVirt VirtualMachine boots. This file is pure:
// what the reconciler creates, from the task and the manager's defaults.

// DestinationDefaults are the manager's defaults for where imports land.
type DestinationDefaults struct {
	// Type of a task without spec.destination (Store if empty).
	Type tasksv1.DestinationType
	// VolumeStorageClass of a volume whose task names none; "" for the
	// cluster's default StorageClass.
	VolumeStorageClass string
	// VolumeSize of a volume whose task names none.
	VolumeSize resource.Quantity
	// StoreStorageClass of the store claim the operator creates where it is
	// missing; "" for the cluster's default StorageClass (and no claim at
	// all when there is none).
	StoreStorageClass string
	// StoreSize of the store claim the operator creates.
	StoreSize resource.Quantity
}

// DefaultVolumeSize is the size of a volume whose task names none: the
// virtual size is unknown until the image is downloaded, and 10Gi holds
// the common cloud images (2 to 8 GiB of virtual disk) with the overhead.
var DefaultVolumeSize = resource.MustParse("10Gi")

// DefaultStoreSize is the size of a store claim the operator creates.
var DefaultStoreSize = resource.MustParse("50Gi")

// Paths of a volume inside the importer pod.
const (
	volumeMountPath  = "/var/lib/image-volume"
	volumeDevicePath = "/dev/image-volume"
)

// destinationOf is the task's destination type, the manager's default
// when the task names none.
func destinationOf(t *tasksv1.ImageImportTask, d DestinationDefaults) tasksv1.DestinationType {
	if t.Spec.Destination != nil {
		return t.Spec.Destination.Type
	}
	return cmp.Or(d.Type, tasksv1.DestinationStore)
}

// volumeOf is the task's volume settings with the defaults filled in but
// the storage class, which may be the cluster's (resolved by the
// reconciler): nil when the task's destination is not a volume.
func volumeOf(t *tasksv1.ImageImportTask, d DestinationDefaults) *tasksv1.VolumeDestination {
	if destinationOf(t, d) != tasksv1.DestinationVolume {
		return nil
	}
	v := &tasksv1.VolumeDestination{}
	if t.Spec.Destination != nil && t.Spec.Destination.Volume != nil {
		v = t.Spec.Destination.Volume.DeepCopy()
	}
	if v.StorageClassName == nil && d.VolumeStorageClass != "" {
		v.StorageClassName = ptr.To(d.VolumeStorageClass)
	}
	if len(v.AccessModes) == 0 {
		v.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	if v.VolumeMode == nil {
		v.VolumeMode = ptr.To(corev1.PersistentVolumeFilesystem)
	}
	if v.Size == nil {
		v.Size = ptr.To(defaultVolumeSize(t, d, *v.VolumeMode))
	}
	return v
}

// defaultVolumeSize is the manager's volume size, or what the image's
// minDisk needs when that is more.
func defaultVolumeSize(t *tasksv1.ImageImportTask, d DestinationDefaults, mode corev1.PersistentVolumeMode) resource.Quantity {
	size := d.VolumeSize
	if size.IsZero() {
		size = DefaultVolumeSize
	}
	if p := t.Spec.Input.ImageProperties; p != nil && p.MinDisk != nil {
		if need := volumeBytesFor(int64(*p.MinDisk)<<30, mode); need > size.Value() {
			return *resource.NewQuantity(need, resource.BinarySI)
		}
	}
	return size
}

// volumeBytesFor is the smallest volume that holds a disk of virtualSize
// bytes: the disk itself for Block, and for Filesystem disk.img plus the
// filesystem's overhead (CDI's 5.5%), rounded up to a MiB.
func volumeBytesFor(virtualSize int64, mode corev1.PersistentVolumeMode) int64 {
	if mode == corev1.PersistentVolumeBlock {
		return virtualSize
	}
	need := int64(math.Ceil(float64(virtualSize) / (1 - tasksv1.FilesystemOverhead)))
	return (need + 1<<20 - 1) &^ (1<<20 - 1)
}

// volumeClaimName is the name of an image's volume: its id, so that users
// find the claim of an Image by its name.
func volumeClaimName(t *tasksv1.ImageImportTask) string { return taskImageID(t) }

// volumeLocation is where a volume image is, as a URL: the file disk.img
// in a Filesystem volume, the claim itself (its device is the disk) for
// Block.
func volumeLocation(namespace, claim string, mode corev1.PersistentVolumeMode) string {
	if mode == corev1.PersistentVolumeBlock {
		return "pvc://" + namespace + "/" + claim
	}
	return "pvc://" + namespace + "/" + claim + "/" + tasksv1.VolumeDiskFile
}

// imageLocation is where the task's image lands, as a URL.
func imageLocation(t *tasksv1.ImageImportTask, cfg ImporterConfig) string {
	if v := volumeOf(t, cfg.Destination); v != nil {
		return volumeLocation(t.Namespace, volumeClaimName(t), *v.VolumeMode)
	}
	return storeLocation(t, cfg.StoreClaimName)
}

// volumeClaimOf is the claim of an Image whose data is a volume of its
// own, from its location; false for an image in the store (whose location
// ends in its id) or without data.
func volumeClaimOf(img *tasksv1.Image) (string, bool) {
	rest, ok := strings.CutPrefix(img.Status.Location, "pvc://"+img.Namespace+"/")
	if !ok {
		return "", false
	}
	claim, file, hasFile := strings.Cut(rest, "/")
	if claim == "" || (hasFile && file != tasksv1.VolumeDiskFile) {
		return "", false
	}
	return claim, true
}

// desiredVolumeClaim is the claim of a task's image: labelled with the
// image id, annotated with its source and formats. The reconciler sets
// the storage class when the cluster's default decides it, and the
// Image as its controller.
func desiredVolumeClaim(t *tasksv1.ImageImportTask, v *tasksv1.VolumeDestination) *corev1.PersistentVolumeClaim {
	in := t.Spec.Input
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: t.Namespace, Name: volumeClaimName(t),
			Labels: map[string]string{
				"app.kubernetes.io/name":       "image-volume",
				"app.kubernetes.io/managed-by": "image-import-operator",
				tasksv1.LabelImageID:           taskImageID(t),
				tasksv1.LabelTaskName:          truncateLabel(t.Name),
			},
			Annotations: map[string]string{
				tasksv1.AnnotationSource:       in.ImportFrom,
				tasksv1.AnnotationSourceFormat: string(in.ImportFromFormat),
				tasksv1.AnnotationDiskFormat:   string(in.ImageProperties.DiskFormat),
			},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: v.StorageClassName,
			AccessModes:      v.AccessModes,
			VolumeMode:       v.VolumeMode,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: *v.Size,
			}},
		},
	}
}

// volumeDataAnnotations are what a successful import adds to its volume.
func volumeDataAnnotations(info *tasksv1.ImageInfo) map[string]string {
	a := map[string]string{
		tasksv1.AnnotationChecksum: info.Checksum,
		tasksv1.AnnotationSize:     strconv.FormatInt(info.Size, 10),
	}
	if info.OSHashValue != "" {
		a[tasksv1.AnnotationOSHash] = info.OSHashAlgo + ":" + info.OSHashValue
	}
	if info.SHA256 != "" {
		a[tasksv1.AnnotationSHA256] = info.SHA256
	}
	if info.VirtualSize > 0 {
		a[tasksv1.AnnotationVirtualSize] = strconv.FormatInt(info.VirtualSize, 10)
	}
	return a
}

// desiredStoreClaim is the store claim the operator creates in a
// namespace that has none: ReadWriteOnce, as the store always was.
func desiredStoreClaim(namespace string, cfg ImporterConfig) *corev1.PersistentVolumeClaim {
	size := cfg.Destination.StoreSize
	if size.IsZero() {
		size = DefaultStoreSize
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: cfg.StoreClaimName, Labels: map[string]string{
			"app.kubernetes.io/name":       "image-store",
			"app.kubernetes.io/managed-by": "image-import-operator",
		}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if cfg.Destination.StoreStorageClass != "" {
		pvc.Spec.StorageClassName = ptr.To(cfg.Destination.StoreStorageClass)
	}
	return pvc
}

// destinationArgs are the importer's flags for where the image lands.
func destinationArgs(t *tasksv1.ImageImportTask, cfg ImporterConfig) []string {
	v := volumeOf(t, cfg.Destination)
	if v == nil {
		return []string{"--dest=" + storeMountPath}
	}
	capacity := "--dest-capacity=" + strconv.FormatInt(v.Size.Value(), 10)
	if *v.VolumeMode == corev1.PersistentVolumeBlock {
		// Staged in the scratch space, then written to the device.
		return []string{"--dest=" + scratchMountPath, "--dest-device=" + volumeDevicePath, capacity}
	}
	return []string{"--dest=" + volumeMountPath, "--dest-file=" + tasksv1.VolumeDiskFile, capacity}
}

// destinationVolume is the pod volume the image lands in, and how the
// importer container sees it.
func destinationVolume(t *tasksv1.ImageImportTask, cfg ImporterConfig) (corev1.Volume, []corev1.VolumeMount, []corev1.VolumeDevice) {
	v := volumeOf(t, cfg.Destination)
	if v == nil {
		return claimVolume("store", cfg.StoreClaimName), []corev1.VolumeMount{{Name: "store", MountPath: storeMountPath}}, nil
	}
	vol := claimVolume("image", volumeClaimName(t))
	if *v.VolumeMode == corev1.PersistentVolumeBlock {
		return vol, nil, []corev1.VolumeDevice{{Name: "image", DevicePath: volumeDevicePath}}
	}
	return vol, []corev1.VolumeMount{{Name: "image", MountPath: volumeMountPath}}, nil
}

func claimVolume(name, claim string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
	}}
}

// PlacementDefaults are the manager's defaults for where importer pods run.
type PlacementDefaults struct {
	NodeSelector      map[string]string
	PriorityClassName string
}

// applyImporterPod puts the task's placement and resources, over the
// manager's, on the importer pod.
func applyImporterPod(spec *corev1.PodSpec, t *tasksv1.ImageImportTask, cfg ImporterConfig) {
	p := ptr.Deref(t.Spec.ImporterPod, tasksv1.ImporterPod{})
	if sel := mergeMaps(cfg.Placement.NodeSelector, p.NodeSelector); len(sel) > 0 {
		spec.NodeSelector = sel
	}
	spec.Tolerations = p.Tolerations
	spec.Affinity = p.Affinity
	spec.PriorityClassName = cmp.Or(p.PriorityClassName, cfg.Placement.PriorityClassName)
	if r := p.Resources; r != nil {
		c := &spec.Containers[0]
		c.Resources.Requests = mergeMaps(c.Resources.Requests, r.Requests)
		c.Resources.Limits = mergeMaps(c.Resources.Limits, r.Limits)
	}
}

// mergeMaps is base with over's keys set over it, a new map; nil when
// both are empty.
func mergeMaps[M ~map[K]V, K comparable, V any](base, over M) M {
	if len(base) == 0 && len(over) == 0 {
		return nil
	}
	out := maps.Clone(base)
	if out == nil {
		out = M{}
	}
	maps.Copy(out, over)
	return out
}

// volumeFormatProblem says why a task whose destination the manager's
// default made a volume cannot import into it (admission checks the
// tasks that name their destination); "" when it can.
func volumeFormatProblem(t *tasksv1.ImageImportTask, v *tasksv1.VolumeDestination) string {
	f := t.Spec.Input.ImageProperties.DiskFormat
	ok := []tasksv1.DiskFormat{"raw"}
	if *v.VolumeMode == corev1.PersistentVolumeFilesystem {
		ok = append(ok, "qcow2")
	}
	if slices.Contains(ok, f) {
		return ""
	}
	return fmt.Sprintf("The image would be stored as %s in a %s volume (the manager's --default-destination=Volume): "+
		"a volume holds raw (or qcow2, in Filesystem mode). Set input.imageProperties.diskFormat to raw, or spec.destination.type to Store.",
		f, *v.VolumeMode)
}

// volumeSizeProblem says why a volume is too small for what the image says
// it needs (minDisk); "" when it is not. The virtual size, which only the
// importer learns, is checked there.
func volumeSizeProblem(t *tasksv1.ImageImportTask, v *tasksv1.VolumeDestination) string {
	p := t.Spec.Input.ImageProperties
	if p == nil || p.MinDisk == nil {
		return ""
	}
	need := volumeBytesFor(int64(*p.MinDisk)<<30, *v.VolumeMode)
	if v.Size.Value() >= need {
		return ""
	}
	return fmt.Sprintf("spec.destination.volume.size (%s) is smaller than input.imageProperties.minDisk (%d GiB) needs in a %s volume: "+
		"at least %s. Import again with a larger size.", v.Size, *p.MinDisk, *v.VolumeMode, resource.NewQuantity(need, resource.BinarySI))
}

// resourcesProblem says which request of the importer container exceeds
// its limit, once the task's resources are merged over the manager's; ""
// when none does.
func resourcesProblem(job *corev1.PodSpec) string {
	r := job.Containers[0].Resources
	for _, name := range slices.Sorted(maps.Keys(r.Requests)) {
		req := r.Requests[name]
		if lim, ok := r.Limits[name]; ok && req.Cmp(lim) > 0 {
			return fmt.Sprintf("The importer's %s request (%s) exceeds its limit (%s), from spec.importerPod.resources over the manager's defaults: "+
				"set spec.importerPod.resources.limits.%s too, or a smaller request.", name, &req, &lim, name)
		}
	}
	return ""
}
