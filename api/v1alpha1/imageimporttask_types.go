package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TaskType is the kind of work a task does. Glance knows several; this
// operator executes the one its tasks API documents: import.
// +kubebuilder:validation:Enum=import
type TaskType string

// TaskTypeImport imports an image from a URL.
const TaskTypeImport TaskType = "import"

// DiskFormat is a Glance image disk format.
// +kubebuilder:validation:Enum=ami;ari;aki;vhd;vhdx;vmdk;raw;qcow2;vdi;iso;ploop
type DiskFormat string

// ContainerFormat is a Glance image container format. The importer unpacks
// ova (a tar holding an OVF descriptor and the disk); with any other value
// the source is the disk itself.
// +kubebuilder:validation:Enum=ami;ari;aki;bare;ovf;ova;docker;compressed
type ContainerFormat string

// Visibility is who may see the imported image, as in Glance.
// +kubebuilder:validation:Enum=public;private;shared;community
type Visibility string

// ChecksumAlgorithm names a hash of the source bytes.
// +kubebuilder:validation:Enum=md5;sha256;sha512
type ChecksumAlgorithm string

// ExpiryPolicy says what happens to a finished task once it expires.
// +kubebuilder:validation:Enum=Retain;Delete
type ExpiryPolicy string

const (
	// ExpiryPolicyRetain keeps the task after expiresAt. Tasks owned by
	// kubectl or GitOps should keep it: deleting them would make GitOps
	// re-apply the manifest and import again.
	ExpiryPolicyRetain ExpiryPolicy = "Retain"
	// ExpiryPolicyDelete deletes the task at expiresAt, as Glance does.
	ExpiryPolicyDelete ExpiryPolicy = "Delete"
)

