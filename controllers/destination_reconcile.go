package controllers

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=storage.k8s.io,resources=storageclasses,verbs=list
// +kubebuilder:rbac:groups="",resources=pods,verbs=delete

// The annotations by which a StorageClass is the cluster's default.
var defaultClassAnnotations = []string{
	"storageclass.kubernetes.io/is-default-class",
	"storageclass.beta.kubernetes.io/is-default-class",
}

// prepareDestination makes sure the claim the task's importer writes to
// exists before its Job does: the store claim, created when missing and a
// storage class can provision it, or the image's own volume. stop is true
// when the Job must not be created (yet); obs then says why.
func (r *ImageImportTaskReconciler) prepareDestination(ctx context.Context, task *tasksv1.ImageImportTask) (obs observation, stop bool, err error) {
	if why := resourcesProblem(&desiredJob(task, r.Importer).Spec.Template.Spec); why != "" {
		return failed(tasksv1.ReasonInvalidInput, why), true, nil
	}
	if v := volumeOf(task, r.Importer.Destination); v != nil {
		return r.ensureVolume(ctx, task, v)
	}
	return r.ensureStoreClaim(ctx, task)
}

// ensureStoreClaim creates the store claim of a namespace that has none,
// when a storage class can provision it (the manager's
// --store-storage-class, or the cluster's default); without one, the task
// fails at once and says how to fix it. A claim being deleted is waited
// for, up to StoreClaimTimeout from the task's creation: it may be
// replaced.
func (r *ImageImportTaskReconciler) ensureStoreClaim(ctx context.Context, task *tasksv1.ImageImportTask) (observation, bool, error) {
	claim := r.Importer.StoreClaimName
	key := client.ObjectKey{Namespace: task.Namespace, Name: claim}
	pvc := &corev1.PersistentVolumeClaim{}
	err := r.importerCache.Get(ctx, key, pvc)
	if apierrors.IsNotFound(err) {
		// The cache may not have seen a claim created a moment ago.
		err = r.APIReader.Get(ctx, key, pvc)
	}
	switch {
	case apierrors.IsNotFound(err):
		return r.createStoreClaim(ctx, task)
	case err != nil:
		return observation{}, false, fmt.Errorf("reading PersistentVolumeClaim %s: %w", claim, err)
	case pvc.DeletionTimestamp == nil:
		return observation{}, false, nil
	}
	why := fmt.Sprintf("The image store claim %q in namespace %q is being deleted", claim, task.Namespace)
	bound := cmp.Or(r.StoreClaimTimeout, DefaultStoreClaimTimeout)
	deadline := task.CreationTimestamp.Add(bound)
	left := deadline.Sub(r.Clock.Now())
	if left <= 0 {
		return failed(tasksv1.ReasonStoreClaimMissing, fmt.Sprintf(
			"%s: the import waited %s for it to go and be replaced. Create the claim and import again.", why, bound)), true, nil
	}
	return observation{
		waiting: &problem{tasksv1.ReasonStoreClaimMissing, fmt.Sprintf(
			"%s: the import starts once it is gone and replaced, and fails if it is not by %s.", why, deadline.UTC().Format(time.RFC3339))},
		recheck: left,
	}, true, nil
}

// createStoreClaim creates the namespace's store claim, or fails the task
// when no storage class could provision it.
func (r *ImageImportTaskReconciler) createStoreClaim(ctx context.Context, task *tasksv1.ImageImportTask) (observation, bool, error) {
	claim := r.Importer.StoreClaimName
	if r.Importer.Destination.StoreStorageClass == "" {
		def, err := r.defaultStorageClass(ctx)
		if err != nil {
			return observation{}, false, err
		}
		if def == "" {
			return failed(tasksv1.ReasonStoreClaimMissing, fmt.Sprintf(
				"The image store claim %q does not exist in namespace %q, and the operator cannot create it: the manager has no "+
					"--store-storage-class and the cluster has no default StorageClass. Create the claim (a ReadWriteOnce "+
					"PersistentVolumeClaim named %s), give the manager --store-storage-class, or import into a volume of a named "+
					"class (spec.destination: {type: Volume, volume: {storageClassName: ...}}); then import again.",
				claim, task.Namespace, claim)), true, nil
		}
	}
	pvc := desiredStoreClaim(task.Namespace, r.Importer)
	err := r.Create(ctx, pvc)
	if apierrors.IsAlreadyExists(err) {
		return observation{}, false, nil // another task's reconcile made it
	}
	if err != nil {
		return observation{}, false, fmt.Errorf("creating the image store claim %s: %w", claim, err)
	}
	ctrl.LoggerFrom(ctx).Info("Created the image store claim", "claim", klog.KObj(pvc))
	r.Recorder.Eventf(task, pvc, corev1.EventTypeNormal, "StoreClaimCreated", "CreateClaim",
		"Created the image store claim %s (%s, class %s)", claim, pvc.Spec.Resources.Requests.Storage(), className(pvc.Spec.StorageClassName))
	r.Metrics.observeClaimCreated("store", "")
	return observation{}, false, nil
}

