package v1alpha1

// Condition types. They follow kstatus: Ready is the summary; Reconciling
// and Stalled are abnormal-true and present only while true.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
)

// Condition reasons. They are part of the API: never rename one.
const (
	// ReasonJobCreated: the import Job exists and no pod runs yet.
	ReasonJobCreated = "JobCreated"
	// ReasonImporting: an importer pod is running.
	ReasonImporting = "Importing"
	// ReasonSucceeded: the image is stored.
	ReasonSucceeded = "Succeeded"
	// ReasonInvalidInput: the task input lacks what an import needs.
	ReasonInvalidInput = "InvalidInput"
	// ReasonImportFailed: the importer refused the source or failed permanently.
	ReasonImportFailed = "ImportFailed"
	// ReasonBackoffLimitExceeded: transient failures used up the retries.
	ReasonBackoffLimitExceeded = "BackoffLimitExceeded"
	// ReasonDeadlineExceeded: the import ran past activeDeadlineSeconds.
	ReasonDeadlineExceeded = "DeadlineExceeded"
	// ReasonJobDeleted: the import Job was deleted before it finished.
	ReasonJobDeleted = "JobDeleted"
	// ReasonJobConflict: a Job with the task's Job name exists and is not the task's.
	ReasonJobConflict = "JobConflict"
	// ReasonImageNotFound: the Image that spec.image names does not exist.
	ReasonImageNotFound = "ImageNotFound"
	// ReasonImageNotQueued: the Image that spec.image names is not queued
	// (it is active, killed, or another task imports into it); as Glance,
	// an import only fills a queued image.
	ReasonImageNotQueued = "ImageNotQueued"
	// ReasonPriorImportCancelling: the Image is importing for an earlier
	// task of the same name, deleted since; the import starts once that
	// one is cancelled and the image queued again.
	ReasonPriorImportCancelling = "PriorImportCancelling"
	// ReasonImageDeleted: the task's Image is being deleted.
	ReasonImageDeleted = "ImageDeleted"
	// ReasonImageConflict: an Image with the id a task would create exists
	// and is not that task's.
	ReasonImageConflict = "ImageConflict"
	// ReasonStorageClassMissing: a Volume destination names no storage
	// class, the manager has no --volume-storage-class and the cluster has
	// no default StorageClass: nothing would ever bind its claim.
	ReasonStorageClassMissing = "StorageClassMissing"
	// ReasonVolumeConflict: a PersistentVolumeClaim with the image's volume
	// name exists and is not the image's.
	ReasonVolumeConflict = "VolumeConflict"
)

// Reasons of an Image's Ready condition, besides a failed import's own
// (the task's reason, such as ImportFailed) and Importing and Succeeded.
const (
	// ReasonQueued: the image holds no data and no import runs.
	ReasonQueued = "Queued"
	// ReasonKilled: the import that was to fill the image failed.
	ReasonKilled = "Killed"
	// ReasonDeleting: the image is being deleted and its data removed.
	ReasonDeleting = "Deleting"
	// ReasonImportTaskDeleted: the task that imported into the image was
	// deleted before it ended.
	ReasonImportTaskDeleted = "ImportTaskDeleted"
	// ReasonCleanupFailed: the Job that removes the image's data failed;
	// another one runs.
	ReasonCleanupFailed = "CleanupFailed"
	// ReasonLocationRefused: the image's location is not a file of a store
	// in the image's own namespace: its cleanup removes nothing there, and
	// the deletion waits for the location to be corrected (or the data
	// finalizer to be removed by hand).
	ReasonLocationRefused = "LocationRefused"
)

// Reasons the importer cannot start. While the task waits, they are the
// reason of its Ready and Reconciling conditions and its message says why;
// the task fails with the same reason when the problem outlasts its bound
// (the manager's --store-claim-timeout for a missing claim, the task's
// activeDeadlineSeconds for the others).
const (
	// ReasonStoreClaimMissing: the image store's PersistentVolumeClaim does
	// not exist in the task's namespace (or is being deleted).
	ReasonStoreClaimMissing = "StoreClaimMissing"
	// ReasonQuotaExceeded: a ResourceQuota refuses the importer pod.
	ReasonQuotaExceeded = "QuotaExceeded"
	// ReasonPodCreateFailed: the API server refuses the importer pod for
	// another reason (Pod Security admission, a webhook, a LimitRange).
	ReasonPodCreateFailed = "PodCreateFailed"
	// ReasonUnschedulable: no node can run the importer pod.
	ReasonUnschedulable = "Unschedulable"
	// ReasonImagePullFailed: the node cannot pull the importer image.
	ReasonImagePullFailed = "ImagePullFailed"
	// ReasonContainerCreateFailed: the node cannot start the importer
	// container (a volume that does not mount, a sandbox that does not start).
	ReasonContainerCreateFailed = "ContainerCreateFailed"
)

// StartProblem reports whether reason is one of the reasons the importer
// cannot start.
func StartProblem(reason string) bool {
	switch reason {
	case ReasonStoreClaimMissing, ReasonQuotaExceeded, ReasonPodCreateFailed,
		ReasonUnschedulable, ReasonImagePullFailed, ReasonContainerCreateFailed, ReasonPriorImportCancelling:
		return true
	}
	return false
}

// Well-known labels and annotations.
const (
	// LabelTaskName is set on the Job and its pods: the owning task's name.
	LabelTaskName = "tasks.imageimport.io/task-name"
	// LabelTaskUID is set on the Job and its pods: the owning task's UID.
	LabelTaskUID = "tasks.imageimport.io/task-uid"
	// LabelImageID is set on a task once it is linked to its Image (the
	// Image's name, its Glance id), and on the objects made for an Image
	// (the import's Job and pods, the cleanup Job): how the shim finds an
	// image's tasks, and the operator an image's importer pods.
	LabelImageID = "tasks.imageimport.io/image-id"
	// AnnotationSource, on an image's volume claim, is the URL it was
	// imported from; AnnotationSourceFormat and AnnotationDiskFormat its
	// formats; AnnotationChecksum (md5), AnnotationOSHash
	// (sha512:<hex>), AnnotationSHA256 (<hex>), AnnotationVirtualSize and
	// AnnotationSize are set once the import succeeded.
	AnnotationSource       = "tasks.imageimport.io/source"
	AnnotationSourceFormat = "tasks.imageimport.io/source-format"
	AnnotationDiskFormat   = "tasks.imageimport.io/disk-format"
	AnnotationChecksum     = "tasks.imageimport.io/checksum"
	AnnotationOSHash       = "tasks.imageimport.io/os-hash"
	AnnotationSHA256       = "tasks.imageimport.io/sha256"
	AnnotationVirtualSize  = "tasks.imageimport.io/virtual-size"
	AnnotationSize         = "tasks.imageimport.io/size"
	// FinalizerImageData holds an Image whose data may be in the store
	// until a cleanup Job has removed it.
	FinalizerImageData = "tasks.imageimport.io/image-data"

	// AnnotationExpiryPolicy is no longer read: the shim sets
	// spec.expiryPolicy: Delete.
	//
	// Deprecated: set spec.expiryPolicy.
	AnnotationExpiryPolicy = "tasks.imageimport.io/expiry-policy"
	// AnnotationInputProblem is no longer read: the shim records the tasks
	// Glance accepts and fails with spec.recordedFailure.
	//
	// Deprecated: set spec.recordedFailure.
	AnnotationInputProblem = "tasks.imageimport.io/input-problem"
)
