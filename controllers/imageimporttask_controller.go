// Package controllers holds the ImageImportTask reconciler, which runs one
// batch/v1 Job per task and mirrors what the Job did into the task status,
// and the Image reconciler, which keeps each Image's Glance status and
// removes a deleted Image's data with a cleanup Job. They never fetch a
// user URL nor touch image bytes.
package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// DefaultTaskTTL is how long a finished task lives before it expires, as
// Glance's [task] task_time_to_live.
const DefaultTaskTTL = 48 * time.Hour

// DefaultStoreClaimTimeout is how long a task waits for an image store
// claim that is being deleted to go and be replaced, from the task's
// creation, before it fails. A missing claim is no longer waited for: the
// operator creates it when a storage class can provision it, and the task
// fails at once, saying how to fix it, when none can.
const DefaultStoreClaimTimeout = 5 * time.Minute

// containerCreatingRecheck is how often a task whose importer pod is stuck
// creating its container looks for the kubelet's warnings about it: the
// kubelet reports failed mounts and sandboxes only as events, which are not
// watched (there are too many of them in a cluster to cache).
const containerCreatingRecheck = 30 * time.Second

// DefaultContainerCreatingGrace is how long an importer pod may create its
// container before its warnings are looked for. A pod starting normally
// takes a few seconds, and looking is a list of the namespace's events
// around the cache: once per reconcile of every starting pod, it cost the
// API server more than the rest of an import (bench/throughput).
const DefaultContainerCreatingGrace = 10 * time.Second

// ImageImportTaskReconciler reconciles ImageImportTasks.
type ImageImportTaskReconciler struct {
	client.Client
	// APIReader reads around the cache: pods of a finished Job (we do not
	// cache every pod of the cluster) and Jobs the cache may not have yet.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  recorder.EventRecorder
	// Clock is the reconciler's time, and its work queue's: a requeue
	// after a duration is a requeue after that duration on this clock.
	Clock   clock.WithTicker
	Metrics *Metrics

	Importer ImporterConfig
	// TaskTTL is the time from completion to expiresAt.
	TaskTTL time.Duration
	// StoreClaimTimeout bounds the wait of a task for a store claim being
	// deleted to be replaced, from the task's creation
	// (DefaultStoreClaimTimeout if zero).
	StoreClaimTimeout time.Duration
	// MaxConcurrentReconciles bounds the reconciles that run at once.
	MaxConcurrentReconciles int
	// ContainerCreatingGrace is how long an importer pod creates its
	// container before the kubelet's warnings about it are looked for
	// (DefaultContainerCreatingGrace if zero).
	ContainerCreatingGrace time.Duration
	// PriorImportRecheck is how often a task that waits for its
	// predecessor's import to be cancelled looks again, should it miss the
	// watch event of its image queued again (DefaultPriorImportRecheck if
	// zero).
	PriorImportRecheck time.Duration
	// ImporterReleaseWait bounds the wait of a volume import for its
	// deleted importer pods to go (DefaultImporterReleaseWait if zero).
	ImporterReleaseWait time.Duration

	// conflicts spaces out the retries of a task whose writes keep
	// meeting a newer copy (a cache that lags long, another writer), from
	// conflictRetry up; SetupWithManager makes it.
	conflicts workqueue.TypedRateLimiter[reconcile.Request]

	// importerCache holds the importer pods, the store claims and the Job
	// controller's FailedCreate events, and nothing else (label and field
	// selectors); SetupWithManager makes it.
	importerCache cache.Cache
}

// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=imageimporttasks,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=imageimporttasks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=imageimporttasks/finalizers,verbs=update
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;create
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;create
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=imageimporttasks,verbs=patch
// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=images,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=images/status,verbs=get;patch

