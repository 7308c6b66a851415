package controllers

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// DefaultCleanupRetry is the pause before another cleanup Job, after one
// failed: long enough not to spin on a store that cannot mount.
const DefaultCleanupRetry = 30 * time.Second

// DefaultImporterExitRecheck is how often the deletion of an image looks
// again for importer pods still running, which no watch of ours reports.
const DefaultImporterExitRecheck = 10 * time.Second

// ImageReconciler reconciles Images: it queues new ones, settles an
// import from its task's terminal status, and removes a deleted image's
// data with a cleanup Job before it lets the image go.
type ImageReconciler struct {
	client.Client
	// APIReader reads around the cache: importer pods (not cached by this
	// controller), and tasks and namespaces the cache may not have yet.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  recorder.EventRecorder
	Clock     clock.Clock
	Metrics   *Metrics
	// Importer is the image the cleanup Job runs, and the store claim of
	// images whose location names none.
	Importer ImporterConfig
	// MaxConcurrentReconciles bounds the reconciles that run at once.
	MaxConcurrentReconciles int
	// CleanupRetry is the pause before another cleanup Job after one
	// failed (DefaultCleanupRetry if zero).
	CleanupRetry time.Duration
	// ImporterExitRecheck is how often the deletion of an image looks
	// again for importer pods still running (DefaultImporterExitRecheck if
	// zero).
	ImporterExitRecheck time.Duration

	// conflicts spaces out the retries of an image whose writes keep
	// meeting a newer copy (the task reconciler writes its claim and
	// finalizer too); SetupWithManager makes it.
	conflicts workqueue.TypedRateLimiter[reconcile.Request]
}

// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=images,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=images/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=images/finalizers,verbs=update
// +kubebuilder:rbac:groups=tasks.imageimport.io,resources=imageimporttasks,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch

// Reconcile moves an Image along Glance's image statuses and removes the
// data of a deleted one.
func (r *ImageReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, retErr error) {
	img := &tasksv1.Image{}
	if err := r.Get(ctx, req.NamespacedName, img); err != nil {
		r.conflicts.Forget(req)
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	w := &imageWrite{r: r, before: img.DeepCopy(), img: img}
	defer func() {
		switch retErr = w.flush(ctx, retErr); {
		case onlyConflicts(retErr):
			// Another writer of the image came first, or the cache had not
			// seen our last write: a retry, not an error to log. Nothing
			// was told (flush tells after its write).
			res, retErr = ctrl.Result{RequeueAfter: r.conflicts.When(req)}, nil
		case retErr == nil:
			r.conflicts.Forget(req)
		}
	}()
	note := w.note

	now := r.Clock.Now()
	note(initImage(img, now))
	res, err := r.settle(ctx, w, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !img.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, w)
	}
	return res, r.repairFinalizer(ctx, w)
}

// settle ends the image's import once its task has ended (settleImport,
// after the properties a successful import adds), or once the task is
// gone (cancelImport). An image being deleted whose
// task is gone is left to reconcileDelete, which waits for the importer
// and removes what it wrote.
func (r *ImageReconciler) settle(ctx context.Context, w *imageWrite, now time.Time) (ctrl.Result, error) {
	img := w.img
	name := img.Status.ImportTask
	if name == "" || (img.Status.Status != tasksv1.ImageImporting && img.Status.Status != tasksv1.ImageDeleted) {
		return ctrl.Result{}, nil
	}
	task, err := r.claimant(ctx, img)
	switch {
	case err != nil:
		return ctrl.Result{}, err
	case task == nil && img.Status.Status == tasksv1.ImageImporting && img.DeletionTimestamp.IsZero():
		return r.cancelImport(ctx, w, now)
	case task == nil:
		return ctrl.Result{}, nil
	}
	if activates(img, task) {
		if err := r.addImportedProperties(ctx, w, task); err != nil {
			return ctrl.Result{}, err
		}
	}
	w.note(settleImport(img, task, now))
	return ctrl.Result{}, nil
}

// claimant is the task that claimed the image, nil when it is gone: a
// task of its name created since is another.
func (r *ImageReconciler) claimant(ctx context.Context, img *tasksv1.Image) (*tasksv1.ImageImportTask, error) {
	task, err := r.task(ctx, img.Namespace, img.Status.ImportTask)
	if err != nil || task == nil || !claimedBy(img, task) {
		return nil, err
	}
	return task, nil
}

