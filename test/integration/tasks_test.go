package integration

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// A task created with POST /v2/tasks by a real client runs the real
// importer, ends in success, and stores the image converted, into the
// image the shim made for it, which glance image-show displays to the
// project's members.
func TestTaskImportsThroughTheRunner(t *testing.T) {
	p := newProject(t)
	url, raw := fixture(t, "task.qcow2", "qcow2", 8<<20)
	out := glanceCLI(t, p, "task-create", "--type", "import", "--input",
		`{"import_from":"`+url+`","import_from_format":"qcow2","image_properties":{"disk_format":"raw","container_format":"bare","name":"via-task"}}`)
	id := field(out, "id")
	task := waitForTask(t, p, id, tasksv1.TaskSuccess)
	stored, err := os.ReadFile(filepath.Join(runner.ClaimDir(p.namespace, "image-store"), task.Status.Result.ImageID))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, raw) {
		t.Fatalf("the stored image (%d bytes) differs from the source disk (%d bytes)", len(stored), len(raw))
	}
	// The task's image is its project's: a member of it reads it.
	show := glanceCLIAs(t, p, "cli:"+p.namespace+":member", "image-show", task.Status.Result.ImageID)
	if field(show, "status") != "active" || field(show, "owner") != p.namespace || field(show, "name") != "via-task" {
		t.Fatalf("image-show printed:\n%s", show)
	}
}

// waitForTask waits until the task with Glance id (its UID) has status.
func waitForTask(t *testing.T, p *project, id string, status tasksv1.TaskStatus) *tasksv1.ImageImportTask {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var tasks tasksv1.ImageImportTaskList
		if err := k8sClient.List(context.Background(), &tasks, client.InNamespace(p.namespace)); err != nil {
			t.Fatal(err)
		}
		for i := range tasks.Items {
			task := &tasks.Items[i]
			if string(task.UID) != id {
				continue
			}
			if task.Status.Status == status {
				return task
			}
			if task.Status.Status.Terminal() || time.Now().After(deadline) {
				t.Fatalf("task %s is %s (%s), want %s", id, task.Status.Status, task.Status.Message, status)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no task %s in %s", id, p.namespace)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