// ImageImportTaskSpec is the Glance task body ({"type", "input"}) in
// Kubernetes field style, plus optional, defaulted extensions. It is
// immutable: a new import is a new task.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable; create a new ImageImportTask instead"
// +kubebuilder:validation:XValidation:rule="has(self.recordedFailure) || has(self.input.importFromFormat)",message="input.importFromFormat is required: the declared format of the source (qcow2, raw, vmdk, ...)"
// +kubebuilder:validation:XValidation:rule="has(self.recordedFailure) || has(self.input.imageProperties)",message="input.imageProperties is required, with at least diskFormat and containerFormat"
// +kubebuilder:validation:XValidation:rule="!has(self.destination) || self.destination.type != 'Volume' || !has(self.input.imageProperties) || self.input.imageProperties.diskFormat == 'raw' || (self.input.imageProperties.diskFormat == 'qcow2' && (!has(self.destination.volume) || !has(self.destination.volume.volumeMode) || self.destination.volume.volumeMode == 'Filesystem'))",message="input.imageProperties.diskFormat must be raw, or qcow2 for a Filesystem volume, when destination.type is Volume: a VM boots a volume's disk.img or device as raw (or qcow2)"
type ImageImportTaskSpec struct {
	// type of the task. Only "import" is supported.
	// +required
	Type TaskType `json:"type"`

	// input of the import, as Glance's task input.
	// +required
	Input TaskInput `json:"input"`

	// image names the Image (in the task's namespace) that the import
	// fills. It must exist and be queued when the task starts; the shim's
	// web-download import sets it. When absent, the task creates its own
	// Image, named by the image id in status.result, from imageProperties.
	// +optional
	Image *ImageReference `json:"image,omitempty"`

	// recordedFailure makes the task a record of an import that failed
	// before it could run: the reconciler never runs it and fails it at
	// once with this reason and message. The Glance shim records so the
	// inputs that Glance accepts and then fails, as Glance callers expect;
	// everyone else gets a refusal at admission instead.
	// +optional
	RecordedFailure *RecordedFailure `json:"recordedFailure,omitempty"`

	// source holds options for fetching importFrom that Glance does not have.
	// +optional
	Source SourceOptions `json:"source,omitempty"`

	// destination is where the image is stored: the namespace's shared
	// image store claim (Store) or a new PersistentVolumeClaim of its own
	// (Volume), which a KubeVirt VirtualMachine boots. Default: the
	// manager's --default-destination (Store unless set).
	// +optional
	Destination *Destination `json:"destination,omitempty"`

	// importerPod is the placement (nodeSelector, tolerations, affinity,
	// priorityClassName) and resources of the importer pod, over the
	// manager's defaults.
	// +optional
	ImporterPod *ImporterPod `json:"importerPod,omitempty"`

	// backoffLimit is how many times a transiently failed import (network
	// error, HTTP 5xx, timeout) is retried. Permanent failures (bad input,
	// unsafe image, checksum mismatch) are never retried.
	// +optional
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=20
	BackoffLimit *int32 `json:"backoffLimit,omitempty"`

	// activeDeadlineSeconds bounds the whole import, retries included.
	// +optional
	// +kubebuilder:default=3600
	// +kubebuilder:validation:Minimum=30
	// +kubebuilder:validation:Maximum=604800
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`

	// expiryPolicy says whether the operator deletes the task once
	// status.expiresAt has passed. Retain (the default) never deletes it;
	// Delete behaves as Glance, and is what the Glance shim sets.
	// +optional
	// +kubebuilder:default=Retain
	ExpiryPolicy ExpiryPolicy `json:"expiryPolicy,omitempty"`
}

// TaskInput is Glance's import task input. importFromFormat and
// imageProperties are required unless the task is a recordedFailure.
type TaskInput struct {
	// importFrom is the http or https URL of the image. A source compressed
	// with gzip, xz, zstd or bzip2 (told by its bytes, not its name: .raw.xz,
	// .qcow2.gz, .img.zst) is decompressed while it downloads; one level of
	// compression only, and never to more than the importer's maximum image
	// size or decompression ratio.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self)",message="input.importFrom must be an absolute URL"
	// +kubebuilder:validation:XValidation:rule="!isURL(self) || url(self).getScheme() in ['http', 'https']",message="input.importFrom must be an http or https URL"
	// +kubebuilder:validation:XValidation:rule="!isURL(self) || !(url(self).getScheme() in ['http', 'https']) || url(self).getHostname() != ''",message="input.importFrom must name a host"
	ImportFrom string `json:"importFrom"`

	// importFromFormat is the declared format of the source, once
	// decompressed (the disk's format, for an OVA). The importer refuses a
	// source whose bytes are another format.
	// +optional
	ImportFromFormat DiskFormat `json:"importFromFormat,omitempty"`

	// imageProperties of the image to create; diskFormat is the stored format.
	// +optional
	ImageProperties *ImageProperties `json:"imageProperties,omitempty"`
}

// ImageProperties are the Glance image properties of the imported image.
type ImageProperties struct {
	// diskFormat is the format the image is stored in. The importer
	// converts when it differs from the source format.
	// +required
	DiskFormat DiskFormat `json:"diskFormat"`

	// containerFormat is the Glance container format of the image. With ova,
	// the source is an OVA: a tar whose first entry is the OVF descriptor
	// (as the OVF specification, DSP0243, requires) and that holds the one
	// disk the descriptor references; the importer streams that disk out of
	// the tar, writes nothing else, and refuses OVAs with several disks or
	// none, and entries that are links, devices or paths outside the archive.
	// What the OVF descriptor says of the appliance (its name, product,
	// vendor and version) becomes image properties ovf_name, ovf_product,
	// ovf_vendor and ovf_version once the image is active (see the Image's
	// spec.properties).
	// +required
	ContainerFormat ContainerFormat `json:"containerFormat"`

	// name of the image.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	Name string `json:"name,omitempty"`

	// visibility of the image.
	// +optional
	Visibility Visibility `json:"visibility,omitempty"`

	// minDisk is the disk space in GiB needed to boot the image.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinDisk *int32 `json:"minDisk,omitempty"`

	// minRam is the memory in MiB needed to boot the image.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinRAM *int32 `json:"minRam,omitempty"`

	// tags of the image.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	Tags []string `json:"tags,omitempty"`

	// protected images cannot be deleted.
	// +optional
	Protected *bool `json:"protected,omitempty"`

	// properties are free-form extra properties of the image.
	// +optional
	// +kubebuilder:validation:MaxProperties=128
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 255 && size(self[k]) <= 65535)",message="imageProperties.properties keys must be at most 255 and values at most 65535 characters"
	Properties map[string]string `json:"properties,omitempty"`
}

// ImageReference names an Image in the task's namespace.
type ImageReference struct {
	// name of the Image.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// onFailure is what a failed import leaves the Image in. Queued (the
	// default) returns it to queued, as Glance's web-download does, so
	// that another import may fill it; clients that poll for active then
	// wait until their own timeout. Killed marks it killed, so that they
	// stop at once.
	// +optional
	// +kubebuilder:default=Queued
	OnFailure ImageFailurePolicy `json:"onFailure,omitempty"`
}

// ImageFailurePolicy is what a failed import leaves its Image in.
// +kubebuilder:validation:Enum=Queued;Killed
type ImageFailurePolicy string

const (
	ImageFailureQueued ImageFailurePolicy = "Queued"
	ImageFailureKilled ImageFailurePolicy = "Killed"
)

// RecordedFailure is why a recorded task failed.
type RecordedFailure struct {
	// reason is the CamelCase reason of the task's conditions.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z][A-Za-z0-9]*$`
	Reason string `json:"reason"`

	// message is the task's status.message.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message"`
}

