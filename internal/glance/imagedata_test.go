package glance

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// GET /v2/images/{id}/file streams an active image's bytes from the store
// directory (written here by qemu-img), with Glance's headers and ranges;
// an image without data answers 204; no data backend answers 503.
func TestDownloadImageData(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	const token = "u:dl:member"
	r := s.do(t, "POST", "/v2/images", token, `{"name":"dl","disk_format":"qcow2","container_format":"bare"}`, "Content-Type", "application/json")
	g.Expect(r.status).To(Equal(201), r.body)
	id := r.json["id"].(string)

	g.Expect(s.do(t, "GET", "/v2/images/"+id+"/file", token, "").status).To(Equal(204), "a queued image has no data")

	store := t.TempDir()
	if out, err := exec.Command("qemu-img", "create", "-f", "qcow2", filepath.Join(store, id), "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(store, id))
	g.Expect(err).NotTo(HaveOccurred())
	sum := md5.Sum(data)
	img := &tasksv1.Image{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: s.namespace, Name: id}, img)).To(Succeed())
	size := int64(len(data))
	img.Status = tasksv1.ImageStatus{Status: tasksv1.ImageActive, Size: &size, Checksum: hex.EncodeToString(sum[:])}
	g.Expect(k8sClient.Status().Update(context.Background(), img)).To(Succeed())

	r = s.do(t, "GET", "/v2/images/"+id+"/file", token, "")
	g.Expect(r.status).To(Equal(503), "no data backend: %s", r.body)

	s.srv.ImageData = StoreDir(store)
	r = s.do(t, "GET", "/v2/images/"+id+"/file", token, "")
	g.Expect(r.status).To(Equal(200))
	g.Expect(r.header.Get("Content-Type")).To(Equal("application/octet-stream"))
	g.Expect(r.header.Get("Content-MD5")).To(Equal(hex.EncodeToString(sum[:])))
	g.Expect([]byte(r.body)).To(Equal(data))

	r = s.do(t, "GET", "/v2/images/"+id+"/file", token, "", "Range", "bytes=0-3")
	g.Expect(r.status).To(Equal(206))
	g.Expect(r.body).To(Equal("QFI\xfb"), "qcow2's magic")
	g.Expect(r.header.Get("Content-Range")).To(Equal("bytes 0-3/" + itoa(size)))

	r = s.do(t, "GET", "/v2/images/"+id+"/file", token, "", "Range", "bytes="+itoa(size)+"-")
	g.Expect(r.status).To(Equal(416))

	os.Remove(filepath.Join(store, id))
	g.Expect(s.do(t, "GET", "/v2/images/"+id+"/file", token, "").status).To(Equal(204), "the store has no data for it")
}

// --web-download-failure=killed: the task the import creates kills its
// image on failure instead of returning it to queued.
func TestWebDownloadFailFast(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	s.srv.WebDownloadFailure = tasksv1.ImageFailureKilled
	const token = "u:ff:member"
	r := s.do(t, "POST", "/v2/images", token, `{"name":"ff","disk_format":"raw","container_format":"bare"}`, "Content-Type", "application/json")
	g.Expect(r.status).To(Equal(201), r.body)
	id := r.json["id"].(string)
	r = s.do(t, "POST", "/v2/images/"+id+"/import", token, `{"method":{"name":"web-download","uri":"http://127.0.0.1:19293/x.qcow2"}}`, "Content-Type", "application/json")
	g.Expect(r.status).To(Equal(202), r.body)
	var tasks tasksv1.ImageImportTaskList
	g.Expect(k8sClient.List(context.Background(), &tasks, client.InNamespace(s.namespace), client.MatchingLabels{LabelImageID: id})).To(Succeed())
	g.Expect(tasks.Items).To(HaveLen(1))
	g.Expect(tasks.Items[0].Spec.Image.OnFailure).To(Equal(tasksv1.ImageFailureKilled))
	// A second import while the first runs is Glance's 409.
	g.Eventually(func() int {
		return s.do(t, "POST", "/v2/images/"+id+"/import", token, `{"method":{"name":"web-download","uri":"http://127.0.0.1:19293/x.qcow2"}}`, "Content-Type", "application/json").status
	}).Should(Equal(409))
}
