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
	return glanceCLIAs(t, p, "cli:"+p.namespace+":admin", args...)
}

// glanceCLIAs runs the glance CLI with the token "user:project:roles".
func glanceCLIAs(t *testing.T, p *project, token string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("glance"); err != nil {
		t.Fatal("the glance CLI is not installed: run 'make deps' (hack/install-deps.sh)")
	}
	cmd := withoutStdin("glance", append([]string{"--os-image-url", p.shim.URL, "--os-auth-token", token}, args...)...)
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

// withoutStdin runs a command with its standard input closed, as from a
// terminal with nothing typed: glanceclient and openstackclient read image
// data from a standard input that is not a terminal (Go's /dev/null is
// not), and then refuse web-download or ask for glance-direct.
func withoutStdin(name string, args ...string) *exec.Cmd {
	return exec.Command("sh", append([]string{"-c", `exec "$0" "$@" <&-`, name}, args...)...)
}
