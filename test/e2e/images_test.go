//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// cli runs a Glance client against the shim on the local cluster, with
// standard input closed (both clients read image data from a standard
// input that is not a terminal).
func cli(t *testing.T, name string, args ...string) string {
	t.Helper()
	var auth []string
	switch name {
	case "glance":
		auth = []string{"--os-image-url", shimURL, "--os-auth-token", "local"}
	case "openstack":
		auth = []string{"--os-auth-type", "admin_token", "--os-endpoint", shimURL + "/v2", "--os-token", "local", "--os-image-api-version", "2"}
	}
	cmd := exec.Command("sh", append([]string{"-c", `exec "$0" "$@" <&-`, name}, append(auth, args...)...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// cloudLike writes a qcow2 of a sparse disk with data here and there to
// the sources and returns its name and the raw disk qemu-img makes of it.
func cloudLike(t *testing.T, name string) []byte {
	t.Helper()
	raw := testimages.Raw(t, t.TempDir(), 64<<20)
	testimages.QemuImg(t, "convert", "-f", "raw", "-O", "qcow2", "-c", raw, filepath.Join(srcDir, name))
	want := filepath.Join(t.TempDir(), "want.raw")
	testimages.QemuImg(t, "convert", "-f", "qcow2", "-O", "raw", filepath.Join(srcDir, name), want)
	b, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitForImage waits until the Image in the images namespace has status.
func waitForImage(t *testing.T, id string, status tasksv1.ImagePhase) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		img := &tasksv1.Image{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: id}, img)).To(Succeed())
		g.Expect(img.Status.Status).To(Equal(status), "conditions: %v", img.Status.Conditions)
	}, 3*time.Minute, time.Second).Should(Succeed())
}

// expectFreed waits until the Image is gone and its bytes with it.
func expectFreed(t *testing.T, id string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: id}, &tasksv1.Image{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Image is still there: %v", err)
		_, err = os.Stat(storePath(t, id))
		g.Expect(os.IsNotExist(err)).To(BeTrue(), "the image's file is still in the store: %v", err)
	}, 2*time.Minute, time.Second).Should(Succeed())
}

// glance image-create-via-import with web-download on the local cluster:
// the image ends active, converted to raw as the local shim is set up to
// do, the download (through an export pod) equals qemu-img's conversion,
// and image-delete frees the bytes in the store.
func TestImagesWebDownloadWithGlanceCLI(t *testing.T) {
	g := NewWithT(t)
	want := cloudLike(t, "webdownload.qcow2")
	created := cli(t, "glance", "image-create-via-import", "--name", "e2e-web-download", "--disk-format", "qcow2",
		"--container-format", "bare", "--import-method", "web-download", "--uri", srcURL+"/webdownload.qcow2")
	id := field(created, "id")
	g.Expect(id).To(HaveLen(36), created)
	t.Cleanup(func() { k8s.Delete(context.Background(), &tasksv1.Image{ObjectMeta: objectMeta(id)}) })
	waitForImage(t, id, tasksv1.ImageActive)
	show := cli(t, "glance", "image-show", id)
	g.Expect(field(show, "status")).To(Equal("active"), show)
	g.Expect(field(show, "disk_format")).To(Equal("raw"), show)

	file := filepath.Join(t.TempDir(), "downloaded")
	start := time.Now()
	cli(t, "glance", "image-download", "--file", file, id) // checks the md5
	t.Logf("image-download of %d MiB through an export pod: %s", len(want)>>20, time.Since(start).Round(100*time.Millisecond))
	got, err := os.ReadFile(file)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(bytes.Equal(got, want)).To(BeTrue(), "the download differs from qemu-img's conversion of the source")

	cli(t, "glance", "image-delete", id)
	expectFreed(t, id)
}

// openstackclient: `openstack image create --import` makes the record (the
// Debian release has no web-download options: glance image-import starts
// it), then `openstack image show` and `openstack image save`.
func TestImagesWithOpenstackClient(t *testing.T) {
	g := NewWithT(t)
	want := cloudLike(t, "osc.qcow2")
	id := cli(t, "openstack", "image", "create", "--import", "--disk-format", "qcow2", "--container-format", "bare",
		"e2e-openstack", "-f", "value", "-c", "id")
	g.Expect(id).To(HaveLen(36))
	t.Cleanup(func() { k8s.Delete(context.Background(), &tasksv1.Image{ObjectMeta: objectMeta(id)}) })
	g.Expect(cli(t, "openstack", "image", "show", id, "-f", "value", "-c", "status")).To(Equal("queued"))
	cli(t, "glance", "image-import", "--import-method", "web-download", "--uri", srcURL+"/osc.qcow2", id)
	waitForImage(t, id, tasksv1.ImageActive)
	g.Expect(cli(t, "openstack", "image", "show", id, "-f", "value", "-c", "status")).To(Equal("active"))
	file := filepath.Join(t.TempDir(), "saved")
	cli(t, "openstack", "image", "save", "--file", file, id)
	got, err := os.ReadFile(file)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(bytes.Equal(got, want)).To(BeTrue(), "image save differs from qemu-img's conversion of the source")
	cli(t, "openstack", "image", "delete", id)
	expectFreed(t, id)
}

func objectMeta(id string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: id}
}