// Reconcile makes sure a task has its Job and that its status says what the
// Job did; a finished task is deleted at expiry when it opted in.
func (r *ImageImportTaskReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	task := &tasksv1.ImageImportTask{}
	if err := r.Get(ctx, req.NamespacedName, task); err != nil {
		r.conflicts.Forget(req)
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !task.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // the Job and its pods go with the task (owner references)
	}
	before := task.DeepCopy()
	var tell func() // the events and metrics of the transitions taken
	defer func() {
		// The task's resourceVersion moved only by this reconcile's own
		// writes, each made over the copy it read (labelTask).
		before.ResourceVersion = task.ResourceVersion
		err := r.patchStatus(ctx, before, task, retErr == nil)
		switch {
		case onlyConflicts(err):
			// The task changed since the copy this reconcile read: the
			// cache had not seen our last write yet, or another writer
			// came first. The status was not written, so nothing is told:
			// the transitions were from a status that was no longer the
			// task's, and telling them would tell them twice. Again, from
			// the task as it is.
			res, retErr = ctrl.Result{RequeueAfter: r.conflicts.When(req)}, nil
			return
		case err != nil:
			retErr = kerrors.NewAggregate([]error{retErr, err})
			return
		}
		if tell != nil {
			tell() // once the status that says so is written
		}
		switch {
		case onlyConflicts(retErr):
			// Another writer of the task or of its Image came first: a
			// retry, not an error to log.
			res, retErr = ctrl.Result{RequeueAfter: r.conflicts.When(req)}, nil
		case retErr == nil:
			r.conflicts.Forget(req)
			retErr = r.releaseVolume(ctx, task) // once the end is recorded
		}
	}()

	var recheck time.Duration
	if !task.Status.Status.Terminal() {
		obs, err := r.observeImport(ctx, task)
		if err != nil {
			return ctrl.Result{}, err
		}
		out := outcomeOf(task, obs)
		taken := applyOutcome(task, obs, out, r.Clock.Now(), r.TaskTTL)
		tell = func() { r.record(task, before, obs, taken) }
		if !task.Status.Status.Terminal() {
			recheck = obs.recheck
		}
	}
	if err := r.annotateVolume(ctx, task); err != nil {
		return ctrl.Result{}, err
	}
	res, err := r.expire(ctx, task, before.Status.ExpiresAt != nil)
	if recheck > 0 && (res.RequeueAfter == 0 || recheck < res.RequeueAfter) {
		res.RequeueAfter = recheck
	}
	return res, err
}

// observeImport gathers what the task's import did: its Job, and the
// result its importer pod left once that pod succeeded or the Job finished.
// Before the Job exists, it links the task to its Image.
func (r *ImageImportTaskReconciler) observeImport(ctx context.Context, task *tasksv1.ImageImportTask) (observation, error) {
	if rf := task.Spec.RecordedFailure; rf != nil {
		// A record of an import that failed before it could run (the
		// shim's): it never gets a Job.
		if task.Spec.Image != nil {
			if err := r.labelTask(ctx, task); err != nil {
				return observation{}, err
			}
		}
		return failed(rf.Reason, truncate(rf.Message, 1024)), nil
	}
	job, err := r.currentJob(ctx, task)
	switch {
	case err != nil:
		return observation{}, err
	case job == nil && task.Status.JobName != "":
		// The Job existed (the status names it) and is gone: the import
		// was cancelled behind our back and must not silently run again.
		return failed(tasksv1.ReasonJobDeleted, "The import Job was deleted before the import finished."), nil
	case job == nil:
		if refused, err := r.linkImage(ctx, task); refused != nil || err != nil {
			return ptr.Deref(refused, observation{}), err
		}
		if obs, stop, err := r.prepareDestination(ctx, task); stop || err != nil {
			return obs, err
		}
		if job, err = r.createJob(ctx, task); err != nil {
			return observation{}, err
		}
	case !metav1.IsControlledBy(job, task):
		return failed(tasksv1.ReasonJobConflict, fmt.Sprintf(
			"Job %s already exists and does not belong to this task.", job.Name)), nil
	}
	obs := observation{job: job, storeLocation: imageLocation(task, r.Importer)}
	pods, err := r.jobPods(ctx, r.importerCache, job)
	if err != nil {
		return observation{}, err
	}
	// The importer stored the image and said so: in the status, pushed
	// before it exited, or as its pod's end. The task is done, seconds
	// before the Job controller counts the pod.
	if res := cmp.Or(pushedResult(task), succeededResult(pods)); res != nil {
		return r.succeeded(ctx, task, obs, res)
	}
	if len(pods) == 0 && startProblemOf(task) != nil && finishedCondition(job) == nil && jobCondition(job, batchv1.JobFailureTarget) == nil {
		// The pods that said why the importer could not start are gone.
		// The Job controller marks a Job it ends before it deletes the
		// pods, but pods and Jobs come by different watches: ask the API
		// server, or what they said would be lost with them.
		fresh := &batchv1.Job{}
		switch err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(job), fresh); {
		case err == nil:
			job, obs.job = fresh, fresh
		case !apierrors.IsNotFound(err):
			return observation{}, err
		}
	}
	done := finishedCondition(job)
	if done != nil {
		pods, err := r.jobPods(ctx, r.APIReader, job) // the final word, not a cache that may lag
		if err != nil {
			return observation{}, err
		}
		obs.result, obs.podMessage = lastResult(pods)
		if done.Reason == batchv1.JobReasonDeadlineExceeded {
			// Pods the deadline left, if any, say why nothing ran.
			obs.waiting = startProblem(pods, nil, nil)
		}
		return obs, nil
	}
	if jobCondition(job, batchv1.JobFailureTarget) != nil {
		// The Job controller is ending the Job, and deletes its pods: what
		// they said about why they did not start stays until it has ended.
		obs.waiting = startProblemOf(task)
		return obs, nil
	}
	obs.waiting, obs.recheck, err = r.whyNotRunning(ctx, job, pods)
	return obs, err
}

