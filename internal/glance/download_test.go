package glance

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// A download outlives the server's write timeout as long as the client
// keeps reading: a slow reader gets every byte of an image that takes
// several write timeouts to send.
func TestSlowDownloadOutlivesTheWriteTimeout(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	const token = "u:slow:member"
	r := s.do(t, "POST", "/v2/images", token, `{"name":"slow","disk_format":"raw","container_format":"bare"}`, "Content-Type", "application/json")
	g.Expect(r.status).To(Equal(201), r.body)
	id := r.json["id"].(string)
	store := t.TempDir()
	data := bytes.Repeat([]byte("0123456789abcdef"), 24<<20/16) // 24 MiB: more than the socket buffers
	g.Expect(os.WriteFile(filepath.Join(store, id), data, 0o644)).To(Succeed())
	img := &tasksv1.Image{}
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKey{Namespace: s.namespace, Name: id}, img)).To(Succeed())
	size := int64(len(data))
	img.Status = tasksv1.ImageStatus{Status: tasksv1.ImageActive, Size: &size}
	g.Expect(k8sClient.Status().Update(context.Background(), img)).To(Succeed())
	s.srv.ImageData = StoreDir(store)

	srv := httptest.NewUnstartedServer(fakeKeystone(s.srv))
	srv.Config.WriteTimeout = 300 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/images/"+id+"/file", nil)
	req.Header.Set("X-Auth-Token", token)
	var resp *http.Response
	g.Eventually(func() (int, error) { // the cache catches up with the status
		var err error
		if resp, err = http.DefaultClient.Do(req); err != nil {
			return 0, err
		}
		if resp.StatusCode != 200 {
			resp.Body.Close()
		}
		return resp.StatusCode, nil
	}).Should(Equal(200))
	defer resp.Body.Close()
	start := time.Now()
	var got []byte
	buf := make([]byte, 1<<20)
	for {
		n, err := resp.Body.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		g.Expect(err).NotTo(HaveOccurred(), "after %d bytes", len(got))
		time.Sleep(50 * time.Millisecond)
	}
	g.Expect(time.Since(start)).To(BeNumerically(">", 3*srv.Config.WriteTimeout), "the read was not slow enough to test anything")
	g.Expect(bytes.Equal(got, data)).To(BeTrue(), "got %d of %d bytes", len(got), len(data))
}