// SourceOptions are fetch options beyond Glance's.
type SourceOptions struct {
	// checksums the source bytes must have. The import fails permanently
	// when one does not match.
	// +optional
	// +listType=map
	// +listMapKey=algorithm
	// +kubebuilder:validation:MaxItems=3
	Checksums []Checksum `json:"checksums,omitempty"`

	// credentialsSecretRef names a Secret in the task's namespace with
	// either "username" and "password" (HTTP basic auth) or "token" (a
	// bearer token). Credentials are never sent across a redirect to
	// another origin.
	// +optional
	CredentialsSecretRef *corev1.LocalObjectReference `json:"credentialsSecretRef,omitempty"`

	// caBundleSecretRef names a Secret in the task's namespace whose
	// "ca.crt" holds the PEM certificates that verify an https source,
	// instead of the importer's system roots.
	// +optional
	CABundleSecretRef *corev1.LocalObjectReference `json:"caBundleSecretRef,omitempty"`

	// connectTimeoutSeconds bounds the TCP and TLS handshake.
	// +optional
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=600
	ConnectTimeoutSeconds *int32 `json:"connectTimeoutSeconds,omitempty"`

	// idleTimeoutSeconds fails an attempt whose source sends no byte for
	// this long.
	// +optional
	// +kubebuilder:default=60
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	IdleTimeoutSeconds *int32 `json:"idleTimeoutSeconds,omitempty"`
}

// Checksum is an expected digest of the source bytes.
// +kubebuilder:validation:XValidation:rule="self.algorithm != 'md5' || size(self.value) == 32",message="an md5 checksum value must be 32 hex digits"
// +kubebuilder:validation:XValidation:rule="self.algorithm != 'sha256' || size(self.value) == 64",message="a sha256 checksum value must be 64 hex digits"
// +kubebuilder:validation:XValidation:rule="self.algorithm != 'sha512' || size(self.value) == 128",message="a sha512 checksum value must be 128 hex digits"
type Checksum struct {
	// algorithm of the digest.
	// +required
	Algorithm ChecksumAlgorithm `json:"algorithm"`

	// value is the digest in lower-case hex.
	// +required
	// +kubebuilder:validation:Pattern=`^[0-9a-f]+$`
	// +kubebuilder:validation:MaxLength=128
	Value string `json:"value"`
}

// TaskStatus is the Glance task status.
// +kubebuilder:validation:Enum=pending;processing;success;failure
type TaskStatus string

const (
	TaskPending    TaskStatus = "pending"
	TaskProcessing TaskStatus = "processing"
	TaskSuccess    TaskStatus = "success"
	TaskFailure    TaskStatus = "failure"
)

// Terminal reports whether no transition leaves s.
func (s TaskStatus) Terminal() bool { return s == TaskSuccess || s == TaskFailure }

