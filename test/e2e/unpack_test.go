//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// Compressed and packaged sources through the whole chain: a task, its Job,
// the importer pod decompressing or unpacking while it downloads.

// TestImportsAnXZCompressedQcow2 imports a .qcow2.xz, as Fedora and
// openSUSE publish them, and checks the stored raw image byte for byte.
func TestImportsAnXZCompressedQcow2(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 64<<20)
	qcow2 := testimages.Make(t, dir, raw, testimages.Variants[1])
	testimages.Compress(t, "xz", qcow2, filepath.Join(srcDir, "cloud.qcow2.xz"))

	task := newTask("xz-qcow2", srcURL+"/cloud.qcow2.xz", "qcow2", "raw")
	create(t, task)
	got := waitFor(t, task, tasksv1.TaskSuccess, 3*time.Minute)

	stored := storePath(t, got.Status.Result.ImageID)
	testimages.QemuImg(t, "compare", "-f", "raw", "-F", "raw", raw, stored)
	m5, s512 := sums(t, stored)
	want, _ := sums(t, raw)
	g.Expect(m5).To(Equal(want), "the stored image is the raw image the qcow2 was made from")
	g.Expect(got.Status.Image.Checksum).To(Equal(m5), "checksum describes the stored image")
	g.Expect(got.Status.Image.OSHashValue).To(Equal(s512))
	g.Expect(got.Status.Image.SourceFormat).To(Equal("qcow2"))
	g.Expect(got.Status.Image.VirtualSize).To(Equal(int64(64 << 20)))
}

// TestImportsAnOVA imports a VMware-style OVA (an OVF descriptor and a
// streamOptimized VMDK in a tar) with containerFormat ova.
func TestImportsAnOVA(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 64<<20)
	ova, _ := testimages.OVA(t, dir, raw, "appliance")
	data, err := os.ReadFile(ova)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(os.WriteFile(filepath.Join(srcDir, "appliance.ova"), data, 0o644)).To(Succeed())

	task := newTask("ova", srcURL+"/appliance.ova", "vmdk", "qcow2")
	task.Spec.Input.ImageProperties.ContainerFormat = "ova"
	create(t, task)
	got := waitFor(t, task, tasksv1.TaskSuccess, 3*time.Minute)

	stored := storePath(t, got.Status.Result.ImageID)
	testimages.QemuImg(t, "compare", "-f", "raw", "-F", "qcow2", raw, stored)
	m5, _ := sums(t, stored)
	g.Expect(got.Status.Image.Checksum).To(Equal(m5))
	g.Expect(got.Status.Image.SourceFormat).To(Equal("vmdk"))
	g.Expect(got.Status.Image.DiskFormat).To(Equal("qcow2"))
	g.Expect(got.Status.Image.VirtualSize).To(Equal(int64(64 << 20)))
	g.Expect(got.Status.Image.ContainerFormat).To(Equal("bare"), "the disk, not the OVA, is stored")
	g.Expect(got.Status.Image.Unpacked).NotTo(BeNil())
	g.Expect(got.Status.Image.Unpacked.OVAEntry).NotTo(BeEmpty())
	g.Expect(got.Status.Image.Unpacked.OVFName).To(Equal("appliance"))
}

// TestRefusesAnOVAWithTwoDisks fails the task at once, with the reason.
func TestRefusesAnOVAWithTwoDisks(t *testing.T) {
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 4<<20)
	testimages.OVA(t, dir, raw, "vm")
	if err := os.WriteFile(filepath.Join(dir, "two.ovf"), []byte(testimages.OVFDescriptor("vm", "disk1.vmdk", "disk2.vmdk")), 0o644); err != nil {
		t.Fatal(err)
	}
	testimages.Tar(t, dir, filepath.Join(srcDir, "two-disks.ova"), "two.ovf", "disk1.vmdk")

	task := newTask("ova-two-disks", srcURL+"/two-disks.ova", "vmdk", "raw")
	task.Spec.Input.ImageProperties.ContainerFormat = "ova"
	create(t, task)
	got := waitFor(t, task, tasksv1.TaskFailure, 3*time.Minute)
	NewWithT(t).Expect(got.Status.Message).To(ContainSubstring("references 2 disks"))
	NewWithT(t).Expect(got.Status.Attempts).To(Equal(int32(1)), "a permanent failure is not retried")
}
