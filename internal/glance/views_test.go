package glance

import (
	"testing"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// Glance's message is empty until a task fails, whatever the operator
// explains to kubectl users in the meantime.
func TestMessageOnlyOnFailure(t *testing.T) {
	for status, want := range map[tasksv1.TaskStatus]string{
		tasksv1.TaskPending:    "",
		tasksv1.TaskProcessing: "",
		tasksv1.TaskSuccess:    "",
		tasksv1.TaskFailure:    "Why it failed.",
	} {
		task := &tasksv1.ImageImportTask{}
		task.Status.Status = status
		task.Status.Message = map[bool]string{true: "Why it failed.", false: "Waiting for the importer to start: the claim image-store does not exist."}[status == tasksv1.TaskFailure]
		if got := taskOf(task, "p").message; got != want {
			t.Errorf("%s: message %q, want %q", status, got, want)
		}
	}
}