func failed(reason, message string) observation {
	return observation{failure: &outcome{tasksv1.TaskFailure, reason, message}}
}

// currentJob returns the task's Job, nil when there is none.
func (r *ImageImportTaskReconciler) currentJob(ctx context.Context, task *tasksv1.ImageImportTask) (*batchv1.Job, error) {
	key := client.ObjectKey{Namespace: task.Namespace, Name: jobName(task)}
	job := &batchv1.Job{}
	err := r.Get(ctx, key, job)
	if apierrors.IsNotFound(err) && task.Status.JobName != "" {
		// The cache may lag behind our own create: ask the API server.
		err = r.APIReader.Get(ctx, key, job)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return job, nil
}

// createJob creates the task's Job and what its pod runs as. The Job's
// name is the lock that keeps one Job per task.
func (r *ImageImportTaskReconciler) createJob(ctx context.Context, task *tasksv1.ImageImportTask) (*batchv1.Job, error) {
	if err := r.ensureImporterAccess(ctx, task); err != nil {
		return nil, err
	}
	job := desiredJob(task, r.Importer)
	if err := ctrl.SetControllerReference(task, job, r.Scheme); err != nil {
		return nil, err
	}
	err := r.Create(ctx, job)
	if apierrors.IsAlreadyExists(err) {
		// Created by an earlier reconcile that the cache has not seen yet.
		err = r.APIReader.Get(ctx, client.ObjectKeyFromObject(job), job)
		return job, err
	}
	if err != nil {
		return nil, fmt.Errorf("creating Job %s: %w", job.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Created Job", "job", klog.KObj(job))
	r.Recorder.Eventf(task, job, corev1.EventTypeNormal, "JobCreated", "CreateJob", "Created Job %s", job.Name)
	return job, nil
}

// whyNotRunning looks for what keeps a running Job's importer from
// starting (startProblem). recheck is set while its pod is stuck creating
// its container, whose cause only the kubelet's events tell.
func (r *ImageImportTaskReconciler) whyNotRunning(ctx context.Context, job *batchv1.Job, pods []corev1.Pod) (*problem, time.Duration, error) {
	var events corev1.EventList
	if err := r.importerCache.List(ctx, &events, client.InNamespace(job.Namespace)); err != nil {
		return nil, 0, fmt.Errorf("listing events of Job %s: %w", job.Name, err)
	}
	failedCreates := slices.DeleteFunc(events.Items, func(e corev1.Event) bool { return e.InvolvedObject.UID != job.UID })
	var warnings []corev1.Event
	var recheck time.Duration
	if pod := pendingPod(pods); pod != nil && creating(pod) {
		grace := cmp.Or(r.ContainerCreatingGrace, DefaultContainerCreatingGrace)
		if creatingFor := r.Clock.Since(scheduledAt(pod)); creatingFor < grace {
			return startProblem(pods, failedCreates, nil), grace - creatingFor, nil
		}
		var list corev1.EventList
		err := r.APIReader.List(ctx, &list, client.InNamespace(pod.Namespace), client.MatchingFieldsSelector{
			Selector: fields.AndSelectors(
				fields.OneTermEqualSelector("involvedObject.uid", string(pod.UID)),
				fields.OneTermEqualSelector("type", corev1.EventTypeWarning)),
		}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: "0"}}) // the API server's cache, not etcd
		if err != nil {
			return nil, 0, fmt.Errorf("listing events of pod %s: %w", pod.Name, err)
		}
		warnings, recheck = list.Items, containerCreatingRecheck
	}
	return startProblem(pods, failedCreates, warnings), recheck, nil
}

// scheduledAt is when the pod was bound to its node, or created if that
// is not known.
func scheduledAt(pod *corev1.Pod) time.Time {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return pod.CreationTimestamp.Time
}

// jobPods lists the importer pods of a Job, from reader.
func (r *ImageImportTaskReconciler) jobPods(ctx context.Context, reader client.Reader, job *batchv1.Job) ([]corev1.Pod, error) {
	var pods corev1.PodList
	err := reader.List(ctx, &pods, client.InNamespace(job.Namespace),
		client.MatchingLabels{batchv1.ControllerUidLabel: string(job.UID)})
	if err != nil {
		return nil, fmt.Errorf("listing pods of Job %s: %w", job.Name, err)
	}
	return pods.Items, nil
}

// ensureImporterAccess creates the import's service account and its right
// to patch the task's status. They go with the task (owner references).
func (r *ImageImportTaskReconciler) ensureImporterAccess(ctx context.Context, task *tasksv1.ImageImportTask) error {
	sa, role, binding := importerAccess(task)
	for _, obj := range []client.Object{sa, role, binding} {
		if err := ctrl.SetControllerReference(task, obj, r.Scheme); err != nil {
			return err
		}
		if err := r.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	return nil
}

// lastResult reads the import result from the termination message of the
// Job's last finished importer pod; when the pod left no result, the
// message says how it ended.
func lastResult(pods []corev1.Pod) (*importresult.Result, string) {
	var last *corev1.ContainerStateTerminated
	for i := range pods {
		for _, cs := range pods[i].Status.ContainerStatuses {
			term := cs.State.Terminated
			if cs.Name == importerContainer && term != nil &&
				(last == nil || term.FinishedAt.After(last.FinishedAt.Time)) {
				last = term
			}
		}
	}
	if last == nil {
		return nil, ""
	}
	if res, err := importresult.Parse(last.Message); err == nil {
		return res, ""
	}
	msg := fmt.Sprintf("exit code %d (%s)", last.ExitCode, cmp.Or(last.Reason, "Error"))
	if last.Message != "" {
		msg += ": " + last.Message
	}
	return nil, truncate(msg, 1024)
}

// succeeded observes a stored image. Into a volume, the task ends only once
// the importer pods are gone: the kubelet applies a consumer pod's fsGroup
// to a local volume only when no other pod has it mounted, so a virtual
// machine started at once would be denied its disk. Meanwhile the result
// waits in the status, since the pods that told it are deleted: written
// there first (the importer's push may have failed), and the pods deleted
// by a later reconcile, which that write brings (importerPushedResult).
// Deleted in the same one, a status write that then met a newer task would
// have lost the result with the pods.
func (r *ImageImportTaskReconciler) succeeded(ctx context.Context, task *tasksv1.ImageImportTask, obs observation, res *importresult.Result) (observation, error) {
	if volumeOf(task, r.Importer.Destination) != nil {
		if pushedResult(task) == nil { // none, or one that is not this result (another writer's)
			b, err := importresult.Marshal(*res)
			if err != nil {
				return observation{}, err
			}
			task.Status.ImporterResult = string(b)
			obs.releasing, obs.recheck = true, resultRecordedRecheck
			return obs, nil
		}
		wait, err := r.deleteFinishedImporters(ctx, task)
		if err != nil || wait > 0 {
			obs.releasing, obs.recheck = true, wait
			return obs, err // the pods' deletion brings us back, or the end of the wait
		}
	}
	obs.result = res
	return obs, nil
}

// pushedResult is the successful import result the importer pushed into
// the task's status, if any. A failure is left to the Job: it may retry.
func pushedResult(task *tasksv1.ImageImportTask) *importresult.Result {
	if task.Status.ImporterResult == "" {
		return nil
	}
	res, err := importresult.Parse(task.Status.ImporterResult)
	if err != nil || res.Failed() || res.ImageID != taskImageID(task) {
		return nil
	}
	return res
}

// importerPushedResult lets through the status update that carries the
// importer's result (or the reconciler's own write of it, for a volume
// import: see succeeded); the reconciler ignores its other status writes.
func importerPushedResult() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		was, is := e.ObjectOld.(*tasksv1.ImageImportTask), e.ObjectNew.(*tasksv1.ImageImportTask)
		return is.Status.ImporterResult != "" && is.Status.ImporterResult != was.Status.ImporterResult
	}}
}