// ensureVolume creates the image's own claim, owned by its Image (deleting
// the Image frees the volume through garbage collection), with the storage
// class the task, the manager or the cluster's default names; the task
// fails at once when none does, or when the claim's name is taken.
func (r *ImageImportTaskReconciler) ensureVolume(ctx context.Context, task *tasksv1.ImageImportTask, v *tasksv1.VolumeDestination) (observation, bool, error) {
	if why := cmp.Or(volumeFormatProblem(task, v), volumeSizeProblem(task, v)); why != "" {
		return failed(tasksv1.ReasonInvalidInput, why), true, nil
	}
	key := client.ObjectKey{Namespace: task.Namespace, Name: volumeClaimName(task)}
	img := &tasksv1.Image{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: taskImageID(task)}, img); err != nil {
		return observation{}, false, fmt.Errorf("reading Image %s: %w", taskImageID(task), err)
	}
	pvc := &corev1.PersistentVolumeClaim{}
	err := r.APIReader.Get(ctx, key, pvc)
	switch {
	case err == nil && metav1.IsControlledBy(pvc, img):
		return observation{}, false, nil
	case err == nil:
		return failed(tasksv1.ReasonVolumeConflict, fmt.Sprintf(
			"PersistentVolumeClaim %s already exists and does not belong to Image %s: delete it, or import into another image.", key.Name, img.Name)), true, nil
	case !apierrors.IsNotFound(err):
		return observation{}, false, fmt.Errorf("reading PersistentVolumeClaim %s: %w", key.Name, err)
	}
	if v.StorageClassName == nil {
		def, err := r.defaultStorageClass(ctx)
		if err != nil {
			return observation{}, false, err
		}
		if def == "" {
			return failed(tasksv1.ReasonStorageClassMissing,
				"The image's volume names no storage class, the manager has no --volume-storage-class and the cluster has no default "+
					"StorageClass: nothing would provision it. Set spec.destination.volume.storageClassName, or give the cluster a default class."), true, nil
		}
		v.StorageClassName = ptr.To(def)
	}
	pvc = desiredVolumeClaim(task, v)
	if err := ctrl.SetControllerReference(img, pvc, r.Scheme); err != nil {
		return observation{}, false, err
	}
	if err := r.Create(ctx, pvc); err != nil && !apierrors.IsAlreadyExists(err) {
		return observation{}, false, fmt.Errorf("creating PersistentVolumeClaim %s: %w", pvc.Name, err)
	} else if err == nil {
		ctrl.LoggerFrom(ctx).Info("Created the image's volume", "claim", klog.KObj(pvc))
		r.Recorder.Eventf(task, pvc, corev1.EventTypeNormal, "VolumeCreated", "CreateClaim",
			"Created PersistentVolumeClaim %s for the image (%s, %s, class %s)", pvc.Name, *v.VolumeMode, v.Size, className(v.StorageClassName))
		r.Metrics.observeClaimCreated("volume", string(*v.VolumeMode))
	}
	return observation{}, false, nil
}