// task reads a task, from the cache or else the API server; nil when it
// does not exist.
func (r *ImageReconciler) task(ctx context.Context, namespace, name string) (*tasksv1.ImageImportTask, error) {
	key := client.ObjectKey{Namespace: namespace, Name: name}
	task := &tasksv1.ImageImportTask{}
	err := r.Get(ctx, key, task)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, task) // a task the cache has not seen yet
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ImageImportTask %s: %w", name, err)
	}
	return task, nil
}

// repairFinalizer puts back the data finalizer on an image that has, or
// may get, data: the task adds it before its Job, but a finalizer removed
// by hand must not let the data leak.
func (r *ImageReconciler) repairFinalizer(ctx context.Context, w *imageWrite) error {
	img := w.img
	st := img.Status
	if controllerutil.ContainsFinalizer(img, tasksv1.FinalizerImageData) ||
		(st.Status != tasksv1.ImageImporting && st.Status != tasksv1.ImageActive && st.Location == "") {
		return nil
	}
	if err := w.flush(ctx, nil); err != nil {
		return err
	}
	held := img.DeepCopy()
	controllerutil.AddFinalizer(held, tasksv1.FinalizerImageData)
	return r.Patch(ctx, held, client.MergeFromWithOptions(img, client.MergeFromWithOptimisticLock{}))
}

// reconcileDelete removes a deleted image's data, then lets it go. It
// waits for an import into the image to end rather than stopping it: the
// import is the task's, which its owner may still want to see end, and an
// importer pod stopped mid-way may still write the file after a cleanup
// that ran beside it. Deleting the task stops the import at once.
func (r *ImageReconciler) reconcileDelete(ctx context.Context, w *imageWrite) (ctrl.Result, error) {
	img, note := w.img, w.note
	if !controllerutil.ContainsFinalizer(img, tasksv1.FinalizerImageData) {
		return ctrl.Result{}, nil
	}
	if img.Status.Status != tasksv1.ImageDeleted {
		note(&imageEvent{reason: tasksv1.ReasonDeleting, note: fmt.Sprintf("Image is being deleted (was %s)", phaseName(img.Status.Status))})
		img.Status.Status = tasksv1.ImageDeleted
		img.Status.UpdatedAt = &metav1.Time{Time: r.Clock.Now()}
	}
	running, err := r.importRunning(ctx, img)
	if err != nil || running != "" {
		setImageReady(img, metav1.ConditionFalse, tasksv1.ReasonDeleting, "Waiting for the import to end: "+running)
		return ctrl.Result{RequeueAfter: r.importerExitRecheck()}, err
	}
	if img.Status.Location == "" && img.Status.ImportTask == "" {
		// Never imported into: nothing can have been written for it.
		return ctrl.Result{}, r.release(ctx, w, "nodata", "Image deleted: it held no data")
	}
	if claim, ok := volumeClaimOf(img); ok {
		// The volume is the image's (its controller): the garbage collector
		// deletes it once the image is gone. No store to clean.
		return ctrl.Result{}, r.release(ctx, w, "volume",
			"Image deleted: its volume "+claim+" is deleted with it (garbage collection)")
	}
	// An import that never finished (killed, or its task deleted) may have
	// left its file or staging files: the cleanup runs for it too.
	target, refused := cleanupTargetOf(img, r.Importer.StoreClaimName)
	gone, err := r.storeGone(ctx, img, target.claim)
	switch {
	case err != nil:
		return ctrl.Result{}, err
	case gone != "" && img.Status.Location == "":
		return ctrl.Result{}, r.release(ctx, w, "nodata", "Image deleted: its import never finished, and "+gone)
	case gone != "":
		return ctrl.Result{}, r.release(ctx, w, "storegone", "Image deleted without removing its data: "+gone)
	case refused != "":
		refuseCleanup(w, refused)
		return ctrl.Result{}, nil
	}
	return r.cleanup(ctx, w, target)
}