// succeededResult is the import result of a Job's importer pod that
// succeeded: it exited 0 and reported a stored image. Nil otherwise.
func succeededResult(pods []corev1.Pod) *importresult.Result {
	for i := range pods {
		if pods[i].Status.Phase != corev1.PodSucceeded {
			continue
		}
		if res, _ := lastResult(pods[i : i+1]); res != nil && !res.Failed() {
			return res
		}
	}
	return nil
}

// record emits an Event per transition, and a Warning when the importer
// turns out unable to start, and updates the metrics.
func (r *ImageImportTaskReconciler) record(task, before *tasksv1.ImageImportTask, obs observation, taken []transition) {
	// A nil *batchv1.Job in the interface would not be nil: the recorder
	// would dereference it. No Job, no related object.
	var related runtime.Object
	if obs.job != nil {
		related = obs.job
	}
	for _, tr := range taken {
		typ, note := corev1.EventTypeNormal, transitionNote(task, tr)
		if tr.to == tasksv1.TaskFailure {
			typ = corev1.EventTypeWarning
		}
		if tasksv1.StartProblem(tr.reason) && !tr.to.Terminal() {
			continue // told below, as the problem it is
		}
		r.Recorder.Eventf(task, related, typ, tr.reason, "Transition", "%s", note)
	}
	if p := startProblemOf(task); p != nil && p.reason != ptr.Deref(startProblemOf(before), problem{}).reason {
		r.Recorder.Eventf(task, related, corev1.EventTypeWarning, p.reason, "Wait", "%s", truncate(p.message, 1024))
		r.Metrics.observeStartProblem(p.reason)
	}
	reason := ""
	if n := len(taken); n > 0 {
		reason = taken[n-1].reason
	}
	if obs.result != nil && obs.result.Reason != "" {
		reason = obs.result.Reason // the importer's reason is the more precise one
	}
	r.Metrics.observeTransition(before, task, reason)
}

