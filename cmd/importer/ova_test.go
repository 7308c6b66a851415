package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// OVAs made by tar from an OVF descriptor and a streamOptimized VMDK made by
// qemu-img, imported with --container-format=ova.

func TestImportsOVA(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 8<<20)
	ova, disk := testimages.OVA(t, dir, raw, "appliance")
	testimages.Compress(t, "xz", ova, ova+".xz")
	rawMD5, _, _ := fileDigests(t, raw)
	srv := serveDir(t, dir)
	for _, tc := range []struct{ name, target string }{
		{"appliance.ova", "raw"}, {"appliance.ova", "qcow2"}, {"appliance.ova", "vmdk"}, {"appliance.ova.xz", "raw"},
	} {
		t.Run(tc.name+"-to-"+tc.target, func(t *testing.T) {
			o := importFrom(t, srv.URL+"/"+tc.name, "vmdk", tc.target, "--container-format=ova")
			if o.code != 0 {
				t.Fatalf("exit code %d: %s", o.code, o.result.Error)
			}
			if files := storeFiles(t, o.store); len(files) != 1 || files[0] != imageID {
				t.Fatalf("store holds %v, want just the image", files)
			}
			stored := filepath.Join(o.store, imageID)
			switch tc.target {
			case "raw":
				if m5, _, _ := fileDigests(t, stored); m5 != rawMD5 {
					t.Errorf("stored md5 %s, the raw image's %s", m5, rawMD5)
				}
			case "vmdk": // stored as it is: the disk entry's bytes
				if m5, _, _ := fileDigests(t, stored); m5 != must(fileDigests(t, disk)) {
					t.Errorf("the stored vmdk is not the OVA's disk")
				}
			}
			testimages.QemuImg(t, "compare", "-f", "raw", "-F", diskformat.QemuFormat(tc.target), raw, stored)
			st, _ := os.Stat(disk)
			ost, _ := os.Stat(filepath.Join(dir, tc.name))
			u := o.result.Unpacked
			if u == nil || u.OVAEntry != "disk1.vmdk" || u.OVFName != "appliance" || u.OVFProduct != "Example Appliance" ||
				u.OVFVendor != "Example Corp" || u.OVFVersion != "1.2.3" || u.DiskSize != st.Size() || o.result.BytesTransferred != ost.Size() {
				t.Errorf("result %+v says %+v was unpacked", o.result, u)
			}
			if strings.HasSuffix(tc.name, ".xz") && (u.Compression != "xz" || u.CompressedSize != ost.Size()) {
				t.Errorf("unpacked %+v, want the xz of %d bytes", u, ost.Size())
			}
		})
	}
	t.Run("without --container-format=ova the tar is not a vmdk", func(t *testing.T) {
		expectRefused(t, importFrom(t, srv.URL+"/appliance.ova", "vmdk", "raw"), importresult.ExitPermanent, "")
	})
}

func must(s string, _ ...string) string { return s }

func TestRefusesHostileOVAs(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 4<<20)
	testimages.OVA(t, dir, raw, "vm")
	// A disk that is a flat VMDK's descriptor, naming another file that the
	// OVA holds too: what a tool that extracts the OVA would follow.
	flat := filepath.Join(dir, "flat")
	os.Mkdir(flat, 0o755)
	testimages.QemuImg(t, "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", filepath.Join(flat, "disk1.vmdk"), "1M")
	os.WriteFile(filepath.Join(flat, "vm.ovf"), []byte(testimages.OVFDescriptor("vm", "disk1.vmdk")), 0o644)
	testimages.Tar(t, flat, filepath.Join(dir, "flat.ova"), "vm.ovf", "disk1.vmdk", "disk1-flat.vmdk")
	os.WriteFile(filepath.Join(dir, "two.ovf"), []byte(testimages.OVFDescriptor("vm", "disk1.vmdk", "disk2.vmdk")), 0o644)
	os.Link(filepath.Join(dir, "disk1.vmdk"), filepath.Join(dir, "disk2.vmdk"))
	testimages.Tar(t, dir, "two-disks.ova", "--hard-dereference", "two.ovf", "disk1.vmdk", "disk2.vmdk")
	os.WriteFile(filepath.Join(dir, "none.ovf"), []byte(testimages.OVFDescriptor("vm")), 0o644)
	testimages.Tar(t, dir, "no-disk.ova", "none.ovf", "disk1.vmdk")
	testimages.Tar(t, dir, "disk-first.ova", "disk1.vmdk", "vm.ovf")
	os.Symlink("/etc/passwd", filepath.Join(dir, "passwd"))
	testimages.Tar(t, dir, "symlink.ova", "vm.ovf", "--transform", "s,^passwd$,disk1.vmdk,", "passwd")
	testimages.Tar(t, dir, "hardlink.ova", "vm.ovf", "disk1.vmdk", "disk2.vmdk")
	testimages.Tar(t, dir, "traversal.ova", "-P", "vm.ovf", "../"+filepath.Base(dir)+"/vm.mf", "disk1.vmdk")
	testimages.Tar(t, dir, "absolute.ova", "-P", "vm.ovf", filepath.Join(dir, "vm.mf"), "disk1.vmdk")
	testimages.Tar(t, dir, "device.ova", "vm.ovf", "disk1.vmdk", "-C", "/", "dev/null")
	srv := serveDir(t, dir)
	for _, tc := range []struct{ ova, reason, why string }{
		{"flat.ova", importresult.ReasonUnsafeImage, "names other files"},
		{"two-disks.ova", importresult.ReasonFormatMismatch, "The OVF descriptor references 2 disks"},
		{"no-disk.ova", importresult.ReasonFormatMismatch, "The OVF descriptor references no disk"},
		{"disk-first.ova", importresult.ReasonFormatMismatch, "The first entry of an OVA must be its OVF descriptor"},
		{"symlink.ova", importresult.ReasonUnsafeImage, `"disk1.vmdk" is a link (to "/etc/passwd")`},
		{"hardlink.ova", importresult.ReasonUnsafeImage, `"disk2.vmdk" is a link (to "disk1.vmdk")`},
		{"traversal.ova", importresult.ReasonUnsafeImage, "climbs out of the archive"},
		{"absolute.ova", importresult.ReasonUnsafeImage, "has an absolute path"},
		{"device.ova", importresult.ReasonUnsafeImage, `"dev/null" is a device`},
	} {
		t.Run(tc.ova, func(t *testing.T) {
			o := importFrom(t, srv.URL+"/"+tc.ova, "vmdk", "raw", "--container-format=ova")
			expectRefused(t, o, importresult.ExitPermanent, tc.why)
			expectReason(t, o, tc.reason, "")
		})
	}
	t.Run("an unknown container format", func(t *testing.T) {
		o := importFrom(t, srv.URL+"/vm.ova", "vmdk", "raw", "--container-format=zip")
		expectRefused(t, o, importresult.ExitPermanent, `The container format "zip" is not supported`)
	})
}