// defaultStorageClass is the name of the cluster's default StorageClass;
// "" when it has none. Read from the API server: it is read only when a
// claim is about to be created.
func (r *ImageImportTaskReconciler) defaultStorageClass(ctx context.Context) (string, error) {
	var classes storagev1.StorageClassList
	if err := r.APIReader.List(ctx, &classes); err != nil {
		return "", fmt.Errorf("listing StorageClasses: %w", err)
	}
	var newest *storagev1.StorageClass
	for i := range classes.Items {
		c := &classes.Items[i]
		for _, a := range defaultClassAnnotations {
			// Several defaults: the newest wins, as the API server's defaulting does.
			if c.Annotations[a] == "true" && (newest == nil || c.CreationTimestamp.After(newest.CreationTimestamp.Time)) {
				newest = c
			}
		}
	}
	if newest == nil {
		return "", nil
	}
	return newest.Name, nil
}

// annotateVolume records a successful import's checksums and sizes on the
// image's volume claim, once.
func (r *ImageImportTaskReconciler) annotateVolume(ctx context.Context, task *tasksv1.ImageImportTask) error {
	info := task.Status.Image
	if task.Status.Status != tasksv1.TaskSuccess || info == nil || volumeOf(task, r.Importer.Destination) == nil {
		return nil
	}
	pvc := &corev1.PersistentVolumeClaim{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: volumeClaimName(task)}, pvc)
	if err != nil {
		return client.IgnoreNotFound(err) // the image, and its volume, went already
	}
	want := volumeDataAnnotations(info)
	have := maps.Clone(pvc.Annotations)
	if have == nil {
		have = map[string]string{}
	}
	maps.Copy(have, want)
	if maps.Equal(have, pvc.Annotations) {
		return nil
	}
	before := pvc.DeepCopy()
	pvc.Annotations = have
	if err := r.Patch(ctx, pvc, client.MergeFrom(before)); err != nil {
		return client.IgnoreNotFound(err)
	}
	return nil
}

func className(c *string) string {
	if c == nil {
		return "(the cluster's default)"
	}
	return *c
}

// releaseVolume deletes the finished importer pods of a task that imported
// into a volume, once the task's end is recorded (their results are read
// before): a pod keeps the claims it names from being deleted in any
// phase, Succeeded too (kubernetes.io/pvc-protection), so the Image's
// volume would otherwise stay Terminating after the Image is deleted, for
// as long as the task lives. The Job, and its status, stay.
func (r *ImageImportTaskReconciler) releaseVolume(ctx context.Context, task *tasksv1.ImageImportTask) error {
	if !task.Status.Status.Terminal() || task.Status.JobName == "" || volumeOf(task, r.Importer.Destination) == nil {
		return nil
	}
	_, err := r.deleteFinishedImporters(ctx, task)
	return err
}

// DefaultImporterReleaseWait bounds how long a volume import waits for its
// deleted importer pods to go: a pod whose node stopped answering stays
// Terminating until the node is removed, and the import is done.
const DefaultImporterReleaseWait = 2 * time.Minute

// deleteFinishedImporters deletes the task's importer pods that have
// ended, and reports how long to wait for those still there (running, or
// being deleted: the kubelet removes a pod once its volumes are unmounted);
// zero when none is, or none deleted within the release wait.
func (r *ImageImportTaskReconciler) deleteFinishedImporters(ctx context.Context, task *tasksv1.ImageImportTask) (wait time.Duration, err error) {
	var pods corev1.PodList
	if err := r.importerCache.List(ctx, &pods, client.InNamespace(task.Namespace),
		client.MatchingLabels{tasksv1.LabelTaskUID: string(task.UID)}); err != nil {
		return 0, fmt.Errorf("listing the importer pods: %w", err)
	}
	bound := cmp.Or(r.ImporterReleaseWait, DefaultImporterReleaseWait)
	for i := range pods.Items {
		p := &pods.Items[i]
		switch {
		case p.DeletionTimestamp != nil:
			if left := bound - r.Clock.Since(p.DeletionTimestamp.Time); left > 0 {
				wait = max(wait, left)
			}
		case p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed:
			wait = max(wait, bound) // the Job controller's to stop; its end brings us back
		default:
			if err := r.Delete(ctx, p, client.Preconditions{UID: &p.UID}); client.IgnoreNotFound(err) != nil {
				return bound, fmt.Errorf("deleting the finished importer pod %s, which holds the image's volume: %w", p.Name, err)
			}
			wait = max(wait, bound)
		}
	}
	return wait, nil
}