// refuseCleanup keeps a deleted image whose location is not its to clean:
// Ready False says why and what to do, once, with a Warning. Removing a
// file the location does not name (the old fallback to the default claim)
// could remove another image's data; letting the image go would lose
// track of data it may hold. A change to the image reconciles it again.
func refuseCleanup(w *imageWrite, why string) {
	img := w.img
	if c := meta.FindStatusCondition(img.Status.Conditions, tasksv1.ConditionReady); c != nil && c.Reason == tasksv1.ReasonLocationRefused {
		return
	}
	msg := "The image's data is not removed: its " + why + ". Correct status.location, or remove the finalizer " +
		tasksv1.FinalizerImageData + " to let the image go without removing any data"
	setImageReady(img, metav1.ConditionFalse, tasksv1.ReasonLocationRefused, msg)
	w.note(&imageEvent{warning: true, reason: tasksv1.ReasonLocationRefused, note: truncate(msg, 1024)})
}

// importRunning says what import into the image still runs: the task that
// claimed it, while it has not ended, or an import Job or importer pod of
// its id that has not (that of a task deleted a moment ago); "" when none.
func (r *ImageReconciler) importRunning(ctx context.Context, img *tasksv1.Image) (string, error) {
	if name := img.Status.ImportTask; name != "" {
		task, err := r.claimant(ctx, img)
		if err != nil {
			return "", err
		}
		if task != nil && task.DeletionTimestamp.IsZero() && !task.Status.Status.Terminal() {
			return "task " + name + " has not ended", nil
		}
	}
	running, _, err := r.importerRunning(ctx, img)
	return running, err
}

// storeGone says why the image's data cannot be removed because the store
// itself goes: its namespace is being deleted (no pod may start there) or
// its claim is gone; "" when the cleanup can run (or, for claim "", when
// the namespace stays).
func (r *ImageReconciler) storeGone(ctx context.Context, img *tasksv1.Image, claim string) (string, error) {
	ns := &corev1.Namespace{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Name: img.Namespace}, ns); err != nil {
		return "", client.IgnoreNotFound(err)
	}
	if !ns.DeletionTimestamp.IsZero() {
		return fmt.Sprintf("namespace %s is being deleted, with the store claim", img.Namespace), nil
	}
	if claim == "" {
		return "", nil // no claim to look at: a refused location
	}
	pvc := &corev1.PersistentVolumeClaim{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: img.Namespace, Name: claim}, pvc)
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("the store claim %s does not exist", claim), nil
	case err != nil:
		return "", fmt.Errorf("reading PersistentVolumeClaim %s: %w", claim, err)
	case !pvc.DeletionTimestamp.IsZero():
		return fmt.Sprintf("the store claim %s is being deleted", claim), nil
	}
	return "", nil
}

// cleanup runs the Job that removes the image's data and lets the image go
// once it has.
func (r *ImageReconciler) cleanup(ctx context.Context, w *imageWrite, target cleanupTarget) (ctrl.Result, error) {
	job, res, err := r.runCleanupJob(ctx, w, cleanupRun{
		name: cleanupJobName(w.img), target: target, what: "the image's data",
		ready: metav1.ConditionFalse, reason: tasksv1.ReasonDeleting,
	})
	if job == nil || err != nil {
		return res, err
	}
	return ctrl.Result{}, r.release(ctx, w, "removed", "Image deleted: Job "+job.Name+" removed its data")
}

// cleanupRun is one use of a cleanup Job: its name, the file it removes,
// what that is (for messages), and the image's Ready condition while the
// Job runs.
type cleanupRun struct {
	name   string
	target cleanupTarget
	what   string
	ready  metav1.ConditionStatus
	reason string
}

