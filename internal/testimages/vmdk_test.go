package testimages

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestHostileVMDKsReadTheSecret shows that the fixtures are genuine: the
// real qemu-img copies the named host file into its output.
func TestHostileVMDKsReadTheSecret(t *testing.T) {
	RequireQemuImg(t)
	for name, build := range map[string]func(testing.TB, string, string) string{
		"hostile": HostileVMDK, "flat extent": FlatExtentVMDK,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			secret := write(t, filepath.Join(dir, "secret"), bytes.Repeat([]byte("host secret "), 200))
			out := filepath.Join(dir, "out.raw")
			QemuImg(t, "convert", "-f", "vmdk", "-O", "raw", build(t, dir, secret), out)
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(got, []byte("host secret host secret")) {
				t.Fatalf("qemu-img did not copy the secret: the fixture no longer fools it (%d bytes out)", len(got))
			}
		})
	}
}
