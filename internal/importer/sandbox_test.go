package importer

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/sandbox"
	"github.com/imageimport/image-import-operator/internal/testimages"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

// The three fences around qemu-img (inspector, qemu-img info, kernel
// sandbox), each shown to hold when the ones before it are fooled.

func TestMain(m *testing.M) {
	sandbox.Main() // this test binary launches the sandboxed qemu-img
	os.Exit(m.Run())
}

// secretContent is what no import may ever store.
const secretContent = "THE NODE'S SECRET: never in an image\n"

func writeSecret(t *testing.T) string {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, bytes.Repeat([]byte(secretContent), 64), 0o600); err != nil {
		t.Fatal(err)
	}
	return secret
}

// importLocal imports path, served on 127.0.0.1, and returns the failure
// and the store's directory.
func importLocal(t *testing.T, path, declared, target string, adjust ...func(*Config)) (importresult.Result, error, string) {
	t.Helper()
	srv := httptest.NewServer(http.FileServer(http.Dir(filepath.Dir(path))))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	cfg := Config{
		Source: srv.URL + "/" + filepath.Base(path), SourceFormat: declared, TargetFormat: target,
		Dest: filepath.Join(dir, "store"), ScratchDir: filepath.Join(dir, "scratch"), ImageID: "image",
		ConnectTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second,
		Policy:          urlpolicy.Policy{AllowedSchemes: []string{"http"}, AllowedHosts: []string{"127.0.0.1"}},
		MaxVirtualSize:  1 << 40,
		QemuImg:         "qemu-img",
		QemuMemoryLimit: 2 << 30,
		QemuCPULimit:    time.Minute,
	}
	for _, f := range adjust {
		f(&cfg)
	}
	for _, d := range []string{cfg.Dest, cfg.ScratchDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, cfg)
	return res, err, cfg.Dest
}

// withoutInspector switches our inspector off for the test: it takes the
// declared format and qemu's virtual size on trust, as a fooled inspector
// would.
func withoutInspector(t *testing.T, declared string, virtual int64) {
	t.Helper()
	saved := inspectImage
	inspectImage = func(io.ReaderAt, int64, diskformat.Options) (diskformat.Info, error) {
		return diskformat.Info{Format: declared, VirtualSize: virtual}, nil
	}
	t.Cleanup(func() { inspectImage = saved })
}

// unconfinedInfo is what qemu-img info says of path outside any sandbox.
func unconfinedInfo(t *testing.T, path, format string) map[string]any {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-f", format, "--output=json", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var info map[string]any
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// expectNoSecret fails when the secret is anywhere in the store.
func expectNoSecret(t *testing.T, store string) {
	t.Helper()
	filepath.WalkDir(store, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secretContent)) {
				t.Errorf("the node's secret ended up in %s", p)
			}
		}
		return nil
	})
}

func expectFailure(t *testing.T, err error, reason, says string) {
	t.Helper()
	var f *Failure
	if !errors.As(err, &f) {
		t.Fatalf("import did not fail: %v", err)
	}
	if f.Reason != reason || !f.Permanent || !strings.Contains(f.Message, says) {
		t.Fatalf("failure %s (permanent %v): %q; want %s, saying %q", f.Reason, f.Permanent, f.Message, reason, says)
	}
	t.Logf("%s: %s", f.Reason, f.Message)
}

func requireSandbox(t *testing.T) {
	t.Helper()
	testimages.RequireQemuImg(t)
	if sandbox.ABI() == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the kernel has no Landlock; CI machines must have it")
		}
		t.Skip("the kernel has no Landlock")
	}
}

// The hostile VMDKs, with our inspector fooled: qemu, in the sandbox, is
// denied the host file the image names; nothing is stored.
func TestHostileVMDKFailsWithTheInspectorFooled(t *testing.T) {
	requireSandbox(t)
	secret := writeSecret(t)
	dir := t.TempDir()
	images := map[string]string{
		"hostile descriptor in a sparse header": testimages.HostileVMDK(t, dir, secret),
		"descriptor with a FLAT extent":         testimages.FlatExtentVMDK(t, dir, secret),
	}
	for name, path := range images {
		for _, target := range []string{diskformat.Raw, diskformat.Qcow2, diskformat.VMDK} {
			t.Run(name+" to "+target, func(t *testing.T) {
				virtual := int64(unconfinedInfo(t, path, "vmdk")["virtual-size"].(float64))
				withoutInspector(t, diskformat.VMDK, virtual)
				_, err, store := importLocal(t, path, diskformat.VMDK, target)
				expectFailure(t, err, importresult.ReasonUnsafeImage, "a file other than the image: the image names another file")
				expectNoSecret(t, store)
			})
		}
	}
}