// ImageImportTaskStatus is the Glance task status plus what Kubernetes
// users expect of a status.
type ImageImportTaskStatus struct {
	// status is the Glance task status: pending, then processing, then
	// success or failure.
	// +optional
	Status TaskStatus `json:"status,omitempty"`

	// message is why the task failed or, while it waits, what keeps its
	// importer from starting; empty otherwise.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Message string `json:"message,omitempty"`

	// result of a successful import.
	// +optional
	Result *TaskResult `json:"result,omitempty"`

	// expiresAt is when a finished task expires (completion + the
	// operator's task TTL).
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`

	// updatedAt is the time of the last status transition (Glance's updated_at).
	// +optional
	UpdatedAt *metav1.Time `json:"updatedAt,omitempty"`

	// image describes the stored image after a successful import.
	// +optional
	Image *ImageInfo `json:"image,omitempty"`

	// progress of the running import.
	// +optional
	Progress *Progress `json:"progress,omitempty"`

	// importerResult is the importer's report of the image it stored (the
	// JSON its termination message also holds), which it pushes before it
	// exits so that the task ends without waiting for the kubelet to report
	// the pod's end. The reconciler reads it into image and clears it.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	ImporterResult string `json:"importerResult,omitempty"`

	// conditions: Ready summarises the task (True on success, False on
	// failure, Unknown while it runs); Reconciling is True while the import
	// runs; Stalled is True once it has failed.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// jobName is the batch/v1 Job that runs the import.
	// +optional
	JobName string `json:"jobName,omitempty"`

	// attempts is how many importer pods have run, retries included.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// startTime is when the import Job started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the task reached success or failure.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// TaskResult is Glance's task result.
type TaskResult struct {
	// imageID is the id of the imported image.
	ImageID string `json:"imageID"`
}

// ImageInfo is the metadata of a stored image, in Glance's terms.
type ImageInfo struct {
	// size of the stored image in bytes.
	Size int64 `json:"size"`
	// virtualSize of the disk in bytes.
	// +optional
	VirtualSize int64 `json:"virtualSize,omitempty"`
	// checksum is the md5 of the stored image (Glance's legacy checksum).
	// +optional
	Checksum string `json:"checksum,omitempty"`
	// osHashAlgo is the algorithm of osHashValue.
	// +optional
	OSHashAlgo string `json:"osHashAlgo,omitempty"`
	// osHashValue is the multihash of the stored image.
	// +optional
	OSHashValue string `json:"osHashValue,omitempty"`
	// sha256 is the hex SHA-256 of the stored image (the bytes md5 and
	// osHashValue describe), as sha256sum prints it.
	// +optional
	SHA256 string `json:"sha256,omitempty"`
	// sourceFormat is the format detected in the source bytes.
	// +optional
	SourceFormat string `json:"sourceFormat,omitempty"`
	// diskFormat is the stored format.
	// +optional
	DiskFormat string `json:"diskFormat,omitempty"`
	// containerFormat is the stored container format: bare for the disk
	// taken out of an OVA, as Glance stores it.
	// +optional
	ContainerFormat string `json:"containerFormat,omitempty"`
	// location of the image in the store.
	// +optional
	Location string `json:"location,omitempty"`
	// unpacked says what the importer took out of a compressed source or
	// an OVA; absent when the source was the disk image itself.
	// +optional
	Unpacked *UnpackedSource `json:"unpacked,omitempty"`
}

// UnpackedSource is what a compressed source or an OVA held.
type UnpackedSource struct {
	// compression of the source, detected from its bytes: gzip, xz, zstd
	// or bzip2.
	// +optional
	Compression string `json:"compression,omitempty"`
	// compressedSize is the bytes of the compressed stream.
	// +optional
	CompressedSize int64 `json:"compressedSize,omitempty"`
	// uncompressedSize is the bytes it decompressed to.
	// +optional
	UncompressedSize int64 `json:"uncompressedSize,omitempty"`
	// ovaEntry is the disk's entry in the OVA.
	// +optional
	OVAEntry string `json:"ovaEntry,omitempty"`
	// ovfName is the name of the OVF's virtual system.
	// +optional
	OVFName string `json:"ovfName,omitempty"`
	// ovfProduct is the product of the OVF's ProductSection.
	// +optional
	OVFProduct string `json:"ovfProduct,omitempty"`
	// ovfVendor is the vendor of the OVF's ProductSection.
	// +optional
	OVFVendor string `json:"ovfVendor,omitempty"`
	// ovfVersion is the version of the OVF's ProductSection.
	// +optional
	OVFVersion string `json:"ovfVersion,omitempty"`
}

// Progress of a running import.
type Progress struct {
	// phase of the importer: Waiting, Fetching, Converting, Storing, Done.
	// +optional
	Phase string `json:"phase,omitempty"`
	// percent of bytesTotal done; absent when the total is unknown.
	// +optional
	Percent *int32 `json:"percent,omitempty"`
	// bytesDone so far.
	// +optional
	BytesDone int64 `json:"bytesDone,omitempty"`
	// bytesTotal to transfer, when the source tells it.
	// +optional
	BytesTotal int64 `json:"bytesTotal,omitempty"`
}

// ImageImportTask imports a virtual machine disk image from a URL, as an
// OpenStack Glance v2 task of type "import" does.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=iit,categories=imageimport
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.status`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress.phase`
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.status.result.imageID`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ImageImportTask struct {
	metav1.TypeMeta `json:",inline"`

	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the import to run.
	// +required
	Spec ImageImportTaskSpec `json:"spec"`

	// status is what happened.
	// +optional
	Status ImageImportTaskStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ImageImportTaskList is a list of ImageImportTask.
type ImageImportTaskList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageImportTask `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ImageImportTask{}, &ImageImportTaskList{})
}
