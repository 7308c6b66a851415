package glance

import (
	"context"
	"slices"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// An OVA import leaves its image active with the OVF descriptor's
// properties in spec.properties (the operator adds them, as Glance's OVF
// processing does) and the disk stored bare. GET /v2/images/{id} shows
// them as extra properties, after the owner's, with container_format bare;
// they are ordinary properties that a Glance PATCH changes and removes.
func TestImageShowsOVFProperties(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	s := newShim(t, PolicyAdmin)
	const token = "u:ova:member"
	r := s.do(t, "POST", "/v2/images", token,
		`{"name":"appliance","disk_format":"raw","container_format":"ova","hw_disk_bus":"scsi"}`, "Content-Type", "application/json")
	g.Expect(r.status).To(Equal(201), r.body)
	id := r.json["id"].(string)

	// What the operator writes when the import settles: the spec first, then the status.
	key := client.ObjectKey{Namespace: s.namespace, Name: id}
	img := &tasksv1.Image{}
	g.Expect(k8sClient.Get(ctx, key, img)).To(Succeed())
	g.Expect(k8sClient.Patch(ctx, img, client.RawPatch(types.MergePatchType, []byte(
		`{"spec":{"properties":{"ovf_name":"appliance-vm","ovf_product":"Appliance OS","ovf_vendor":"Example Inc.","ovf_version":"1.2"}}}`)))).To(Succeed())
	size := int64(4096)
	img.Status = tasksv1.ImageStatus{Status: tasksv1.ImageActive, Size: &size, DiskFormat: "raw", ContainerFormat: "bare",
		SHA256: strings.Repeat("3", 64), Unpacked: &tasksv1.UnpackedSource{OVAEntry: "disk1.vmdk", OVFName: "appliance-vm"}}
	g.Expect(k8sClient.Status().Update(ctx, img)).To(Succeed())

	g.Eventually(func(g Gomega) {
		r = s.do(t, "GET", "/v2/images/"+id, token, "")
		g.Expect(r.status).To(Equal(200), r.body)
		g.Expect(r.json).To(HaveKeyWithValue("status", "active"))
	}, "10s").Should(Succeed())
	g.Expect(r.json).To(And(
		HaveKeyWithValue("ovf_name", "appliance-vm"), HaveKeyWithValue("ovf_product", "Appliance OS"),
		HaveKeyWithValue("ovf_vendor", "Example Inc."), HaveKeyWithValue("ovf_version", "1.2"),
		HaveKeyWithValue("hw_disk_bus", "scsi"), HaveKeyWithValue("container_format", "bare"),
	))
	g.Expect(r.json).NotTo(HaveKey("sha256"), "Glance's image has no sha256: os_hash_value is its hash")
	var at []int
	for _, k := range []string{`"hw_disk_bus"`, `"ovf_name"`, `"ovf_product"`, `"ovf_vendor"`, `"ovf_version"`, `"name"`} {
		at = append(at, strings.Index(r.body, k))
	}
	g.Expect(at).NotTo(ContainElement(-1))
	g.Expect(slices.IsSorted(at)).To(BeTrue(), "the owner's property, then the OVF's by name, then the base attributes: %s", r.body)

	r = s.do(t, "PATCH", "/v2/images/"+id, token,
		`[{"op":"replace","path":"/ovf_name","value":"renamed"},{"op":"remove","path":"/ovf_vendor"}]`,
		"Content-Type", "application/openstack-images-v2.1-json-patch")
	g.Expect(r.status).To(Equal(200), r.body)
	g.Expect(r.json).To(HaveKeyWithValue("ovf_name", "renamed"))
	g.Expect(r.json).NotTo(HaveKey("ovf_vendor"))
	g.Expect(k8sClient.Get(ctx, key, img)).To(Succeed())
	g.Expect(img.Spec.Properties).To(Equal(map[string]string{
		"hw_disk_bus": "scsi", "ovf_name": "renamed", "ovf_product": "Appliance OS", "ovf_version": "1.2"}))
}
