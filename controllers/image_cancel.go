package controllers

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// An import whose task is deleted before the Image reconciler settled it
// (the user deleted it, or its TTL did while the manager was down) leaves
// an image importing with no task to read. What the import wrote is
// unknown: nothing, staging files, or a whole image (a task that had
// succeeded). Its record (size, checksums, location) went with the task,
// and an image is only active with one. So, in order:
//
//  1. wait until no importer of the image runs: no import Job of it that
//     has not finished (a task deleted with --cascade=orphan), and no
//     importer pod that has not ended (the garbage collector deletes them
//     after the task, and a pod being deleted may still write);
//  2. remove whatever the import may have written, its file and staging
//     files in the store, with a cleanup Job of its own (freeJobName);
//  3. then settle the image: killed when the import had succeeded (as far
//     as an importer pod still tells) or the image was the task's own;
//     queued again, as before, for a named image whose import never ended.
//
// The image stays importing, and so unclaimable, until then: no other
// import can write its id while the old one may, or while the cleanup runs.

// cancelImport settles the image of a task deleted before it was settled,
// one step per reconcile.
func (r *ImageReconciler) cancelImport(ctx context.Context, w *imageWrite, now time.Time) (ctrl.Result, error) {
	img := w.img
	task := img.Status.ImportTask
	running, pods, err := r.importerRunning(ctx, img)
	if err != nil {
		return ctrl.Result{}, err
	}
	if running != "" {
		setImageReady(img, metav1.ConditionUnknown, tasksv1.ReasonImportTaskDeleted,
			fmt.Sprintf("Task %s was deleted; waiting for its importer to end: %s", task, running))
		return ctrl.Result{RequeueAfter: r.importerExitRecheck()}, nil
	}
	succeeded := importSucceeded(pods, img)
	target := cleanupTarget{claim: r.Importer.StoreClaimName, file: img.Name}
	freed, freeJob := "", (*batchv1.Job)(nil)
	gone, err := r.storeGone(ctx, img, target.claim)
	switch {
	case err != nil:
		return ctrl.Result{}, err
	case gone != "":
		freed = "nothing to remove: " + gone
	default:
		job, res, err := r.runCleanupJob(ctx, w, cleanupRun{
			name: freeJobName(img), target: target, what: "what the import of deleted task " + task + " may have written",
			ready: metav1.ConditionUnknown, reason: tasksv1.ReasonImportTaskDeleted,
		})
		if job == nil || err != nil {
			return res, err
		}
		freed, freeJob = "Job "+job.Name+" removed what it wrote", job
	}
	w.note(cancelledImport(img, succeeded, freed, now))
	if freeJob == nil {
		return ctrl.Result{}, nil
	}
	// The status first: were the Job gone and the status not written, the
	// next reconcile would run another Job for nothing.
	if err := w.flush(ctx, nil); err != nil {
		return ctrl.Result{}, err
	}
	r.dropFreeJob(ctx, freeJob)
	return ctrl.Result{}, nil
}

// dropFreeJob deletes a completed free Job once the image is settled: it
// has told what it had to. One left behind (a failed delete) is harmless:
// its name is this claim's only, and the image owns it.
func (r *ImageReconciler) dropFreeJob(ctx context.Context, job *batchv1.Job) {
	err := r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground), client.Preconditions{UID: &job.UID})
	if client.IgnoreNotFound(err) != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Deleting a completed cleanup Job", "job", job.Name)
	}
}

// importerRunning says which importer of the image may still write its
// id: an import Job that has not finished, or an importer pod that has not
// ended; "" when none. It also returns the importer pods, ended.
func (r *ImageReconciler) importerRunning(ctx context.Context, img *tasksv1.Image) (string, []corev1.Pod, error) {
	importer := client.MatchingLabels{tasksv1.LabelImageID: img.Name, "app.kubernetes.io/name": "image-importer"}
	var jobs batchv1.JobList
	if err := r.List(ctx, &jobs, client.InNamespace(img.Namespace), importer); err != nil {
		return "", nil, fmt.Errorf("listing the import Jobs of Image %s: %w", img.Name, err)
	}
	for _, j := range jobs.Items {
		if finishedCondition(&j) == nil {
			return "import Job " + j.Name + " has not finished", nil, nil
		}
	}
	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.InNamespace(img.Namespace), importer); err != nil {
		return "", nil, fmt.Errorf("listing the importer pods of Image %s: %w", img.Name, err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			return "importer pod " + p.Name + " is still running", nil, nil
		}
	}
	return "", pods.Items, nil
}

// importSucceeded says whether an ended importer pod of the image's
// claimant reports that it stored the image.
func importSucceeded(pods []corev1.Pod, img *tasksv1.Image) bool {
	var mine []corev1.Pod
	for _, p := range pods {
		if ranForClaimant(&p, img) {
			mine = append(mine, p)
		}
	}
	res, _ := lastResult(mine)
	return res != nil && res.Error == "" && res.Reason == "" && res.ImageID == img.Name
}

// ranForClaimant says whether an importer pod ran for the task that
// claimed the image: by its UID, since a task of the same name may have
// imported into the image before; by its name for a claim that recorded
// no UID (made before claims did).
func ranForClaimant(pod *corev1.Pod, img *tasksv1.Image) bool {
	if uid := img.Status.ImportTaskUID; uid != "" {
		return pod.Labels[tasksv1.LabelTaskUID] == string(uid)
	}
	return pod.Labels[tasksv1.LabelTaskName] == truncateLabel(img.Status.ImportTask)
}
