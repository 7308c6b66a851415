package testimages

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// CloudLikeQcow2 writes cloud.qcow2, an image built the way cloud images
// are: virtual bytes of disk holding data bytes of real files (a tar of the
// system's libraries, compressible as a root filesystem is), the rest
// unallocated, converted with compressed clusters (qemu-img convert -c).
// It also returns the raw image it was made from.
func CloudLikeQcow2(t testing.TB, dir string, virtual, data int64) (qcow2, raw string) {
	t.Helper()
	raw = filepath.Join(dir, "cloud.raw")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tar := exec.Command("tar", "cf", "-", "-C", "/usr/lib", ".")
	out, err := tar.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tar.Start(); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(f, io.LimitReader(out, data))
	tar.Process.Kill()
	tar.Wait()
	if err != nil || n < data {
		t.Fatalf("only %d bytes of /usr/lib to fill the image: %v", n, err)
	}
	if err := f.Truncate(virtual); err != nil {
		t.Fatal(err)
	}
	qcow2 = filepath.Join(dir, "cloud.qcow2")
	QemuImg(t, "convert", "-c", "-f", "raw", "-O", "qcow2", raw, qcow2)
	return qcow2, raw
}
