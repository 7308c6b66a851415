package controllers

import (
	"cmp"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// The task side of the Image lifecycle: before its Job exists, a task links
// itself to its Image. A task with spec.image claims the named queued
// Image (status importing, status.importTask); a task without creates its
// own Image, named by imageID. Everything after the claim (active, queued
// again, killed, deleted) is the ImageReconciler's, which reads the task's
// terminal status: a crash between the two loses nothing.

// taskImageID is the id (the Image's name) of the image a task fills.
func taskImageID(t *tasksv1.ImageImportTask) string {
	if t.Spec.Image != nil {
		return t.Spec.Image.Name
	}
	return imageID(t)
}

// linkImage makes the task's Image ready to receive its import: labelled
// on the task, held by the data finalizer, and claimed. A non-nil
// observation is why the task fails or waits instead.
func (r *ImageImportTaskReconciler) linkImage(ctx context.Context, task *tasksv1.ImageImportTask) (*observation, error) {
	if err := r.labelTask(ctx, task); err != nil {
		return nil, err
	}
	img := &tasksv1.Image{}
	key := client.ObjectKey{Namespace: task.Namespace, Name: taskImageID(task)}
	// The API server, not the cache: the shim creates the Image a moment
	// before the task, and the claim must see its latest status.
	err := r.APIReader.Get(ctx, key, img)
	switch {
	case apierrors.IsNotFound(err) && task.Spec.Image == nil:
		if img, err = r.createOwnImage(ctx, task); err != nil {
			return nil, err
		}
	case apierrors.IsNotFound(err):
		return ptr.To(failed(tasksv1.ReasonImageNotFound, fmt.Sprintf(
			"Image %s does not exist in namespace %s.", key.Name, key.Namespace))), nil
	case err != nil:
		return nil, fmt.Errorf("reading Image %s: %w", key.Name, err)
	}
	if why := unclaimable(img, task); why != nil {
		return why, nil
	}
	if img.Status.Status == tasksv1.ImageImporting && img.Status.ImportTask == task.Name && !claimedBy(img, task) {
		// A task of this name was deleted and created again: the first
		// one's import is cancelled (ImageReconciler.cancelImport), then
		// the image is queued again for this one.
		why := fmt.Sprintf("Image %s is importing for an earlier task named %s, which was deleted: the import starts once that one is cancelled", img.Name, task.Name)
		if ready := meta.FindStatusCondition(img.Status.Conditions, tasksv1.ConditionReady); ready != nil && ready.Message != "" {
			why += " (" + ready.Message + ")"
		}
		return &observation{waiting: &problem{tasksv1.ReasonPriorImportCancelling, why + "."},
			recheck: cmp.Or(r.PriorImportRecheck, DefaultPriorImportRecheck)}, nil
	}
	if err := r.holdImageData(ctx, img); err != nil {
		return nil, err
	}
	return nil, r.claimImage(ctx, img, task)
}

// unclaimable says why the task may not import into img; nil when it may.
// As Glance, an import only fills a queued image (an image the shim has
// just created has no status yet: it is queued).
func unclaimable(img *tasksv1.Image, task *tasksv1.ImageImportTask) *observation {
	st := img.Status
	switch {
	case img.DeletionTimestamp != nil:
		return ptr.To(failed(tasksv1.ReasonImageDeleted, fmt.Sprintf("Image %s is being deleted.", img.Name)))
	case task.Spec.Image == nil && img.Labels[tasksv1.LabelTaskUID] != string(task.UID):
		return ptr.To(failed(tasksv1.ReasonImageConflict, fmt.Sprintf(
			"Image %s already exists and does not belong to this task.", img.Name)))
	case st.ImportTask == task.Name && st.Status == tasksv1.ImageImporting:
		// Claimed by an earlier reconcile of this task, or by an earlier
		// task of its name (linkImage waits for it). A task that has not
		// ended finds its own claim in no other status.
		return nil
	case st.Status == tasksv1.ImageQueued || st.Status == "":
		return nil
	case st.Status == tasksv1.ImageImporting:
		return ptr.To(failed(tasksv1.ReasonImageNotQueued, fmt.Sprintf(
			"Image %s is importing (task %s): only a queued image can be imported into.", img.Name, st.ImportTask)))
	}
	return ptr.To(failed(tasksv1.ReasonImageNotQueued, fmt.Sprintf(
		"Image %s is %s: only a queued image can be imported into.", img.Name, st.Status)))
}

// labelTask puts the image-id label on the task, by which the shim finds an
// image's tasks. A patch of the label alone: the task's status, written at
// the end of the reconcile, is another request.
func (r *ImageImportTaskReconciler) labelTask(ctx context.Context, task *tasksv1.ImageImportTask) error {
	id := taskImageID(task)
	if task.Labels[tasksv1.LabelImageID] == id {
		return nil
	}
	// Only over the task as this reconcile read it (a conflict otherwise,
	// which Reconcile takes for a retry): the status written at the end
	// then expects the task as this patch leaves it.
	patch := fmt.Sprintf(`{"metadata":{"resourceVersion":%q,"labels":{%q:%q}}}`, task.ResourceVersion, tasksv1.LabelImageID, id)
	labelled := task.DeepCopy() // the response's status must not undo this reconcile's
	err := r.Patch(ctx, labelled, client.RawPatch(types.MergePatchType, []byte(patch)))
	if err != nil {
		return fmt.Errorf("labelling the task with its image id: %w", err)
	}
	task.Labels, task.ResourceVersion = labelled.Labels, labelled.ResourceVersion
	return nil
}

// ownImage is the Image a task without spec.image creates: its
// imageProperties as the spec, labels naming the task, and the data
// finalizer from the start. The task does not own it: deleting a task
// never deletes its image, as in Glance.
func ownImage(t *tasksv1.ImageImportTask) *tasksv1.Image {
	img := &tasksv1.Image{ObjectMeta: metav1.ObjectMeta{
		Namespace: t.Namespace, Name: imageID(t),
		Labels: map[string]string{
			tasksv1.LabelTaskName: truncateLabel(t.Name),
			tasksv1.LabelTaskUID:  string(t.UID),
		},
		Finalizers: []string{tasksv1.FinalizerImageData},
	}}
	if p := t.Spec.Input.ImageProperties; p != nil {
		img.Spec = tasksv1.ImageSpec{
			Name: p.Name, DiskFormat: p.DiskFormat, ContainerFormat: p.ContainerFormat,
			Visibility: p.Visibility, Protected: ptr.Deref(p.Protected, false), Tags: p.Tags,
			MinDisk: ptr.Deref(p.MinDisk, 0), MinRAM: ptr.Deref(p.MinRAM, 0), Properties: p.Properties,
		}
	}
	return img
}

// createOwnImage creates the task's own Image, or returns it when an
// earlier reconcile did.
func (r *ImageImportTaskReconciler) createOwnImage(ctx context.Context, task *tasksv1.ImageImportTask) (*tasksv1.Image, error) {
	img := ownImage(task)
	err := r.Create(ctx, img)
	if apierrors.IsAlreadyExists(err) {
		err = r.APIReader.Get(ctx, client.ObjectKeyFromObject(img), img)
		return img, err
	}
	if err != nil {
		return nil, fmt.Errorf("creating Image %s: %w", img.Name, err)
	}
	r.Recorder.Eventf(img, task, corev1.EventTypeNormal, "Created", "CreateImage",
		"Created by task %s", task.Name)
	return img, nil
}

// claimedBy reports whether the task is the one that claimed the image:
// its name and UID. A claim made before the UID was recorded has the
// task's name, and the task existed when the image last changed.
func claimedBy(img *tasksv1.Image, task *tasksv1.ImageImportTask) bool {
	st := img.Status
	if st.ImportTask != task.Name {
		return false
	}
	if st.ImportTaskUID == "" {
		return st.UpdatedAt == nil || !st.UpdatedAt.Time.Before(task.CreationTimestamp.Time)
	}
	return st.ImportTaskUID == task.UID
}

// DefaultPriorImportRecheck is how often a task that waits for its
// predecessor's import to be cancelled looks again, should it miss the
// image's return to queued (tasksWaitingForImage).
const DefaultPriorImportRecheck = 5 * time.Second

// holdImageData adds the data finalizer before any byte is written, so
// that deleting the image removes them. The optimistic lock keeps the
// finalizer from being added to an image deleted since it was read (the
// API server refuses new finalizers on such an image anyway).
func (r *ImageImportTaskReconciler) holdImageData(ctx context.Context, img *tasksv1.Image) error {
	if controllerutil.ContainsFinalizer(img, tasksv1.FinalizerImageData) {
		return nil
	}
	before := img.DeepCopy()
	controllerutil.AddFinalizer(img, tasksv1.FinalizerImageData)
	if err := r.Patch(ctx, img, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("adding the data finalizer to Image %s: %w", img.Name, err)
	}
	return nil
}

// claimImage marks the image importing for the task. The optimistic lock
// makes the claim exclusive: of two tasks that saw the image queued, the
// second gets a conflict, and on its retry sees the image importing.
func (r *ImageImportTaskReconciler) claimImage(ctx context.Context, img *tasksv1.Image, task *tasksv1.ImageImportTask) error {
	if img.Status.Status == tasksv1.ImageImporting && claimedBy(img, task) {
		return nil
	}
	before := img.DeepCopy()
	from := img.Status.Status
	img.Status.Status = tasksv1.ImageImporting
	img.Status.ImportTask, img.Status.ImportTaskUID = task.Name, task.UID
	img.Status.UpdatedAt = &metav1.Time{Time: r.Clock.Now()}
	setImageReady(img, metav1.ConditionUnknown, tasksv1.ReasonImporting,
		fmt.Sprintf("Task %s imports %s", task.Name, task.Spec.Input.ImportFrom))
	err := r.Status().Patch(ctx, img, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
	if err != nil {
		return fmt.Errorf("claiming Image %s: %w", img.Name, err)
	}
	r.Metrics.observeImageTransition(tasksv1.ImageImporting)
	r.Recorder.Eventf(img, task, corev1.EventTypeNormal, tasksv1.ReasonImporting, "Import",
		"Image is importing (was %s): task %s imports %s", phaseName(from), task.Name, task.Spec.Input.ImportFrom)
	return nil
}
