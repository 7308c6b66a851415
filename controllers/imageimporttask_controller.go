// Package controllers holds the ImageImportTask reconciler: it runs one
// batch/v1 Job per task and mirrors what the Job did into the task status.
// It never fetches a user URL nor touches image bytes.
package controllers

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// DefaultTaskTTL is how long a finished task lives before it expires, as
// Glance's [task] task_time_to_live.
const DefaultTaskTTL = 48 * time.Hour

// ImageImportTaskReconciler reconciles ImageImportTasks.
type ImageImportTaskReconciler struct {
	client.Client
	// APIReader reads around the cache: pods of a finished Job (we do not
	// cache every pod of the cluster) and Jobs the cache may not have yet.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  recorder.EventRecorder
	Clock     clock.PassiveClock
	Metrics   *Metrics

	Importer ImporterConfig
	// TaskTTL is the time from completion to expiresAt.
	TaskTTL time.Duration
	// MaxConcurrentReconciles bounds the reconciles that run at once.
	MaxConcurrentReconciles int
}

// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=imageimporttasks,verbs=get;list;watch;delete
// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=imageimporttasks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=imageimporttasks/finalizers,verbs=update
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create
// +kubebuilder:rbac:groups="",resources=pods,verbs=list
// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;create
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;create
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile makes sure a task has its Job and that its status says what the
// Job did; a finished task is deleted at expiry when it opted in.
func (r *ImageImportTaskReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	task := &tasksv1.ImageImportTask{}
	if err := r.Get(ctx, req.NamespacedName, task); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !task.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // the Job and its pods go with the task (owner references)
	}
	before := task.DeepCopy()
	defer func() { retErr = r.patchStatus(ctx, before, task, retErr) }()

	if !task.Status.Status.Terminal() {
		obs, err := r.observe(ctx, task)
		if err != nil {
			return ctrl.Result{}, err
		}
		out := observe(task, obs)
		taken := applyOutcome(task, obs, out, r.Clock.Now(), r.TaskTTL)
		r.record(task, before, obs, taken)
	}
	return r.expire(ctx, task)
}

// observe gathers what the task's import did: its Job, and once the Job has
// finished, the result the last importer pod left.
func (r *ImageImportTaskReconciler) observe(ctx context.Context, task *tasksv1.ImageImportTask) (observation, error) {
	if msg := inputProblem(task); msg != "" {
		return failed(tasksv1.ReasonInvalidInput, msg), nil
	}
	job, deleted, err := r.ensureJob(ctx, task)
	switch {
	case err != nil:
		return observation{}, err
	case deleted:
		return failed(tasksv1.ReasonJobDeleted, "The import Job was deleted before the import finished."), nil
	case !metav1.IsControlledBy(job, task):
		return failed(tasksv1.ReasonJobConflict, fmt.Sprintf(
			"Job %s already exists and does not belong to this task.", job.Name)), nil
	}
	obs := observation{job: job, storeLocation: storeLocation(task, r.Importer.StoreClaimName)}
	if finishedCondition(job) != nil {
		obs.result, obs.podMessage, err = r.lastResult(ctx, job)
	}
	return obs, err
}

func failed(reason, message string) observation {
	return observation{failure: &outcome{tasksv1.TaskFailure, reason, message}}
}

// inputProblem is Glance's message for an input that cannot be imported
// (Glance accepts such a task and fails it when it runs); empty when fine.
func inputProblem(task *tasksv1.ImageImportTask) string {
	in := task.Spec.Input
	switch {
	case task.Annotations[tasksv1.AnnotationInputProblem] != "":
		return truncate(task.Annotations[tasksv1.AnnotationInputProblem], 1024)
	case in.ImportFromFormat == "":
		return "Input does not contain 'import_from_format' field"
	case in.ImageProperties == nil:
		return "Input does not contain 'image_properties' field"
	}
	return ""
}

