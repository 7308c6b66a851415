package integration

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imageimport"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// openstacksdk (Debian's 0.101), unmodified: create_image, import_image
// with web-download, wait for active, get, download (md5 checked by the
// SDK), add_tag, delete.
func TestOpenstacksdkWebDownload(t *testing.T) {
	p := newProject(t, converting("raw"))
	url, raw := fixture(t, "sdk.qcow2", "qcow2", 16<<20)
	out := filepath.Join(t.TempDir(), "downloaded")
	cmd := exec.Command("/usr/bin/python3", "testdata/openstacksdk_import.py", p.shim.URL, "sdk:"+p.namespace+":admin", url, out)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	printed, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openstacksdk: %v\n%s", err, printed)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, raw) {
		t.Fatalf("downloaded %d bytes that differ from the source disk converted to raw (%d bytes)", len(got), len(raw))
	}
	id := strings.TrimPrefix(strings.Fields(string(printed))[0], "id=")
	expectDataRemoved(t, p, id)
}

// python-glanceclient, unmodified: image-create-via-import with
// web-download, image-show, image-list, image-download, image-tag-update,
// image-delete.
func TestGlanceclientWebDownload(t *testing.T) {
	p := newProject(t, converting("raw"))
	url, raw := fixture(t, "cli.qcow2", "qcow2", 8<<20)
	created := glanceCLI(t, p, "image-create-via-import", "--name", "via-import", "--disk-format", "qcow2",
		"--container-format", "bare", "--import-method", "web-download", "--uri", url)
	id := field(created, "id")
	if len(id) != 36 {
		t.Fatalf("image-create-via-import printed:\n%s", created)
	}
	waitForImage(t, p, id, tasksv1.ImageActive)
	show := glanceCLI(t, p, "image-show", id)
	if field(show, "status") != "active" || field(show, "name") != "via-import" || field(show, "disk_format") != "raw" {
		t.Fatalf("image-show printed:\n%s", show)
	}
	if list := glanceCLI(t, p, "image-list"); !strings.Contains(list, id) {
		t.Fatalf("image-list does not show %s:\n%s", id, list)
	}
	file := filepath.Join(t.TempDir(), "downloaded")
	glanceCLI(t, p, "image-download", "--file", file, id) // checks the md5 against the image's checksum
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("image-download wrote %d bytes (%v) that differ from the source disk", len(got), err)
	}
	glanceCLI(t, p, "image-tag-update", id, "golden")
	if tags := field(glanceCLI(t, p, "image-show", id), "tags"); tags != `["golden"]` {
		t.Fatalf("tags after image-tag-update: %q", tags)
	}
	glanceCLI(t, p, "image-delete", id)
	expectDataRemoved(t, p, id)
}

// gophercloud, unmodified, making the calls of Terraform's
// openstack_images_image_v2 with web_download: create with properties and
// tags, import, poll until active, read, update tags and properties,
// download, delete. The shim converts nothing here (Glance's default): the
// image keeps its qcow2 bytes.
func TestGophercloudTerraformWebDownload(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	p := newProject(t)
	url, _ := fixture(t, "tf.qcow2", "qcow2", 8<<20)
	source := served(t, "tf.qcow2")
	c := gopher(t, p)
	visibility, protected := images.ImageVisibilityPrivate, false
	img, err := images.Create(ctx, c, images.CreateOpts{
		Name: "terraform", ContainerFormat: "bare", DiskFormat: "qcow2", Tags: []string{"tf"},
		Visibility: &visibility, Protected: &protected, MinDisk: 1, MinRAM: 64,
		Properties: map[string]string{"os_distro": "cirros", "hw_disk_bus": "virtio"},
	}).Extract()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(img.Status).To(Equal(images.ImageStatusQueued))
	g.Expect(imageimport.Create(ctx, c, img.ID, imageimport.CreateOpts{Name: imageimport.WebDownloadMethod, URI: url}).ExtractErr()).To(Succeed())
	g.Eventually(func(g Gomega) {
		got, err := images.Get(ctx, c, img.ID).Extract()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(got.Status).To(Equal(images.ImageStatusActive))
	}, 90*time.Second, 200*time.Millisecond).Should(Succeed())
	got, err := images.Get(ctx, c, img.ID).Extract()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got.SizeBytes).To(BeEquivalentTo(len(source)))
	g.Expect(got.DiskFormat).To(Equal("qcow2"))
	sum := md5.Sum(source)
	g.Expect(got.Checksum).To(Equal(hex.EncodeToString(sum[:])))
	g.Expect(got.Properties).To(HaveKeyWithValue("os_distro", "cirros"))
	g.Expect(got.Tags).To(ConsistOf("tf"))

	updated, err := images.Update(ctx, c, img.ID, images.UpdateOpts{
		images.ReplaceImageTags{NewTags: []string{"tf", "golden"}},
		images.UpdateImageProperty{Op: images.ReplaceOp, Name: "os_distro", Value: "debian"},
		images.UpdateImageProperty{Op: images.AddOp, Name: "os_version", Value: "13"},
		images.UpdateImageProperty{Op: images.RemoveOp, Name: "hw_disk_bus"},
		images.ReplaceImageMinRam{NewMinRam: 128},
	}).Extract()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(updated.Tags).To(ConsistOf("tf", "golden"))
	g.Expect(updated.Properties).To(And(HaveKeyWithValue("os_distro", "debian"), HaveKeyWithValue("os_version", "13"), Not(HaveKey("hw_disk_bus"))))
	g.Expect(updated.MinRAMMegabytes).To(Equal(128))

	body, err := imagedata.Download(ctx, c, img.ID).Extract()
	g.Expect(err).NotTo(HaveOccurred())
	data, err := io.ReadAll(body)
	body.Close()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(bytes.Equal(data, source)).To(BeTrue(), "downloaded bytes differ from the source file")

	g.Expect(images.Delete(ctx, c, img.ID).ExtractErr()).To(Succeed())
	_, err = images.Get(ctx, c, img.ID).Extract()
	g.Expect(gophercloud.ResponseCodeIs(err, 404)).To(BeTrue(), "get after delete: %v", err)
	expectDataRemoved(t, p, img.ID)
}