// runCleanupJob runs the cleanup Job of run and returns it once it has
// completed; nil while it has not, with when to look again. A failed Job is
// counted, told, and replaced after a pause.
func (r *ImageReconciler) runCleanupJob(ctx context.Context, w *imageWrite, run cleanupRun) (*batchv1.Job, ctrl.Result, error) {
	img := w.img
	job := &batchv1.Job{}
	err := r.Get(ctx, client.ObjectKey{Namespace: img.Namespace, Name: run.name}, job)
	if apierrors.IsNotFound(err) {
		return nil, ctrl.Result{}, r.createCleanupJob(ctx, img, run)
	}
	if err != nil {
		return nil, ctrl.Result{}, err
	}
	if !job.DeletionTimestamp.IsZero() {
		return nil, ctrl.Result{RequeueAfter: time.Second}, nil // the failed one is still going
	}
	done := finishedCondition(job)
	switch {
	case done == nil:
		setImageReady(img, run.ready, run.reason, "Job "+job.Name+" removes "+run.what)
		return nil, ctrl.Result{}, nil
	case done.Type == batchv1.JobComplete:
		return job, ctrl.Result{}, nil
	}
	retry := cmp.Or(r.CleanupRetry, DefaultCleanupRetry)
	msg := fmt.Sprintf("Job %s failed to remove %s (%s: %s); another one starts in %s",
		job.Name, run.what, done.Reason, done.Message, retry)
	setImageReady(img, run.ready, tasksv1.ReasonCleanupFailed, msg)
	told, err := r.markFailureTold(ctx, job)
	switch {
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		return nil, ctrl.Result{RequeueAfter: time.Second}, nil // another reconcile's mark, a Job changed since the cache's copy, or gone
	case told:
		// Now, not with the status: a status write that loses a race
		// would lose the only word of it.
		r.Recorder.Eventf(img, job, corev1.EventTypeWarning, tasksv1.ReasonCleanupFailed, "Delete", "%s", truncate(msg, 1024))
		r.Metrics.observeCleanupFailure()
	}
	// The failed Job stays for the pause: while it is there, no other
	// starts (its deletion would bring a reconcile that creates one).
	left := retry - r.failedFor(job, done)
	switch {
	case err != nil && left > 0 && !refusedForGood(err):
		// The API server busy, a timeout: tried again, with the queue's
		// backoff, while the pause lasts.
		return nil, ctrl.Result{}, fmt.Errorf("marking failed cleanup Job %s told: %w", job.Name, err)
	case err != nil:
		// Telling is not worth holding the image's deletion: the
		// condition says it, the log says why it was not told, and the
		// next Job goes on.
		ctrl.LoggerFrom(ctx).Error(err, "Marking a failed cleanup Job told; its failure is not told", "job", job.Name)
	}
	if left > 0 {
		return nil, ctrl.Result{RequeueAfter: left}, nil
	}
	err = r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground), client.Preconditions{UID: &job.UID})
	return nil, ctrl.Result{RequeueAfter: time.Second}, client.IgnoreNotFound(err)
}

// failedFor is how long ago the cleanup Job failed, by our clock: from its
// "told" mark, which holds our clock's time, else from its Failed
// condition, which holds the Job controller's. A time ahead of our clock
// (skew, a clock set back) counts as long ago: the pause would otherwise
// start again at every reconcile, and hold the image's deletion for as
// long as the skew.
func (r *ImageReconciler) failedFor(job *batchv1.Job, done *batchv1.JobCondition) time.Duration {
	since := done.LastTransitionTime.Time
	if marked, err := time.Parse(time.RFC3339, job.Annotations[annotationFailureTold]); err == nil {
		since = marked
	}
	if d := r.Clock.Since(since); d >= 0 {
		return d
	}
	return math.MaxInt64
}

// refusedForGood says whether the API server refused a request as such
// (RBAC, a policy, the request itself), not for the moment.
func refusedForGood(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsMethodNotSupported(err) ||
		apierrors.IsBadRequest(err)
}

func (r *ImageReconciler) importerExitRecheck() time.Duration {
	return cmp.Or(r.ImporterExitRecheck, DefaultImporterExitRecheck)
}

// annotationFailureTold marks a failed cleanup Job whose failure was told,
// with the time it was (RFC 3339, by our clock).
const annotationFailureTold = "tasks.imageimport.io/failure-told"

// markFailureTold marks the failed Job as told, and says whether this call
// did: of the reconciles that see it failed, the one whose mark lands
// tells, once. The mark is made over the Job as this reconcile read it (a
// cache that lags behind another's mark has a conflict).
func (r *ImageReconciler) markFailureTold(ctx context.Context, job *batchv1.Job) (bool, error) {
	if job.Annotations[annotationFailureTold] != "" {
		return false, nil
	}
	marked := job.DeepCopy() // job keeps no mark the server refused
	metav1.SetMetaDataAnnotation(&marked.ObjectMeta, annotationFailureTold, r.Clock.Now().UTC().Format(time.RFC3339))
	if err := r.Patch(ctx, marked, client.MergeFromWithOptions(job, client.MergeFromWithOptimisticLock{})); err != nil {
		return false, err
	}
	*job = *marked
	return true, nil
}

