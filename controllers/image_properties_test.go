package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// ovaTask is a task that imports an OVA into an image of its own with the
// given properties.
func ovaTask(ns, name string, props map[string]string) *tasksv1.ImageImportTask {
	task := sampleTask(ns, name)
	task.Spec.Input.ImportFrom = "https://images.test/appliance.ova"
	task.Spec.Input.ImportFromFormat = "vmdk"
	task.Spec.Input.ImageProperties.ContainerFormat = "ova"
	task.Spec.Input.ImageProperties.Properties = props
	return task
}

// TestOVAImportAddsOVFProperties: an OVA import that makes its image active
// adds what the OVF descriptor says as image properties, keeps the one
// its owner set, records the stored image's sha256, and adds nothing
// again once the image is active.
func TestOVAImportAddsOVFProperties(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	task := createTask(t, ovaTask(ns, "appliance", map[string]string{"os_distro": "debian", "ovf_vendor": "mine"}))
	id := imageID(task)
	waitForImage(t, ns, id, tasksv1.ImageImporting)
	sha := strings.Repeat("3", 64)
	succeed(t, task, importresult.Result{
		ImageID: id, Size: 4096, SourceFormat: "vmdk", DiskFormat: "raw", SHA256: sha,
		Unpacked: &importresult.Unpacked{OVAEntry: "disk1.vmdk", OVFName: "appliance-vm",
			OVFProduct: "Appliance OS", OVFVendor: "Example Inc.", OVFVersion: "1.2"},
	})
	done := waitForStatus(t, task, tasksv1.TaskSuccess)
	g.Expect(done.Status.Image.SHA256).To(Equal(sha))

	img := waitForImage(t, ns, id, tasksv1.ImageActive)
	g.Expect(img.Spec.Properties).To(Equal(map[string]string{
		"os_distro": "debian", "ovf_vendor": "mine", // the owner's, kept
		"ovf_name": "appliance-vm", "ovf_product": "Appliance OS", "ovf_version": "1.2",
	}))
	g.Expect(img.Status.SHA256).To(Equal(sha))
	g.Expect(img.Status.ObservedGeneration).To(Equal(img.Generation), "the status describes the spec with the properties")
	g.Eventually(func() []taskEvent { return eventsRegarding(t, ns, img.UID) }, wait).Should(ContainElement(And(
		HaveField("Type", corev1.EventTypeNormal), HaveField("Reason", "PropertiesAdded"),
		HaveField("Note", "Image properties from the OVF descriptor of task appliance: added ovf_name, ovf_product, ovf_version;"+
			" kept the image's own ovf_vendor"))))

	// The properties are the owner's now: one removed stays removed.
	g.Expect(k8sClient.Patch(ctx, img, client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"touched":"yes"}},"spec":{"properties":{"ovf_name":null}}}`)))).To(Succeed())
	g.Consistently(func(g Gomega) {
		got := &tasksv1.Image{}
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(img), got)).To(Succeed())
		g.Expect(got.Spec.Properties).NotTo(HaveKey("ovf_name"))
	}, 2*time.Second).Should(Succeed())
}

// TestOVFPropertiesWithinTheLimit: an image with room for one more
// property gets the first of the OVF's and becomes active all the same; a
// Warning names what was left out.
func TestOVFPropertiesWithinTheLimit(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	props := map[string]string{}
	for i := range maxImageProperties - 1 {
		props[fmt.Sprintf("p%03d", i)] = "v"
	}
	task := createTask(t, ovaTask(ns, "full", props))
	id := imageID(task)
	waitForImage(t, ns, id, tasksv1.ImageImporting)
	succeed(t, task, importresult.Result{ImageID: id, Size: 4096, DiskFormat: "raw",
		Unpacked: &importresult.Unpacked{OVAEntry: "disk1.vmdk", OVFName: "appliance-vm", OVFProduct: "Appliance OS"}})

	img := waitForImage(t, ns, id, tasksv1.ImageActive)
	g.Expect(img.Spec.Properties).To(HaveLen(maxImageProperties))
	g.Expect(img.Spec.Properties).To(HaveKeyWithValue("ovf_name", "appliance-vm"))
	g.Expect(img.Spec.Properties).NotTo(HaveKey("ovf_product"))
	g.Eventually(func() []taskEvent { return eventsRegarding(t, ns, img.UID) }, wait).Should(ContainElement(And(
		HaveField("Type", corev1.EventTypeWarning), HaveField("Reason", "PropertiesLimited"),
		HaveField("Note", "Image properties from the OVF descriptor of task full do not all fit: "+
			"ovf_product left out (the image has 128 properties, the most it may have)"))))
}

// TestAddProperties: the limits, and a second pass that adds nothing.
func TestAddProperties(t *testing.T) {
	g := NewWithT(t)
	long := strings.Repeat("é", maxImagePropertyLength+10)
	spec := &tasksv1.ImageSpec{Properties: map[string]string{"ovf_name": "mine"}}
	props := ovfProperties(&tasksv1.UnpackedSource{OVFName: "vm", OVFProduct: long, OVFVersion: "1"})
	g.Expect(props).To(Equal([]imageProperty{{"ovf_name", "vm"}, {"ovf_product", long}, {"ovf_version", "1"}}),
		"only what the OVF says, in a fixed order")

	did := addProperties(spec, props)
	g.Expect(did).To(Equal(propertyAddition{
		added: []string{"ovf_product", "ovf_version"}, kept: []string{"ovf_name"},
		limited: []string{"ovf_product shortened to 65535 characters"},
	}))
	g.Expect(spec.Properties["ovf_name"]).To(Equal("mine"))
	g.Expect(utf8.RuneCountInString(spec.Properties["ovf_product"])).To(Equal(maxImagePropertyLength))
	g.Expect(spec.Properties["ovf_product"]).To(HaveSuffix("é…"))

	again := addProperties(spec, ovfProperties(&tasksv1.UnpackedSource{OVFVersion: "1"}))
	g.Expect(again).To(Equal(propertyAddition{}), "what an earlier pass added is neither added nor kept")
	g.Expect(ovfProperties(nil)).To(BeEmpty())
}
