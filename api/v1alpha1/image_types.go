package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ImagePhase is the Glance image status.
// +kubebuilder:validation:Enum=queued;saving;uploading;importing;active;deactivated;killed;deleted;pending_delete
type ImagePhase string

const (
	// ImageQueued: the record exists and holds no data yet; an import may fill it.
	ImageQueued ImagePhase = "queued"
	// ImageImporting: a task is importing data into the image.
	ImageImporting ImagePhase = "importing"
	// ImageActive: the image's data is stored and can be read.
	ImageActive ImagePhase = "active"
	// ImageKilled: the import that created the image failed; it holds no data.
	ImageKilled ImagePhase = "killed"
	// ImageDeleted: the image is being deleted and its data removed.
	ImageDeleted ImagePhase = "deleted"
)

// ImageSpec is what an image's owner may set: Glance's user-writable image
// fields, in Kubernetes field style.
type ImageSpec struct {
	// name of the image, as Glance's (free text, not unique; the Glance id
	// is metadata.name).
	// +optional
	// +kubebuilder:validation:MaxLength=255
	Name string `json:"name,omitempty"`

	// diskFormat is the format the image's data is stored in. It may be
	// empty while the image is queued.
	// +optional
	DiskFormat DiskFormat `json:"diskFormat,omitempty"`

	// containerFormat is the Glance container format of the stored data.
	// +optional
	ContainerFormat ContainerFormat `json:"containerFormat,omitempty"`

	// visibility of the image, as in Glance.
	// +optional
	// +kubebuilder:default=shared
	Visibility Visibility `json:"visibility,omitempty"`

	// protected images cannot be deleted: the API server refuses the
	// deletion until protected is false again.
	// +optional
	// +kubebuilder:default=false
	Protected bool `json:"protected,omitempty"`

	// tags of the image.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=128
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	Tags []string `json:"tags,omitempty"`

	// minDisk is the disk space in GiB needed to boot the image.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinDisk int32 `json:"minDisk,omitempty"`

	// minRam is the memory in MiB needed to boot the image.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MinRAM int32 `json:"minRam,omitempty"`

	// properties are free-form extra properties of the image. An import
	// from an OVA adds what its OVF descriptor says, when it says it, as
	// Glance's OVF processing adds what it reads: ovf_name (the virtual
	// system's name), ovf_product, ovf_vendor and ovf_version (its
	// ProductSection). It adds them once, when the image becomes active,
	// never replaces a property the image has, and leaves out what the
	// limits below leave no room for (an Event says which); they are the
	// owner's properties from then on, to change or remove.
	// +optional
	// +kubebuilder:validation:MaxProperties=128
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 255 && size(self[k]) <= 65535)",message="properties keys must be at most 255 and values at most 65535 characters"
	Properties map[string]string `json:"properties,omitempty"`
}

// ImageStatus is what the operator knows of the image's data.
type ImageStatus struct {
	// status is the Glance image status: queued, importing, active,
	// killed or deleted.
	// +optional
	Status ImagePhase `json:"status,omitempty"`

	// size of the stored data in bytes.
	// +optional
	Size *int64 `json:"size,omitempty"`

	// virtualSize of the disk in bytes.
	// +optional
	VirtualSize *int64 `json:"virtualSize,omitempty"`

	// checksum is the md5 of the stored data (Glance's legacy checksum).
	// +optional
	Checksum string `json:"checksum,omitempty"`

	// osHashAlgo is the algorithm of osHashValue.
	// +optional
	OSHashAlgo string `json:"osHashAlgo,omitempty"`

	// osHashValue is the multihash of the stored data.
	// +optional
	OSHashValue string `json:"osHashValue,omitempty"`

	// sha256 is the hex SHA-256 of the stored data, as sha256sum prints it.
	// +optional
	SHA256 string `json:"sha256,omitempty"`

	// location of the data, as a URL users can read (pvc://namespace/claim/path).
	// +optional
	Location string `json:"location,omitempty"`

	// diskFormat is the format the data is stored in, once stored.
	// +optional
	DiskFormat DiskFormat `json:"diskFormat,omitempty"`

	// containerFormat is the container format of the stored data: bare for
	// the disk taken out of an OVA, as Glance stores it.
	// +optional
	ContainerFormat ContainerFormat `json:"containerFormat,omitempty"`

	// importTask is the name of the ImageImportTask that last imported, or
	// is importing, into this image.
	// +optional
	ImportTask string `json:"importTask,omitempty"`

	// importTaskUID is that task's UID: a task deleted and created again
	// under the same name (as GitOps tools replace an object) is another
	// import, which waits for the first to be cancelled.
	// +optional
	ImportTaskUID types.UID `json:"importTaskUID,omitempty"`

	// unpacked says what the import took out of a compressed source or an OVA.
	// +optional
	Unpacked *UnpackedSource `json:"unpacked,omitempty"`

	// updatedAt is the time of the last change of the image (Glance's updated_at).
	// +optional
	UpdatedAt *metav1.Time `json:"updatedAt,omitempty"`

	// conditions: Ready is True when the image is active, Unknown while it
	// imports, and False otherwise: reason Queued while it waits for an
	// import, the failed import's reason (and message) when one failed,
	// Deleting while its data is removed.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Image is the record of one stored virtual machine disk image, with
// Glance's image fields. An ImageImportTask creates it, or fills a queued
// one; deleting it removes its data. Its metadata.name is its Glance id.
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="metadata.name must be at most 63 characters: it is the image id, which labels carry"
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmimage,categories=imageimport
// +kubebuilder:printcolumn:name="Display Name",type=string,JSONPath=`.spec.name`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.status`
// +kubebuilder:printcolumn:name="Format",type=string,JSONPath=`.spec.diskFormat`
// +kubebuilder:printcolumn:name="Size",type=integer,JSONPath=`.status.size`
// +kubebuilder:printcolumn:name="Protected",type=boolean,JSONPath=`.spec.protected`,priority=1
// +kubebuilder:printcolumn:name="Task",type=string,JSONPath=`.status.importTask`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Image struct {
	metav1.TypeMeta `json:",inline"`

	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is what the image's owner may change.
	// +optional
	Spec ImageSpec `json:"spec,omitempty"`

	// status is what the operator knows of the image's data.
	// +optional
	Status ImageStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// ImageList is a list of Image.
type ImageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Image `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Image{}, &ImageList{})
}