// python3-openstackclient (Debian's 6.0), unmodified: openstack image
// create --import makes the queued record (this release has no
// web-download options, so glanceclient's image-import starts the import),
// then image show, image save, image set --tag and image delete.
func TestOpenstackclientImport(t *testing.T) {
	p := newProject(t, converting("raw"))
	url, raw := fixture(t, "osc.qcow2", "qcow2", 4<<20)
	home := t.TempDir()
	osc := func(args ...string) string {
		t.Helper()
		cmd := withoutStdin("openstack", append([]string{"--os-auth-type", "admin_token", "--os-endpoint", p.shim.URL + "/v2",
			"--os-token", "osc:" + p.namespace + ":admin", "--os-image-api-version", "2"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	id := osc("image", "create", "--import", "--disk-format", "qcow2", "--container-format", "bare", "osc-image", "-f", "value", "-c", "id")
	if len(id) != 36 {
		t.Fatalf("openstack image create printed %q", id)
	}
	if status := osc("image", "show", id, "-f", "value", "-c", "status"); status != "queued" {
		t.Fatalf("a new image is %q, want queued", status)
	}
	glanceCLI(t, p, "image-import", "--import-method", "web-download", "--uri", url, id)
	waitForImage(t, p, id, tasksv1.ImageActive)
	if status := osc("image", "show", id, "-f", "value", "-c", "status"); status != "active" {
		t.Fatalf("openstack image show: status %q, want active", status)
	}
	file := filepath.Join(t.TempDir(), "saved")
	osc("image", "save", "--file", file, id)
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("image save wrote %d bytes (%v) that differ from the source disk", len(got), err)
	}
	osc("image", "set", "--tag", "osc", id)
	if tags := osc("image", "show", id, "-f", "value", "-c", "tags"); !strings.Contains(tags, "osc") {
		t.Fatalf("tags after image set --tag: %q", tags)
	}
	osc("image", "delete", id)
	expectDataRemoved(t, p, id)
}

// gopher is a gophercloud image service client for the project's shim.
func gopher(t *testing.T, p *project) *gophercloud.ServiceClient {
	provider, err := openstack.NewClient(p.shim.URL)
	if err != nil {
		t.Fatal(err)
	}
	provider.TokenID = "tf:" + p.namespace + ":admin"
	return &gophercloud.ServiceClient{ProviderClient: provider, Endpoint: p.shim.URL + "/", ResourceBase: p.shim.URL + "/v2/"}
}

// waitForImage waits until the Image has the Glance status.
func waitForImage(t *testing.T, p *project, id string, status tasksv1.ImagePhase) *tasksv1.Image {
	t.Helper()
	img := &tasksv1.Image{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: p.namespace, Name: id}, img)).To(Succeed())
		g.Expect(img.Status.Status).To(Equal(status))
	}, 90*time.Second, 100*time.Millisecond).Should(Succeed())
	return img
}

// expectDataRemoved waits until the Image is gone and its file with it.
func expectDataRemoved(t *testing.T, p *project, id string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: p.namespace, Name: id}, &tasksv1.Image{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Image still exists: %v", err)
		_, err = os.Stat(filepath.Join(runner.ClaimDir(p.namespace, "image-store"), id))
		g.Expect(os.IsNotExist(err)).To(BeTrue(), "the image's file is still in the store: %v", err)
	}, 60*time.Second, 100*time.Millisecond).Should(Succeed())
}