func (r *ImageReconciler) createCleanupJob(ctx context.Context, img *tasksv1.Image, run cleanupRun) error {
	job := desiredCleanupJob(img, run.name, run.target, r.Importer)
	if err := ctrl.SetControllerReference(img, job, r.Scheme); err != nil {
		return err
	}
	err := r.Create(ctx, job)
	if apierrors.IsAlreadyExists(err) {
		return nil // an earlier reconcile's, which the cache has not seen: its watch event brings us back
	}
	if err != nil {
		return fmt.Errorf("creating cleanup Job %s: %w", job.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Created cleanup Job", "job", klog.KObj(job), "claim", run.target.claim, "file", run.target.file)
	setImageReady(img, run.ready, run.reason, "Job "+job.Name+" removes "+run.what)
	r.Recorder.Eventf(img, job, corev1.EventTypeNormal, "CleanupJobCreated", "Delete", "Created Job %s to remove %s (%s in claim %s)",
		job.Name, run.what, run.target.file, run.target.claim)
	return nil
}

// release removes the data finalizer: the API server then deletes the
// image. The status goes first: it says why, until the image is gone.
func (r *ImageReconciler) release(ctx context.Context, w *imageWrite, outcome, message string) error {
	if err := w.flush(ctx, nil); err != nil {
		return err
	}
	img := w.img
	released := img.DeepCopy()
	controllerutil.RemoveFinalizer(released, tasksv1.FinalizerImageData)
	if err := r.Patch(ctx, released, client.MergeFromWithOptions(img, client.MergeFromWithOptimisticLock{})); err != nil {
		return client.IgnoreNotFound(err)
	}
	typ := corev1.EventTypeNormal
	if outcome == "storegone" {
		typ = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(img, nil, typ, "Deleted", "Delete", "%s", truncate(message, 1024))
	r.Metrics.observeImageDeletion(outcome)
	ctrl.LoggerFrom(ctx).Info("Released deleted Image", "outcome", outcome)
	return nil
}

// imageWrite is what a reconcile changes in an Image's status, and the
// transitions to tell. It is written before any change of the image's
// metadata (finalizers) and at the end of the reconcile, with an
// optimistic lock: the task reconciler claims images concurrently, and a
// status computed from a stale read must not undo its claim.
type imageWrite struct {
	r      *ImageReconciler
	before *tasksv1.Image
	img    *tasksv1.Image
	events []imageEvent
}

func (w *imageWrite) note(e *imageEvent) {
	if e != nil {
		w.events = append(w.events, *e)
	}
}

// flush writes the status when it changed, then tells its transitions.
func (w *imageWrite) flush(ctx context.Context, retErr error) error {
	r, img := w.r, w.img
	if retErr == nil {
		img.Status.ObservedGeneration = img.Generation
	}
	if !equality.Semantic.DeepEqual(w.before.Status, img.Status) {
		err := r.Status().Patch(ctx, img, client.MergeFromWithOptions(w.before, client.MergeFromWithOptimisticLock{}))
		if client.IgnoreNotFound(err) != nil {
			return kerrors.NewAggregate([]error{retErr, err})
		}
	}
	for _, e := range w.events {
		typ := corev1.EventTypeNormal
		if e.warning {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(img, nil, typ, e.reason, "Transition", "%s", e.note)
	}
	if w.before.Status.Status != img.Status.Status {
		r.Metrics.observeImageTransition(img.Status.Status)
	}
	w.events, w.before = nil, img.DeepCopy()
	return retErr
}

// SetupWithManager registers the reconciler: it watches Images, the
// cleanup Jobs they own, and the tasks that import into them.
func (r *ImageReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	r.conflicts = newConflictBackoff()
	return ctrl.NewControllerManagedBy(mgr).
		For(&tasksv1.Image{}).
		Owns(&batchv1.Job{}).
		Watches(&tasksv1.ImageImportTask{}, handler.EnqueueRequestsFromMapFunc(imageOfTask)).
		WithOptions(controller.Options{MaxConcurrentReconciles: max(r.MaxConcurrentReconciles, 1)}).
		Named("image").
		Complete(r)
}

// imageOfTask maps a task to the Image it fills.
func imageOfTask(_ context.Context, obj client.Object) []reconcile.Request {
	task := obj.(*tasksv1.ImageImportTask)
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: task.Namespace, Name: taskImageID(task)}}}
}