// startProblemOf is what keeps a waiting task's importer from starting, as
// its status says; nil when nothing does.
func startProblemOf(task *tasksv1.ImageImportTask) *problem {
	c := meta.FindStatusCondition(task.Status.Conditions, tasksv1.ConditionReconciling)
	if c == nil || !tasksv1.StartProblem(c.Reason) {
		return nil
	}
	return &problem{c.Reason, c.Message}
}

func transitionNote(task *tasksv1.ImageImportTask, tr transition) string {
	switch tr.to {
	case tasksv1.TaskPending:
		return "Task is pending: waiting for the importer to start"
	case tasksv1.TaskProcessing:
		return "Task is processing: importing " + task.Spec.Input.ImportFrom
	case tasksv1.TaskSuccess:
		return "Task succeeded: imported image " + task.Status.Result.ImageID
	}
	return truncate("Task failed: "+tr.message, 1024)
}

// expire deletes a finished task at expiresAt when it opted in, and
// otherwise leaves it alone forever.
//
// written is whether the status that says when was written before this
// reconcile. One that has just finished the task is not deleted yet: the
// delete would come before its status write, which then meets a newer
// task (and, were the task kept by another controller's finalizer, the
// next reconcile would find it being deleted), so that the end of the
// import would never be recorded.
func (r *ImageImportTaskReconciler) expire(ctx context.Context, task *tasksv1.ImageImportTask, written bool) (ctrl.Result, error) {
	if task.Status.ExpiresAt == nil || expiryPolicy(task) != tasksv1.ExpiryPolicyDelete {
		return ctrl.Result{}, nil
	}
	if left := task.Status.ExpiresAt.Sub(r.Clock.Now()); left > 0 || !written {
		return ctrl.Result{RequeueAfter: max(left, expireRetry)}, nil
	}
	err := r.Delete(ctx, task, client.Preconditions{UID: &task.UID}, client.PropagationPolicy(metav1.DeletePropagationBackground))
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ctrl.LoggerFrom(ctx).Info("Deleted expired ImageImportTask", "expiresAt", task.Status.ExpiresAt)
	return ctrl.Result{}, nil
}

