package glance

import (
	"context"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/tasks"
	"github.com/gophercloud/gophercloud/v2/pagination"
	. "github.com/onsi/gomega"
)

// gophercloud's image/v2/tasks, unmodified, against the shim.
func TestGophercloud(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	provider, err := openstack.NewClient(s.URL)
	g.Expect(err).NotTo(HaveOccurred())
	provider.TokenID = "gopher:gophers:admin" // the stand-in keystone turns it into identity headers
	client := &gophercloud.ServiceClient{ProviderClient: provider, Endpoint: s.URL + "/", ResourceBase: s.URL + "/v2/"}
	ctx := context.Background()

	var created []string
	for range 3 {
		task, err := tasks.Create(ctx, client, tasks.CreateOpts{Type: "import", Input: map[string]any{
			"import_from":        "http://127.0.0.1:19293/cirros.qcow2",
			"import_from_format": "qcow2",
			"image_properties":   map[string]any{"disk_format": "raw", "container_format": "bare"},
		}}).Extract()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(task.Status).To(Equal("pending"))
		g.Expect(task.Owner).To(Equal("gophers"))
		g.Expect(task.CreatedAt.IsZero()).To(BeFalse(), "timestamps parse as RFC 3339")
		created = append(created, task.ID)
	}
	g.Eventually(func() error { _, err := tasks.Get(ctx, client, created[2]).Extract(); return err }).Should(Succeed())
	got, err := tasks.Get(ctx, client, created[0]).Extract()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got.Input).To(HaveKeyWithValue("import_from_format", "qcow2"))
	g.Expect(got.Message).To(BeEmpty())

	var listed []string
	pages := 0
	err = tasks.List(client, tasks.ListOpts{Limit: 1, SortKey: "created_at", SortDir: "asc"}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		pages++
		items, err := tasks.ExtractTasks(page)
		for _, it := range items {
			if it.Owner == "gophers" {
				listed = append(listed, it.ID)
			}
		}
		return true, err
	})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(listed).To(ContainElements(created), "paging with limit=1 reached every task")
	g.Expect(pages).To(BeNumerically(">=", 3))

	_, err = tasks.Get(ctx, client, "00000000-0000-0000-0000-000000000000").Extract()
	g.Expect(gophercloud.ResponseCodeIs(err, 404)).To(BeTrue(), "%v", err)
}