// ensureJob returns the task's Job, creating it when there is none. deleted
// reports a Job that existed (the status names it) and is gone: the import
// was cancelled behind our back and must not silently run again.
func (r *ImageImportTaskReconciler) ensureJob(ctx context.Context, task *tasksv1.ImageImportTask) (job *batchv1.Job, deleted bool, err error) {
	key := client.ObjectKey{Namespace: task.Namespace, Name: jobName(task)}
	job = &batchv1.Job{}
	err = r.Get(ctx, key, job)
	if err == nil || !apierrors.IsNotFound(err) {
		return job, false, err
	}
	if task.Status.JobName != "" {
		// The cache may lag behind our own create: ask the API server.
		err = r.APIReader.Get(ctx, key, job)
		if apierrors.IsNotFound(err) {
			return nil, true, nil
		}
		return job, false, err
	}
	if err := r.ensureImporterAccess(ctx, task); err != nil {
		return nil, false, err
	}
	job = desiredJob(task, r.Importer)
	if err := ctrl.SetControllerReference(task, job, r.Scheme); err != nil {
		return nil, false, err
	}
	err = r.Create(ctx, job)
	if apierrors.IsAlreadyExists(err) {
		// Created by an earlier reconcile that the cache has not seen yet.
		err = r.APIReader.Get(ctx, key, job)
		return job, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("creating Job %s: %w", key.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Created Job", "job", klog.KObj(job))
	r.Recorder.Eventf(task, job, corev1.EventTypeNormal, "JobCreated", "CreateJob", "Created Job %s", job.Name)
	return job, false, nil
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
// Job's last finished importer pod.
func (r *ImageImportTaskReconciler) lastResult(ctx context.Context, job *batchv1.Job) (*importresult.Result, string, error) {
	var pods corev1.PodList
	err := r.APIReader.List(ctx, &pods, client.InNamespace(job.Namespace),
		client.MatchingLabels{batchv1.ControllerUidLabel: string(job.UID)})
	if err != nil {
		return nil, "", fmt.Errorf("listing pods of Job %s: %w", job.Name, err)
	}
	var last *corev1.ContainerStateTerminated
	for i := range pods.Items {
		for _, cs := range pods.Items[i].Status.ContainerStatuses {
			term := cs.State.Terminated
			if cs.Name == importerContainer && term != nil &&
				(last == nil || term.FinishedAt.After(last.FinishedAt.Time)) {
				last = term
			}
		}
	}
	if last == nil {
		return nil, "", nil
	}
	if res, err := importresult.Parse(last.Message); err == nil {
		return res, "", nil
	}
	msg := fmt.Sprintf("exit code %d (%s)", last.ExitCode, cmp.Or(last.Reason, "Error"))
	if last.Message != "" {
		msg += ": " + last.Message
	}
	return nil, truncate(msg, 1024), nil
}

// record emits an Event per transition and updates the metrics.
func (r *ImageImportTaskReconciler) record(task, before *tasksv1.ImageImportTask, obs observation, taken []transition) {
	for _, tr := range taken {
		typ, note := corev1.EventTypeNormal, transitionNote(task, tr)
		if tr.to == tasksv1.TaskFailure {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(task, obs.job, typ, tr.reason, "Transition", "%s", note)
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
func (r *ImageImportTaskReconciler) expire(ctx context.Context, task *tasksv1.ImageImportTask) (ctrl.Result, error) {
	if task.Status.ExpiresAt == nil || expiryPolicy(task) != tasksv1.ExpiryPolicyDelete {
		return ctrl.Result{}, nil
	}
	if left := task.Status.ExpiresAt.Sub(r.Clock.Now()); left > 0 {
		return ctrl.Result{RequeueAfter: left}, nil
	}
	err := r.Delete(ctx, task, client.Preconditions{UID: &task.UID}, client.PropagationPolicy(metav1.DeletePropagationBackground))
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ctrl.LoggerFrom(ctx).Info("Deleted expired ImageImportTask", "expiresAt", task.Status.ExpiresAt)
	return ctrl.Result{}, nil
}

// expiryPolicy is the task's, with the shim's annotation taking precedence.
func expiryPolicy(task *tasksv1.ImageImportTask) tasksv1.ExpiryPolicy {
	if p := tasksv1.ExpiryPolicy(task.Annotations[tasksv1.AnnotationExpiryPolicy]); slices.Contains(
		[]tasksv1.ExpiryPolicy{tasksv1.ExpiryPolicyRetain, tasksv1.ExpiryPolicyDelete}, p) {
		return p
	}
	return cmp.Or(task.Spec.ExpiryPolicy, tasksv1.ExpiryPolicyRetain)
}

// patchStatus writes the status once per reconcile, with a merge patch (no
// conflicts), and only when it changed.
func (r *ImageImportTaskReconciler) patchStatus(ctx context.Context, before, task *tasksv1.ImageImportTask, retErr error) error {
	if retErr == nil {
		task.Status.ObservedGeneration = task.Generation
	}
	if equality.Semantic.DeepEqual(before.Status, task.Status) {
		return retErr
	}
	err := r.Status().Patch(ctx, task, client.MergeFrom(before))
	return kerrors.NewAggregate([]error{retErr, client.IgnoreNotFound(err)})
}

// SetupWithManager registers the reconciler: it watches tasks and the Jobs
// they own.
func (r *ImageImportTaskReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		// Our own status writes do not bump the generation: no self-triggering.
		For(&tasksv1.ImageImportTask{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&batchv1.Job{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1)}).
		Named("imageimporttask").
		Complete(r)
}
