package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// An OVA made by tar from an OVF descriptor and a streamOptimized VMDK,
// imported with python-glanceclient's task-create, stores its disk (raw,
// container bare); glance image-show then shows what the descriptor says
// as image properties, the owner's own ovf_vendor kept.
func TestOVAImportShowsOVFProperties(t *testing.T) {
	p := newProject(t)
	dumpOnFailure(t, p.namespace)
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 8<<20)
	ova, _ := testimages.OVA(t, dir, raw, "appliance")
	data, err := os.ReadFile(ova)
	if err != nil {
		t.Fatal(err)
	}
	served := filepath.Join(fixtures, "appliance.ova")
	if err := os.WriteFile(served, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(served) })

	out := glanceCLI(t, p, "task-create", "--type", "import", "--input", `{"import_from":"`+sources.URL+`/appliance.ova",`+
		`"import_from_format":"vmdk","image_properties":{"disk_format":"raw","container_format":"ova","name":"appliance","ovf_vendor":"mine"}}`)
	task := waitForTask(t, p, field(out, "id"), tasksv1.TaskSuccess)
	id := task.Status.Result.ImageID
	stored, err := os.ReadFile(filepath.Join(runner.ClaimDir(p.namespace, "image-store"), id))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, want) {
		t.Fatalf("the stored image (%d bytes) differs from the disk in the OVA (%d bytes)", len(stored), len(want))
	}
	waitForImage(t, p, id, tasksv1.ImageActive)

	show := glanceCLIAs(t, p, "cli:"+p.namespace+":member", "image-show", id)
	for name, value := range map[string]string{
		"status": "active", "container_format": "bare", "disk_format": "raw",
		"ovf_name": "appliance", "ovf_product": "Example Appliance", "ovf_vendor": "mine", "ovf_version": "1.2.3",
	} {
		if got := field(show, name); got != value {
			t.Errorf("image-show: %s is %q, want %q", name, got, value)
		}
	}
	if t.Failed() {
		t.Logf("image-show printed:\n%s", show)
	}
}
