package sandbox

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkQemuImgInfo is the sandbox's cost per qemu-img run: the same
// `qemu-img info` directly and through the launcher (one more exec, the
// Landlock ruleset, the seccomp filter, the rlimits).
func BenchmarkQemuImgInfo(b *testing.B) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		b.Skip("no qemu-img")
	}
	path := filepath.Join(b.TempDir(), "image.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", path, "1G").CombinedOutput(); err != nil {
		b.Fatalf("%s %v", out, err)
	}
	image, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer image.Close()
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			cmd := exec.Command("qemu-img", "info", "-f", "qcow2", "--output=json", "/dev/fd/3")
			cmd.ExtraFiles = []*os.File{image}
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%s %v", out, err)
			}
		}
	})
	b.Run("sandboxed", func(b *testing.B) {
		for b.Loop() {
			s := &Sandbox{Landlock: ABI() > 0, Limits: Limits{CPU: 3600e9, Memory: 2 << 30, FileSize: 1 << 30}}
			cmd, err := s.Command(context.Background(), "qemu-img", "info", "-f", "qcow2", "--output=json", s.Read(image))
			if err != nil {
				b.Fatal(err)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%s %v", out, err)
			}
		}
	})
}
