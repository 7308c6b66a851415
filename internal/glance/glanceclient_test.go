package glance

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// python-glanceclient (Debian's python3-glanceclient), unmodified, against
// the shim: task-create, task-show, task-list.
func TestPythonGlanceclient(t *testing.T) {
	if _, err := exec.LookPath("glance"); err != nil {
		t.Fatal("the glance CLI is not installed: run 'make deps' (hack/install-deps.sh)")
	}
	s := newShim(t, PolicyAdmin)
	home := t.TempDir() // glanceclient caches schemas under $HOME
	glance := func(args ...string) string {
		t.Helper()
		cmd := glanceCmd(home, s.URL, "cli:cliproject:admin", args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("glance %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := glance("task-create", "--type", "import", "--input",
		`{"import_from":"http://127.0.0.1:19293/small.qcow2","import_from_format":"qcow2","image_properties":{"disk_format":"qcow2","container_format":"bare","name":"from-glanceclient"}}`)
	id := field(out, "id")
	if len(id) != 36 || field(out, "status") != "pending" || field(out, "owner") != "cliproject" {
		t.Fatalf("task-create printed:\n%s", out)
	}
	var show string
	for range 50 { // reads come from the cache
		cmd := glanceCmd(home, s.URL, "cli:cliproject:admin", "task-show", id)
		b, err := cmd.CombinedOutput()
		show = string(b)
		if err == nil {
			break
		}
	}
	if field(show, "id") != id || field(show, "type") != "import" {
		t.Fatalf("task-show printed:\n%s", show)
	}
	list := glance("task-list", "--page-size", "1")
	if !strings.Contains(list, id) {
		t.Fatalf("task-list does not show %s:\n%s", id, list)
	}
	if _, err := exec.Command("glance", "--os-image-url", s.URL, "--os-auth-token", "cli:cliproject:member", "task-list").CombinedOutput(); err == nil {
		t.Error("a member listed tasks; Glance's default policy refuses")
	}
}

// glanceCmd is a glance CLI call. glanceclient 4.1.0 caches the image
// schema under $HOME and, on its next run, adds an option for each of its
// properties: the real schema's read-only "stores" then clashes with
// --stores and every call fails ("conflicting option string"), against a
// real Glance too. Each call starts without the cache, as
// shared/reference/real-glance/glance-cli.sh does.
func glanceCmd(home, url, token string, args ...string) *exec.Cmd {
	os.RemoveAll(filepath.Join(home, ".glanceclient"))
	// stdin closed: with any other stdin, image-create uploads it as data.
	cmd := exec.Command("sh", append([]string{"-c", `exec glance "$@" <&-`, "sh", "--os-image-url", url, "--os-auth-token", token}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	return cmd
}

// field reads a property from glanceclient's table output.
func field(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		cols := strings.Split(line, "|")
		if len(cols) >= 3 && strings.TrimSpace(cols[1]) == name {
			return strings.TrimSpace(cols[2])
		}
	}
	return ""
}
