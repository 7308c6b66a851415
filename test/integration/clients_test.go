package integration

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// glanceCLI runs python-glanceclient's glance, unmodified, against the
// project's shim as an admin of the project.
func glanceCLI(t *testing.T, p *project, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("glance"); err != nil {
		t.Fatal("the glance CLI is not installed: run 'make deps' (hack/install-deps.sh)")
	}
	cmd := exec.Command("glance", append([]string{"--os-image-url", p.shim.URL, "--os-auth-token", "cli:" + p.namespace + ":admin"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // glanceclient caches schemas under $HOME
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("glance %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
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
