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
		ReasonUnschedulable, ReasonImagePullFailed, ReasonContainerCreateFailed:
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
	// AnnotationExpiryPolicy overrides spec.expiryPolicy; the Glance shim
	// sets it to Delete on the tasks it creates, as Glance expires tasks.
	AnnotationExpiryPolicy = "tasks.imageimport.io/expiry-policy"
	// AnnotationInputProblem carries Glance's message for an input that
	// Glance accepts at create time and fails when the task runs (the shim
	// sets it); the reconciler fails such a task with that message.
	AnnotationInputProblem = "tasks.imageimport.io/input-problem"
)