// expiryPolicy is the task's (Retain when unset).
func expiryPolicy(task *tasksv1.ImageImportTask) tasksv1.ExpiryPolicy {
	return cmp.Or(task.Spec.ExpiryPolicy, tasksv1.ExpiryPolicyRetain)
}

// patchStatus writes the status once per reconcile, with a merge patch,
// and only when it changed.
func (r *ImageImportTaskReconciler) patchStatus(ctx context.Context, before, task *tasksv1.ImageImportTask, observed bool) error {
	if observed {
		task.Status.ObservedGeneration = task.Generation
	}
	if equality.Semantic.DeepEqual(before.Status, task.Status) {
		return nil
	}
	// Only over the task this reconcile read: a status computed from an
	// older copy (a merge patch replaces the conditions whole) must not
	// overwrite a newer one.
	err := r.Status().Patch(ctx, task, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	return client.IgnoreNotFound(err)
}

// resultRecordedRecheck is how soon a volume import whose result was just
// written to its status is looked at again, should the watch event of that
// write not come.
const resultRecordedRecheck = time.Second

// expireRetry is how soon a task that expired when it finished is looked
// at again, to be deleted once its end is recorded.
const expireRetry = 10 * time.Millisecond

// conflictRetry is how soon a reconcile whose write met a newer object
// runs again: about when the cache has caught up with it. Each conflict in
// a row doubles it, up to conflictRetryMax: a second at most, for a retry
// that comes late behind a cache that has caught up delays the import.
const (
	conflictRetry    = 100 * time.Millisecond
	conflictRetryMax = time.Second
)

func newConflictBackoff() workqueue.TypedRateLimiter[reconcile.Request] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](conflictRetry, conflictRetryMax)
}

// onlyConflicts says whether err is a conflict, or an aggregate of nothing
// else: writes that met a newer object, for a retry.
func onlyConflicts(err error) bool {
	var agg kerrors.Aggregate
	if errors.As(err, &agg) {
		return !slices.ContainsFunc(agg.Errors(), func(e error) bool { return !onlyConflicts(e) })
	}
	return apierrors.IsConflict(err)
}

// SetupWithManager registers the reconciler: it watches tasks, the Jobs
// they own, Images queued again, the importer pods, the store claims and
// the Job controller's FailedCreate events. The last three come from a
// cache of their own that holds only those (selectors), not every pod,
// claim and event of the cluster.
func (r *ImageImportTaskReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	r.conflicts = newConflictBackoff()
	importerPods, err := labels.NewRequirement(tasksv1.LabelTaskUID, selection.Exists, nil)
	if err != nil {
		return err
	}
	r.importerCache, err = cache.New(mgr.GetConfig(), cache.Options{
		HTTPClient: mgr.GetHTTPClient(),
		Scheme:     mgr.GetScheme(),
		Mapper:     mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:                   {Label: labels.NewSelector().Add(*importerPods)},
			&corev1.PersistentVolumeClaim{}: {Field: fields.OneTermEqualSelector("metadata.name", r.Importer.StoreClaimName)},
			&corev1.Event{}: {Field: fields.AndSelectors(
				fields.OneTermEqualSelector("involvedObject.kind", "Job"),
				fields.OneTermEqualSelector("reason", "FailedCreate"))},
		},
	})
	if err != nil {
		return err
	}
	if err := mgr.Add(r.importerCache); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Our own status writes do not bump the generation: no self-triggering.
		// The importer's push of its result does trigger.
		For(&tasksv1.ImageImportTask{}, builder.WithPredicates(
			predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, importerPushedResult()))).
		Owns(&batchv1.Job{}).
		WatchesRawSource(source.Kind(r.importerCache, client.Object(&corev1.Pod{}),
			handler.EnqueueRequestsFromMapFunc(r.taskOfPod))).
		WatchesRawSource(source.Kind(r.importerCache, client.Object(&corev1.Event{}),
			handler.EnqueueRequestsFromMapFunc(r.taskOfEvent))).
		WatchesRawSource(source.Kind(r.importerCache, client.Object(&corev1.PersistentVolumeClaim{}),
			handler.EnqueueRequestsFromMapFunc(r.tasksWaitingForClaim))).
		Watches(&tasksv1.Image{}, handler.EnqueueRequestsFromMapFunc(r.tasksWaitingForImage),
			builder.WithPredicates(imageQueuedAgain())).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1),
			// A work queue on r.Clock: RequeueAfter (expiry, the store
			// claim's bound) is measured on the clock the reconciler reads.
			UsePriorityQueue: ptr.To(false),
			NewQueue: func(name string, rl workqueue.TypedRateLimiter[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
				return workqueue.NewTypedRateLimitingQueueWithConfig(rl, workqueue.TypedRateLimitingQueueConfig[reconcile.Request]{
					Name: name, Clock: r.Clock,
				})
			},
		}).
		Named("imageimporttask").
		Complete(r)
}

