package glance

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imageimport"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/pagination"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// gophercloud's image/v2 images and imageimport, unmodified, making the
// calls Terraform's openstack_images_image_v2 makes: create with
// properties and tags, import with web-download, read, update tags and
// properties, list, delete. (Waiting for active needs the operator.)
func TestGophercloudImages(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	provider, err := openstack.NewClient(s.URL)
	g.Expect(err).NotTo(HaveOccurred())
	provider.TokenID = "gopher:gophers:member"
	c := &gophercloud.ServiceClient{ProviderClient: provider, Endpoint: s.URL + "/", ResourceBase: s.URL + "/v2/"}
	ctx := context.Background()

	img, err := images.Create(ctx, c, images.CreateOpts{
		Name: "tf-image", DiskFormat: "qcow2", ContainerFormat: "bare", Tags: []string{"t1", "t2"},
		Properties: map[string]string{"os_distro": "cirros", "hw_disk_bus": "virtio"}, MinDisk: 1,
	}).Extract()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(img.Status).To(Equal(images.ImageStatusQueued))
	g.Expect(img.Owner).To(Equal("gophers"))
	g.Expect(img.Tags).To(Equal([]string{"t1", "t2"}))
	g.Expect(img.Properties).To(HaveKeyWithValue("os_distro", "cirros"))
	g.Expect(img.CreatedAt.IsZero()).To(BeFalse())

	g.Expect(imageimport.Create(ctx, c, img.ID, imageimport.CreateOpts{
		Name: imageimport.WebDownloadMethod, URI: "http://127.0.0.1:19293/cirros.qcow2",
	}).ExtractErr()).To(Succeed())
	var tasks tasksv1.ImageImportTaskList
	g.Expect(k8sClient.List(ctx, &tasks, client.InNamespace(s.namespace), client.MatchingLabels{LabelImageID: img.ID})).To(Succeed())
	g.Expect(tasks.Items).To(HaveLen(1))
	spec := tasks.Items[0].Spec
	g.Expect(spec.Image).To(Equal(&tasksv1.ImageReference{Name: img.ID, OnFailure: tasksv1.ImageFailureQueued}))
	g.Expect(spec.Input.ImportFrom).To(Equal("http://127.0.0.1:19293/cirros.qcow2"))
	g.Expect(spec.Input.ImportFromFormat).To(Equal(tasksv1.DiskFormat("qcow2")))
	g.Expect(spec.Input.ImageProperties.Properties).To(HaveKeyWithValue("hw_disk_bus", "virtio"))
	g.Expect(spec.ExpiryPolicy).To(Equal(tasksv1.ExpiryPolicyDelete))

	got, err := images.Get(ctx, c, img.ID).Extract()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got.Name).To(Equal("tf-image"))

	updated, err := images.Update(ctx, c, img.ID, images.UpdateOpts{
		images.ReplaceImageName{NewName: "tf-renamed"},
		images.ReplaceImageTags{NewTags: []string{"t3"}},
		images.UpdateImageProperty{Op: images.AddOp, Name: "description", Value: "d"},
		images.UpdateImageProperty{Op: images.ReplaceOp, Name: "os_distro", Value: "ubuntu"},
		images.UpdateImageProperty{Op: images.RemoveOp, Name: "hw_disk_bus"},
		images.ReplaceImageMinRam{NewMinRam: 512},
	}).Extract()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(updated.Name).To(Equal("tf-renamed"))
	g.Expect(updated.Tags).To(Equal([]string{"t3"}))
	g.Expect(updated.Properties).To(HaveKeyWithValue("os_distro", "ubuntu"))
	g.Expect(updated.Properties).To(HaveKeyWithValue("description", "d"))
	g.Expect(updated.Properties).NotTo(HaveKey("hw_disk_bus"))
	g.Expect(updated.MinRAMMegabytes).To(Equal(512))

	g.Eventually(func() []string {
		var names []string
		images.List(c, images.ListOpts{Owner: "gophers", Limit: 1}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
			items, err := images.ExtractImages(p)
			for _, it := range items {
				names = append(names, it.Name)
			}
			return true, err
		})
		return names
	}).Should(Equal([]string{"tf-renamed"}))

	g.Expect(images.Delete(ctx, c, img.ID).ExtractErr()).To(Succeed())
	_, err = images.Get(ctx, c, img.ID).Extract()
	g.Expect(gophercloud.ResponseCodeIs(err, 404)).To(BeTrue(), "%v", err)
}

