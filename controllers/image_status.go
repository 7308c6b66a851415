package controllers

import (
	"cmp"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// imageEvent is a transition of an Image, told as an Event.
type imageEvent struct {
	warning bool
	reason  string
	note    string
}

// setImageReady sets the Image's Ready condition. Ready is True when the
// image is active, Unknown while it imports, and False otherwise (queued,
// killed, deleting), with the reason why.
func setImageReady(img *tasksv1.Image, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&img.Status.Conditions, metav1.Condition{
		Type: tasksv1.ConditionReady, Status: status, Reason: reason,
		Message: truncate(message, 1024), ObservedGeneration: img.Generation,
	})
}

// phaseName is an image status for a message: an Image the shim has just
// created has none yet, and is queued.
func phaseName(p tasksv1.ImagePhase) tasksv1.ImagePhase {
	return cmp.Or(p, tasksv1.ImageQueued)
}

// initImage gives an Image created without a status (by the shim, or
// kubectl) its first one: queued. It reports whether it did.
func initImage(img *tasksv1.Image, now time.Time) *imageEvent {
	if img.Status.Status != "" {
		return nil
	}
	img.Status.Status = tasksv1.ImageQueued
	img.Status.UpdatedAt = &metav1.Time{Time: now}
	setImageReady(img, metav1.ConditionFalse, tasksv1.ReasonQueued, "The image holds no data: an import may fill it")
	return &imageEvent{reason: tasksv1.ReasonQueued, note: "Image is queued: it holds no data yet"}
}

// settleImport moves an Image out of importing once the task that claimed
// it has ended, from the task's terminal status alone: on success, active
// with the stored image's fields; on failure, queued (a spec.image task
// with onFailure Queued, as Glance's web-download) or killed (onFailure
// Killed, and the images tasks create for themselves). An image being
// deleted keeps its status, but learns where the data of a successful
// import is, so that its cleanup removes it. It is idempotent: an image
// no longer importing for that task is left alone.
func settleImport(img *tasksv1.Image, task *tasksv1.ImageImportTask, now time.Time) *imageEvent {
	st := &img.Status
	if st.ImportTask != task.Name || !task.Status.Status.Terminal() {
		return nil
	}
	success := task.Status.Status == tasksv1.TaskSuccess && task.Status.Image != nil
	if st.Status != tasksv1.ImageImporting && !(success && st.Status == tasksv1.ImageDeleted && st.Location == "") {
		return nil
	}
	if success {
		recordData(img, task.Status.Image)
		if st.Status == tasksv1.ImageDeleted {
			return nil
		}
		st.Status = tasksv1.ImageActive
		st.UpdatedAt = &metav1.Time{Time: now}
		setImageReady(img, metav1.ConditionTrue, tasksv1.ReasonSucceeded, "Imported by task "+task.Name)
		return &imageEvent{reason: tasksv1.ReasonSucceeded, note: "Image is active: imported by task " + task.Name}
	}
	reason, message := tasksv1.ReasonImportFailed, task.Status.Message
	if c := meta.FindStatusCondition(task.Status.Conditions, tasksv1.ConditionReady); c != nil {
		reason = c.Reason
	}
	to := tasksv1.ImageKilled
	if task.Spec.Image != nil && task.Spec.Image.OnFailure != tasksv1.ImageFailureKilled {
		to = tasksv1.ImageQueued
	}
	return failImport(img, to, reason, fmt.Sprintf("Task %s failed: %s", task.Name, message), now)
}

// failImport ends an import that did not fill the image: it is queued or
// killed, and Ready False says why.
func failImport(img *tasksv1.Image, to tasksv1.ImagePhase, reason, message string, now time.Time) *imageEvent {
	img.Status.Status = to
	img.Status.UpdatedAt = &metav1.Time{Time: now}
	setImageReady(img, metav1.ConditionFalse, reason, message)
	return &imageEvent{warning: true, reason: reason, note: truncate(fmt.Sprintf("Image is %s: %s", to, message), 1024)}
}

// recordData copies what the import stored into the image's status.
func recordData(img *tasksv1.Image, info *tasksv1.ImageInfo) {
	st := &img.Status
	st.Size = ptr.To(info.Size)
	st.VirtualSize = nil
	if info.VirtualSize > 0 {
		st.VirtualSize = ptr.To(info.VirtualSize)
	}
	st.Checksum, st.OSHashAlgo, st.OSHashValue, st.SHA256 = info.Checksum, info.OSHashAlgo, info.OSHashValue, info.SHA256
	st.Location = info.Location
	st.DiskFormat = tasksv1.DiskFormat(info.DiskFormat)
	st.ContainerFormat = tasksv1.ContainerFormat(info.ContainerFormat)
	st.Unpacked = info.Unpacked
}

// cancelledImport settles the image of a task deleted before it was
// settled, once its importer has ended and what it may have written is
// removed (freed says how). An import that had succeeded kills the image:
// its data went with the task's record of it, and a caller waiting for
// active must not wait on. An import that had not ended kills the image
// the task had created for itself, and queues a named one again.
func cancelledImport(img *tasksv1.Image, succeeded bool, freed string, now time.Time) *imageEvent {
	task := img.Status.ImportTask
	if succeeded {
		return failImport(img, tasksv1.ImageKilled, tasksv1.ReasonImportTaskDeleted, fmt.Sprintf(
			"Task %s succeeded but was deleted before the image recorded its data, which is lost with the task; %s. Import the image again",
			task, freed), now)
	}
	to := tasksv1.ImageQueued
	if img.Labels[tasksv1.LabelTaskUID] != "" {
		to = tasksv1.ImageKilled
	}
	return failImport(img, to, tasksv1.ReasonImportTaskDeleted, fmt.Sprintf(
		"Task %s was deleted before its import ended; %s", task, freed), now)
}