// taskOfPod maps an importer pod to its task, through its Job.
func (r *ImageImportTaskReconciler) taskOfPod(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.taskOfJob(ctx, obj.GetNamespace(), obj.GetLabels()[batchv1.JobNameLabel])
}

// taskOfEvent maps a FailedCreate event of a Job to the Job's task.
func (r *ImageImportTaskReconciler) taskOfEvent(ctx context.Context, obj client.Object) []reconcile.Request {
	e := obj.(*corev1.Event)
	return r.taskOfJob(ctx, e.InvolvedObject.Namespace, e.InvolvedObject.Name)
}

func (r *ImageImportTaskReconciler) taskOfJob(ctx context.Context, namespace, name string) []reconcile.Request {
	job := &batchv1.Job{}
	if name == "" || r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, job) != nil {
		return nil // a Job we do not know yet brings us here through its own watch
	}
	owner := metav1.GetControllerOf(job)
	if owner == nil || owner.Kind != "ImageImportTask" || owner.APIVersion != tasksv1.GroupVersion.String() {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: namespace, Name: owner.Name}}}
}

// tasksWaitingForImage maps an Image queued again to the tasks that have
// not claimed it yet (a task recreated under the name of the one whose
// import was cancelled waits for that): at once, not at their next look.
func (r *ImageImportTaskReconciler) tasksWaitingForImage(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.tasksWithoutJob(ctx, "of an Image queued again", client.InNamespace(obj.GetNamespace()),
		client.MatchingLabels{tasksv1.LabelImageID: obj.GetName()})
}

// tasksWithoutJob lists the tasks that have not ended and have no Job yet.
func (r *ImageImportTaskReconciler) tasksWithoutJob(ctx context.Context, which string, opts ...client.ListOption) []reconcile.Request {
	var tasks tasksv1.ImageImportTaskList
	if err := r.List(ctx, &tasks, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the ImageImportTasks "+which)
		return nil
	}
	var reqs []reconcile.Request
	for _, t := range tasks.Items {
		if !t.Status.Status.Terminal() && t.Status.JobName == "" {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&t)})
		}
	}
	return reqs
}

// imageQueuedAgain lets through the update of an Image to queued from
// another status: the only change a task that waits for its image needs.
func imageQueuedAgain() predicate.Funcs {
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			was, is := e.ObjectOld.(*tasksv1.Image), e.ObjectNew.(*tasksv1.Image)
			return is.Status.Status == tasksv1.ImageQueued && was.Status.Status != tasksv1.ImageQueued
		},
	}
}

// tasksWaitingForClaim maps a store claim to the tasks of its namespace
// that have no Job yet.
func (r *ImageImportTaskReconciler) tasksWaitingForClaim(ctx context.Context, obj client.Object) []reconcile.Request {
	return r.tasksWithoutJob(ctx, "waiting for their store claim", client.InNamespace(obj.GetNamespace()))
}
