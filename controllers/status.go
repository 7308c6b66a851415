package controllers

import (
	"cmp"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// observation is what the reconciler saw of a task's import.
type observation struct {
	// failure is decided without a running Job: a recorded failure, an
	// Image that cannot be imported into, a Job deleted before it
	// finished, a Job that is not ours.
	failure *outcome
	// job is the task's Job; nil when there is none.
	job *batchv1.Job
	// result is the import result of the pod that ended the Job, if any.
	result *importresult.Result
	// podMessage is that pod's termination message or log tail when it
	// is not an import result (the importer crashed, or was OOM-killed).
	podMessage string
	// storeLocation is where a successful import's image is.
	storeLocation string
	// releasing is set while a volume's importer pods go, before the
	// stored image is reported.
	releasing bool
	// waiting is what keeps the importer from starting, if anything.
	waiting *problem
	// recheck is when to look again at a task that waits, if no watch
	// would tell: the end of its wait, or the next look at its pod.
	recheck time.Duration
}

// outcome is the Glance status an observation implies, with the condition
// reason and the user-facing message.
type outcome struct {
	status  tasksv1.TaskStatus
	reason  string
	message string
}

// transition is one step of the Glance state machine that a reconcile took.
type transition struct {
	from, to tasksv1.TaskStatus
	reason   string
	message  string
}

// outcomeOf computes the outcome of an observation. It is pure.
func outcomeOf(t *tasksv1.ImageImportTask, o observation) outcome {
	switch {
	case o.failure != nil:
		return *o.failure
	case o.job == nil && o.waiting != nil:
		return outcome{tasksv1.TaskPending, o.waiting.reason, truncate(o.waiting.message, 1024)}
	case o.job == nil:
		return outcome{tasksv1.TaskPending, tasksv1.ReasonJobCreated, ""}
	}
	job := o.job
	done := finishedCondition(job)
	switch {
	case o.releasing:
		return outcome{tasksv1.TaskProcessing, tasksv1.ReasonImporting, ""}
	case o.result != nil && !o.result.Failed():
		// The importer stored the image and said so: the task succeeded,
		// whatever the Job does after (it may still be counting the pod,
		// or reach its deadline while the pod exits).
		return outcome{tasksv1.TaskSuccess, tasksv1.ReasonSucceeded, ""}
	case done == nil && o.waiting != nil:
		status := tasksv1.TaskPending
		if hasRun(job) {
			status = tasksv1.TaskProcessing // a retry that cannot start
		}
		return outcome{status, o.waiting.reason, truncate(o.waiting.message, 1024)}
	case done == nil && hasRun(job):
		return outcome{tasksv1.TaskProcessing, tasksv1.ReasonImporting, ""}
	case done == nil:
		return outcome{tasksv1.TaskPending, tasksv1.ReasonJobCreated, ""}
	case done.Type == batchv1.JobComplete:
		return outcome{tasksv1.TaskFailure, tasksv1.ReasonImportFailed, "The importer exited without reporting an imported image."}
	}
	return failedOutcome(t, done, o)
}

// failedOutcome explains a failed Job in the words of its last pod when it
// left any, and of the Job controller otherwise.
func failedOutcome(t *tasksv1.ImageImportTask, failed *batchv1.JobCondition, o observation) outcome {
	why := "The importer failed."
	switch {
	case o.result != nil && o.result.Failed():
		why = o.result.Error
	case o.podMessage != "":
		why = "The importer failed: " + o.podMessage
	}
	switch failed.Reason {
	case batchv1.JobReasonDeadlineExceeded:
		deadline := ptr.Deref(t.Spec.ActiveDeadlineSeconds, 3600)
		// The Job controller deletes the pods of a Job past its deadline:
		// when they are gone, the task's status remembers why they did
		// not start.
		if p := cmp.Or(o.waiting, startProblemOf(t)); p != nil {
			return outcome{tasksv1.TaskFailure, p.reason, truncate(fmt.Sprintf(
				"The import did not finish within %d seconds: %s", deadline, p.message), 1024)}
		}
		if t.Status.Status != tasksv1.TaskProcessing && !hasRun(o.job) {
			return outcome{tasksv1.TaskFailure, tasksv1.ReasonDeadlineExceeded, fmt.Sprintf(
				"The importer did not start within %d seconds.", deadline)}
		}
		return outcome{tasksv1.TaskFailure, tasksv1.ReasonDeadlineExceeded, fmt.Sprintf(
			"The import did not finish within %d seconds.", deadline)}
	case batchv1.JobReasonBackoffLimitExceeded:
		return outcome{tasksv1.TaskFailure, tasksv1.ReasonBackoffLimitExceeded, fmt.Sprintf(
			"%s Gave up after %d attempts.", ensurePeriod(why), o.job.Status.Failed)}
	}
	return outcome{tasksv1.TaskFailure, tasksv1.ReasonImportFailed, why}
}

// applyOutcome moves the task's status to the outcome along the transitions
// Glance allows (pending -> processing|failure, processing -> success|failure)
// and returns the transitions it took. A finished task never changes.
func applyOutcome(t *tasksv1.ImageImportTask, o observation, out outcome, now time.Time, ttl time.Duration) []transition {
	st := &t.Status
	if st.Status.Terminal() {
		return nil
	}
	if st.Status == tasksv1.TaskProcessing && out.status == tasksv1.TaskPending {
		out.status = tasksv1.TaskProcessing // between two attempts
		if !tasksv1.StartProblem(out.reason) {
			out.reason = tasksv1.ReasonImporting
		}
	}
	if o.job != nil {
		st.JobName = o.job.Name
		st.StartTime = o.job.Status.StartTime
		st.Attempts = max(st.Attempts, attempts(o))
	}
	var taken []transition
	for _, to := range path(st.Status, out.status) {
		tr := transition{from: st.Status, to: to, reason: out.reason, message: out.message}
		if to != out.status { // passed through on the way to the outcome
			tr.reason, tr.message = tasksv1.ReasonImporting, ""
		}
		taken = append(taken, tr)
		st.Status = to
		st.UpdatedAt = &metav1.Time{Time: now}
	}
	st.Message = out.message
	setConditions(t, out)
	if len(taken) > 0 || st.Progress == nil {
		// The importer pushes its own phase and bytes while it runs; the
		// reconciler sets the phase only when the status moves.
		p := ptr.Deref(st.Progress, tasksv1.Progress{})
		p.Phase = phase(st.Status)
		st.Progress = &p
	}
	if st.Status.Terminal() {
		finish(t, o, now, ttl)
	}
	return taken
}

// path is the statuses a task passes through from one status to another.
// Glance has no pending -> success: a task that finished before we saw it
// run passes through processing.
func path(from, to tasksv1.TaskStatus) []tasksv1.TaskStatus {
	if from == to {
		return nil
	}
	var steps []tasksv1.TaskStatus
	if from == "" {
		steps = append(steps, tasksv1.TaskPending)
		from = tasksv1.TaskPending
	}
	if from == tasksv1.TaskPending && to == tasksv1.TaskSuccess {
		steps = append(steps, tasksv1.TaskProcessing)
	}
	if to != tasksv1.TaskPending {
		steps = append(steps, to)
	}
	return steps
}

// finish records a terminal outcome: completion, expiry and, on success,
// the image.
func finish(t *tasksv1.ImageImportTask, o observation, now time.Time, ttl time.Duration) {
	st := &t.Status
	completed := metav1.Time{Time: now}
	if o.job != nil && o.job.Status.CompletionTime != nil {
		completed = *o.job.Status.CompletionTime
	}
	st.CompletionTime = &completed
	st.ImporterResult = "" // read into image below, or of no use
	st.ExpiresAt = &metav1.Time{Time: completed.Add(ttl)}
	if st.Status != tasksv1.TaskSuccess {
		return
	}
	r := o.result
	st.Result = &tasksv1.TaskResult{ImageID: taskImageID(t)}
	// The importer's last push may not have arrived (it exits at once), and
	// its bytes were the last phase's: the stored image is all done.
	st.Progress = &tasksv1.Progress{Phase: phase(st.Status), Percent: ptr.To[int32](100), BytesDone: r.Size, BytesTotal: r.Size}
	st.Image = &tasksv1.ImageInfo{
		Size:            r.Size,
		VirtualSize:     r.VirtualSize,
		Checksum:        r.Checksum,
		OSHashAlgo:      r.OSHashAlgo,
		OSHashValue:     r.OSHashValue,
		SHA256:          r.SHA256,
		SourceFormat:    r.SourceFormat,
		DiskFormat:      r.DiskFormat,
		ContainerFormat: storedContainerFormat(t, r),
		Location:        o.storeLocation,
		Unpacked:        unpackedSource(r.Unpacked),
	}
}

// storedContainerFormat is the task's container format, but bare for the
// disk an OVA held: the OVA is not what was stored.
func storedContainerFormat(t *tasksv1.ImageImportTask, r *importresult.Result) string {
	if r.Unpacked != nil && r.Unpacked.OVAEntry != "" {
		return "bare"
	}
	return string(t.Spec.Input.ImageProperties.ContainerFormat)
}

func unpackedSource(u *importresult.Unpacked) *tasksv1.UnpackedSource {
	if u == nil {
		return nil
	}
	return &tasksv1.UnpackedSource{
		Compression: u.Compression, CompressedSize: u.CompressedSize, UncompressedSize: u.UncompressedSize,
		OVAEntry: u.OVAEntry, OVFName: u.OVFName, OVFProduct: u.OVFProduct, OVFVendor: u.OVFVendor, OVFVersion: u.OVFVersion,
	}
}

// setConditions sets the kstatus conditions of an outcome: Ready sums it
// up; Reconciling is present while the import runs, Stalled once it failed.
func setConditions(t *tasksv1.ImageImportTask, out outcome) {
	conds := &t.Status.Conditions
	set := func(typ string, status metav1.ConditionStatus, msg string) {
		meta.SetStatusCondition(conds, metav1.Condition{
			Type: typ, Status: status, Reason: out.reason, Message: truncate(msg, 1024), ObservedGeneration: t.Generation,
		})
	}
	switch out.status {
	case tasksv1.TaskPending, tasksv1.TaskProcessing:
		msg := "Waiting for the importer to start"
		if out.status == tasksv1.TaskProcessing {
			msg = "Importing " + t.Spec.Input.ImportFrom
		}
		if out.message != "" {
			msg = out.message // what keeps the importer from starting
		}
		set(tasksv1.ConditionReady, metav1.ConditionUnknown, msg)
		set(tasksv1.ConditionReconciling, metav1.ConditionTrue, msg)
		meta.RemoveStatusCondition(conds, tasksv1.ConditionStalled)
	case tasksv1.TaskSuccess:
		set(tasksv1.ConditionReady, metav1.ConditionTrue, "Image imported")
		meta.RemoveStatusCondition(conds, tasksv1.ConditionReconciling)
		meta.RemoveStatusCondition(conds, tasksv1.ConditionStalled)
	case tasksv1.TaskFailure:
		set(tasksv1.ConditionReady, metav1.ConditionFalse, out.message)
		set(tasksv1.ConditionStalled, metav1.ConditionTrue, out.message)
		meta.RemoveStatusCondition(conds, tasksv1.ConditionReconciling)
	}
}

func phase(s tasksv1.TaskStatus) string {
	switch s {
	case tasksv1.TaskPending:
		return "Waiting"
	case tasksv1.TaskProcessing:
		return "Importing"
	case tasksv1.TaskSuccess:
		return "Done"
	}
	return "Failed"
}

// finishedCondition is the Job's Complete or Failed condition. Since
// Kubernetes 1.31 SuccessCriteriaMet and FailureTarget come first, while
// pods still terminate: they are not the end yet.
// attempts counts the importer pods a Job ran: those it counted, those
// running, and those that ended but are not counted yet (the Job controller
// counts a pod in two status updates); at least one when a pod left a result.
func attempts(o observation) int32 {
	st := o.job.Status
	n := st.Failed + st.Succeeded + st.Active
	if u := st.UncountedTerminatedPods; u != nil {
		n += int32(len(u.Failed) + len(u.Succeeded))
	}
	if o.result != nil || o.podMessage != "" {
		n = max(n, 1)
	}
	return n
}

func finishedCondition(job *batchv1.Job) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		c := &job.Status.Conditions[i]
		if c.Status == corev1.ConditionTrue && (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) {
			return c
		}
	}
	return nil
}

// jobCondition is the Job's condition of type typ when it is true.
func jobCondition(job *batchv1.Job, typ batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		if c := &job.Status.Conditions[i]; c.Type == typ && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

// hasRun reports whether an importer pod of the Job has started.
func hasRun(job *batchv1.Job) bool {
	return ptr.Deref(job.Status.Ready, 0) > 0 || job.Status.Failed > 0 || job.Status.Succeeded > 0
}

func ensurePeriod(s string) string {
	if s == "" || strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

// truncate bounds s to n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