// python-glanceclient, unmodified: image-create (queued), image-show,
// image-list, image-tag-update, image-delete.
func TestPythonGlanceclientImages(t *testing.T) {
	if _, err := exec.LookPath("glance"); err != nil {
		t.Fatal("the glance CLI is not installed: run 'make deps' (hack/install-deps.sh)")
	}
	s := newShim(t, PolicyAdmin)
	home := t.TempDir()
	glance := func(args ...string) string {
		t.Helper()
		out, err := glanceCmd(home, s.URL, "cli:cliimages:member", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("glance %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := glance("image-create", "--name", "from-cli", "--disk-format", "qcow2", "--container-format", "bare", "--property", "os_distro=cirros")
	id := field(out, "id")
	if len(id) != 36 || field(out, "status") != "queued" || field(out, "owner") != "cliimages" || field(out, "os_distro") != "cirros" {
		t.Fatalf("image-create printed:\n%s", out)
	}
	if show := glance("image-show", id); field(show, "name") != "from-cli" {
		t.Fatalf("image-show printed:\n%s", show)
	}
	glance("image-tag-update", id, "mytag")
	if show := glance("image-show", id); field(show, "tags") != `["mytag"]` {
		t.Fatalf("image-show after image-tag-update printed:\n%s", show)
	}
	NewWithT(t).Eventually(func() string { return glance("image-list") }).Should(ContainSubstring(id))
	glance("image-delete", id)
	if out, err := glanceCmd(home, s.URL, "cli:cliimages:member", "image-show", id).CombinedOutput(); err == nil {
		t.Fatalf("image-show of a deleted image succeeded:\n%s", out)
	}
}

// openstacksdk (Debian's 0.101), unmodified: create_image(name,
// disk_format, container_format) without data leaves a queued image;
// get_image and delete_image.
func TestOpenstacksdkImages(t *testing.T) {
	s := newShim(t, PolicyAdmin)
	script := `
import sys, openstack
url = sys.argv[1]
conn = openstack.connection.Connection(auth_type='none', auth={'endpoint': url},
    image_endpoint_override=url, image_api_version='2')
img = conn.image.create_image(name='sdk-image', disk_format='qcow2', container_format='bare')
print('created', img.id, img.status, img.owner)
got = conn.image.get_image(img.id)
print('got', got.name, got.disk_format)
conn.image.add_tag(got, 'sdk-tag')
print('tags', ','.join(conn.image.get_image(img.id).tags))
conn.image.delete_image(img.id)
print('deleted', conn.image.find_image(img.id) is None)
`
	cmd := exec.Command("/usr/bin/python3", "-c", script, s.URL)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openstacksdk: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{" queued admin\n", "got sdk-image qcow2\n", "tags sdk-tag\n", "deleted True\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("openstacksdk printed %q, want a line with %q", text, want)
		}
	}
}

// A deleted image is gone at once, though the cache that lists images
// across namespaces still has it: the API server's word on the caller's
// own namespace is final. The shim here reads from a real cache stopped
// before the delete, the lag a loaded API server shows for longer
// (gophercloud's delete-then-get failed in CI on it).
func TestADeletedImageIsGoneBeforeTheCacheSeesIt(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	const token = "gopher:gophers:member"
	r := s.do(t, "POST", "/v2/images", token, `{"name":"stale","disk_format":"raw","container_format":"bare"}`, "Content-Type", jsonType)
	g.Expect(r.status).To(Equal(201), r.body)
	imageID := r.json["id"].(string)

	ctx, stop := context.WithCancel(context.Background())
	frozen, err := cache.New(testCfg, cache.Options{Scheme: testScheme})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(AddIndexes(ctx, frozen)).To(Succeed())
	go frozen.Start(ctx)
	g.Expect(frozen.WaitForCacheSync(ctx)).To(BeTrue())
	g.Eventually(func() error {
		return frozen.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: imageID}, &tasksv1.Image{})
	}).Should(Succeed())
	stop()
	s.srv.Cache = frozen

	g.Expect(s.do(t, "DELETE", "/v2/images/"+imageID, token, "").status).To(Equal(204))
	var stale tasksv1.ImageList
	g.Expect(frozen.List(context.Background(), &stale, client.MatchingFields{indexImageName: imageID})).To(Succeed())
	g.Expect(stale.Items).To(HaveLen(1), "the stopped cache still has the image")
	r = s.do(t, "GET", "/v2/images/"+imageID, token, "")
	g.Expect(r.status).To(Equal(404), r.body)
	g.Expect(s.do(t, "DELETE", "/v2/images/"+imageID, token, "").status).To(Equal(404))
}