// The second fence alone: what qemu-img info reports of the hostile VMDKs,
// outside any sandbox, names the host file, and qemuLook's rule refuses it.
func TestQemuInfoNamesTheOtherFile(t *testing.T) {
	testimages.RequireQemuImg(t)
	secret := writeSecret(t)
	dir := t.TempDir()
	for _, path := range []string{testimages.HostileVMDK(t, dir, secret), testimages.FlatExtentVMDK(t, dir, secret)} {
		other := otherFiles(unconfinedInfo(t, path, "vmdk"), path)
		if len(other) == 0 || !strings.Contains(strings.Join(other, " "), secret) {
			t.Errorf("%s: qemu-img info's other files %v do not include the secret", filepath.Base(path), other)
		}
	}
	// A plain image names only itself.
	plain := testimages.Make(t, dir, testimages.Raw(t, dir, 1<<20), variant(t, "vmdk-monolithicSparse"))
	if other := otherFiles(unconfinedInfo(t, plain, "vmdk"), plain); len(other) > 0 {
		t.Errorf("a plain VMDK names %v", other)
	}
}

// The third fence alone: qemu-img convert, asked directly to convert the
// hostile VMDK, cannot read the host file.
func TestConvertCannotReadAnotherFile(t *testing.T) {
	requireSandbox(t)
	secret := writeSecret(t)
	path := testimages.FlatExtentVMDK(t, t.TempDir(), secret)
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(filepath.Join(t.TempDir(), "out.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	cfg := &Config{QemuImg: "qemu-img"}
	err = cfg.qemuConvert(context.Background(), src, diskformat.VMDK, dst, diskformat.Raw, 1<<30)
	expectFailure(t, err, importresult.ReasonUnsafeImage, "was denied "+strconv.Quote(secret))
	if b, _ := os.ReadFile(dst.Name()); bytes.Contains(b, []byte(secretContent)) {
		t.Fatal("qemu-img copied the secret")
	}
}

// Without Landlock, auto mode refuses the formats that can name files and
// imports the others; required mode refuses everything.
func TestWithoutLandlock(t *testing.T) {
	testimages.RequireQemuImg(t)
	saved := landlockABI
	landlockABI = func() int { return 0 }
	t.Cleanup(func() { landlockABI = saved })
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 1<<20)
	vmdk := testimages.Make(t, dir, raw, variant(t, "vmdk-monolithicSparse"))

	_, err, _ := importLocal(t, vmdk, diskformat.VMDK, diskformat.Raw)
	expectFailure(t, err, importresult.ReasonSandboxUnavailable, "vmdk images, which can name other files, are refused")
	_, err, _ = importLocal(t, raw, diskformat.Raw, diskformat.Raw, func(c *Config) { c.Sandbox = SandboxRequired })
	expectFailure(t, err, importresult.ReasonSandboxUnavailable, "--sandbox=required")
	if _, err, _ := importLocal(t, raw, diskformat.Raw, diskformat.Qcow2); err != nil {
		t.Fatalf("auto mode refused a raw image: %v", err)
	}
}

func variant(t *testing.T, name string) testimages.Variant {
	for _, v := range testimages.Variants {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no variant %s", name)
	return testimages.Variant{}
}

// A compressed qcow2, decompressed by qemu's thread pool, converts under
// the default limits while other imports run: the memory limit does not
// count the address space that threads and malloc arenas reserve. (Under
// the 1 GiB address-space limit this replaced, two of three such imports
// aborted in qemu_thread_create.)
func TestCompressedQcow2UnderTheLimitsWithOthersRunning(t *testing.T) {
	requireSandbox(t)
	dir := t.TempDir()
	qcow2, raw := testimages.CloudLikeQcow2(t, dir, 256<<20, 64<<20)
	want := fileMD5(t, raw)
	const imports = 3
	errs := make(chan error, imports)
	stores := make(chan string, imports)
	for range imports {
		go func() {
			_, err, store := importLocal(t, qcow2, diskformat.Qcow2, diskformat.Raw)
			errs <- err
			stores <- store
		}()
	}
	for range imports {
		if err := <-errs; err != nil {
			t.Errorf("import under load: %v", err)
		}
		if got := fileMD5(t, filepath.Join(<-stores, "image")); got != want {
			t.Errorf("stored image md5 %s, want %s", got, want)
		}
	}
}

// qemu-img running out of memory or threads says nothing about the image:
// the failure is transient, so the Job retries it.
func TestOutOfMemoryIsTransient(t *testing.T) {
	requireSandbox(t)
	qcow2, _ := testimages.CloudLikeQcow2(t, t.TempDir(), 64<<20, 16<<20)
	_, err, _ := importLocal(t, qcow2, diskformat.Qcow2, diskformat.Raw, func(c *Config) { c.QemuMemoryLimit = 96 << 20 })
	var f *Failure
	if !errors.As(err, &f) || f.Permanent || f.Reason != importresult.ReasonInsufficientResources {
		t.Fatalf("got %#v; want a transient %s failure", err, importresult.ReasonInsufficientResources)
	}
	t.Logf("%s: %s", f.Reason, f.Message)
}

func fileMD5(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// qemu-img writing past the file-size bound (from threads that block
// SIGXFSZ, so its writes fail with EFBIG) is a permanent LimitExceeded.
func TestWritingPastTheBoundIsPermanent(t *testing.T) {
	requireSandbox(t)
	raw := filepath.Join(t.TempDir(), "dense.raw")
	if err := os.WriteFile(raw, bytes.Repeat([]byte("dense data, all of it written "), 4<<20/30), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{diskformat.Raw, diskformat.Qcow2} {
		t.Run(target, func(t *testing.T) {
			src, err := os.Open(raw)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			out, err := os.Create(filepath.Join(t.TempDir(), "out"))
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			cfg := &Config{QemuImg: "qemu-img"}
			err = cfg.qemuConvert(context.Background(), src, diskformat.Raw, out, target, 1<<20)
			expectFailure(t, err, importresult.ReasonLimitExceeded, "wrote more than the image's virtual size allows")
			if st, _ := out.Stat(); st.Size() > 1<<20 {
				t.Fatalf("the output grew to %d bytes", st.Size())
			}
		})
	}
}

// How qemu-img failures are classified: by what qemu-img itself says, never
// by what the image names.
func TestQemuFailuresAreClassifiedByTheirCause(t *testing.T) {
	requireSandbox(t)
	dir := t.TempDir()
	notQcow2 := filepath.Join(dir, "random.qcow2")
	if err := os.WriteFile(notQcow2, bytes.Repeat([]byte("not an image "), 1<<12), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(notQcow2)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg := &Config{QemuImg: "qemu-img"}
	expectFailure(t, cfg.qemuCheck(context.Background(), f, diskformat.Qcow2), importresult.ReasonUnsupported, "Image is not in qcow2 format")

	// An extent named like a resource failure is still an image naming
	// another file, not a reason to retry.
	vmdk := testimages.FlatExtentVMDK(t, dir, "/Cannot allocate memory")
	v, err := os.Open(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	_, err = cfg.qemuLook(context.Background(), v, diskformat.VMDK)
	var failure *Failure
	if !errors.As(err, &failure) || !failure.Permanent {
		t.Fatalf("got %v; want a permanent failure", err)
	}
	t.Logf("%s: %s", failure.Reason, failure.Message)
}

// A conversion whose output cannot fit the destination is refused before
// qemu-img writes a byte.
func TestRefusesAnOutputThatCannotFit(t *testing.T) {
	testimages.RequireQemuImg(t)
	if os.Geteuid() != 0 {
		t.Skip("mounting a small filesystem needs root")
	}
	dir := t.TempDir()
	qcow2, _ := testimages.CloudLikeQcow2(t, dir, 64<<20, 24<<20)
	_, err, _ := importLocal(t, qcow2, diskformat.Qcow2, diskformat.Raw, func(c *Config) {
		small := filepath.Join(t.TempDir(), "small")
		os.Mkdir(small, 0o755)
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", small).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a tmpfs here: %s", out)
		}
		t.Cleanup(func() { exec.Command("umount", small).Run() })
		c.Dest = small
	})
	expectFailure(t, err, importresult.ReasonInsufficientStorage, "the destination has")
}
