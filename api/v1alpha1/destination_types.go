package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// DestinationType says where an import stores its image.
// +kubebuilder:validation:Enum=Store;Volume
type DestinationType string

const (
	// DestinationStore stores the image as a file named by its id in the
	// namespace's shared image store claim (Glance's file store).
	DestinationStore DestinationType = "Store"
	// DestinationVolume stores the image in a PersistentVolumeClaim of its
	// own, which the operator creates and the Image owns: what KubeVirt
	// boots (disk.img on a Filesystem volume, the device of a Block one).
	DestinationVolume DestinationType = "Volume"
)

// VolumeDiskFile is the file a Filesystem volume holds the image in: the
// name KubeVirt (and CDI) look for.
const VolumeDiskFile = "disk.img"

// FilesystemOverhead is the share of a Filesystem volume that its
// filesystem takes, so that disk.img cannot use it: CDI's default global
// filesystem overhead (0.055), which KubeVirt assumes too.
const FilesystemOverhead = 0.055

// Destination is where an import stores its image.
// +kubebuilder:validation:XValidation:rule="self.type == 'Volume' || !has(self.volume)",message="destination.volume may only be set when destination.type is Volume"
type Destination struct {
	// type is Store (a file in the namespace's shared image store claim)
	// or Volume (a new PersistentVolumeClaim for this image alone, owned by
	// its Image, holding disk.img or, in Block mode, the raw disk). When
	// destination is absent, the manager's --default-destination decides.
	// +required
	Type DestinationType `json:"type"`

	// volume configures the PersistentVolumeClaim of a Volume destination.
	// +optional
	Volume *VolumeDestination `json:"volume,omitempty"`
}

// VolumeDestination is the PersistentVolumeClaim the operator creates for
// the image. Its name is the image id; it binds when the importer pod is
// scheduled (WaitForFirstConsumer classes), so the importer picks the node.
type VolumeDestination struct {
	// storageClassName of the claim. Default: the manager's
	// --volume-storage-class, else the cluster's default StorageClass. The
	// import fails at once (StorageClassMissing) when there is neither.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	StorageClassName *string `json:"storageClassName,omitempty"`

	// accessModes of the claim. Default: [ReadWriteOnce]. A VM that must
	// live-migrate needs ReadWriteMany from its storage class.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=4
	// +kubebuilder:validation:items:Enum=ReadWriteOnce;ReadOnlyMany;ReadWriteMany;ReadWriteOncePod
	AccessModes []corev1.PersistentVolumeAccessMode `json:"accessModes,omitempty"`

	// volumeMode of the claim. Filesystem (the default) holds the image as
	// the file disk.img, KubeVirt's convention; Block holds the raw disk as
	// the device itself (diskFormat must then be raw).
	// +optional
	// +kubebuilder:default=Filesystem
	// +kubebuilder:validation:Enum=Filesystem;Block
	VolumeMode *corev1.PersistentVolumeMode `json:"volumeMode,omitempty"`

	// size requested for the claim. The image's virtual size is known only
	// once it is downloaded, so the default is the manager's --volume-size
	// (10Gi), or more when imageProperties.minDisk asks for more (minDisk
	// GiB, plus the filesystem overhead in Filesystem mode). The import
	// fails (InsufficientStorage) when the image's virtual size does not fit:
	// for Filesystem, virtual size / (1 - 0.055) must not exceed the size
	// (CDI's filesystem overhead); for Block, the virtual size. A size
	// below imageProperties.minDisk fails the task at once (InvalidInput).
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('1Mi')) >= 0",message="destination.volume.size must be at least 1Mi"
	Size *resource.Quantity `json:"size,omitempty"`
}

// ImporterPod is the placement and resources of a task's importer pod.
type ImporterPod struct {
	// nodeSelector the importer pod must match, over the manager's
	// --importer-node-selector (a key set here wins).
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && size(self[k]) <= 63)",message="importerPod.nodeSelector keys must be at most 317 and values at most 63 characters (label syntax)"
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations of the importer pod, added to none by default.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// affinity of the importer pod (node affinity, pod affinity and
	// anti-affinity), for instance to keep imports apart or near a store.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// priorityClassName of the importer pod. Default: the manager's
	// --importer-priority-class-name, else none.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// resources of the importer container (qemu-img included); each
	// quantity set here replaces the manager's (--importer-cpu-request,
	// --importer-memory-limit, ...).
	// +optional
	Resources *ImporterResources `json:"resources,omitempty"`
}

// ImporterResources are the requests and limits of the importer container.
// A request above its limit, once merged with the manager's, fails the
// task at once (InvalidInput), naming both.
type ImporterResources struct {
	// requests of cpu, memory and ephemeral-storage.
	// +optional
	// +kubebuilder:validation:MaxProperties=3
	// +kubebuilder:validation:XValidation:rule="self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'])",message="importerPod.resources.requests may name only cpu, memory and ephemeral-storage"
	Requests corev1.ResourceList `json:"requests,omitempty"`

	// limits of cpu, memory and ephemeral-storage.
	// +optional
	// +kubebuilder:validation:MaxProperties=3
	// +kubebuilder:validation:XValidation:rule="self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'])",message="importerPod.resources.limits may name only cpu, memory and ephemeral-storage"
	Limits corev1.ResourceList `json:"limits,omitempty"`
}
