// Package testimages makes disk images for tests with the real qemu-img:
// well-formed images of every format and a hostile corpus.
package testimages

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireQemuImg skips nothing: the tests need qemu-img, and `make test`
// installs it (hack/install-deps.sh). A missing qemu-img fails the test.
func RequireQemuImg(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img is not installed: run 'make deps' (hack/install-deps.sh)")
	}
}

// QemuImg runs qemu-img and fails the test when it fails.
func QemuImg(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
	}
	return out
}

// Raw writes a raw disk of size bytes with recognisable data in places and
// holes elsewhere, and returns its path.
func Raw(t testing.TB, dir string, size int64) string {
	t.Helper()
	path := filepath.Join(dir, "source.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for off := int64(0); off+int64(len(chunk)) <= size; off += size / 8 {
		rand.Read(chunk)
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// Variant is one well-formed image kind qemu-img can make.
type Variant struct {
	Name    string   // test name
	Format  string   // Glance disk format
	Variant string   // what diskformat reports as the variant
	Args    []string // qemu-img convert arguments between -O and the paths
}

// Variants lists the well-formed images of the tests.
var Variants = []Variant{
	{"qcow2-v2", "qcow2", "v2", []string{"-O", "qcow2", "-o", "compat=0.10"}},
	{"qcow2-v3", "qcow2", "v3", []string{"-O", "qcow2", "-o", "compat=1.1"}},
	{"qcow2-compressed", "qcow2", "v3", []string{"-O", "qcow2", "-c"}},
	{"vmdk-monolithicSparse", "vmdk", "monolithicSparse", []string{"-O", "vmdk", "-o", "subformat=monolithicSparse"}},
	{"vmdk-streamOptimized", "vmdk", "streamOptimized", []string{"-O", "vmdk", "-o", "subformat=streamOptimized"}},
	{"vhd-dynamic", "vhd", "dynamic", []string{"-O", "vpc", "-o", "subformat=dynamic,force_size=on"}},
	{"vhd-fixed", "vhd", "fixed", []string{"-O", "vpc", "-o", "subformat=fixed,force_size=on"}},
	{"vhdx", "vhdx", "", []string{"-O", "vhdx"}},
	{"vdi-dynamic", "vdi", "dynamic", []string{"-O", "vdi"}},
	{"vdi-static", "vdi", "fixed", []string{"-O", "vdi", "-o", "static=on"}},
	{"raw", "raw", "", []string{"-O", "raw"}},
}

// Make converts the raw image at src into the variant and returns its path.
func Make(t testing.TB, dir, src string, v Variant) string {
	t.Helper()
	dst := filepath.Join(dir, v.Name+"."+v.Format)
	QemuImg(t, append(append([]string{"convert", "-f", "raw"}, v.Args...), src, dst)...)
	return dst
}

// ISO writes a minimal ISO 9660 image of size bytes (a multiple of 2048).
func ISO(t testing.TB, dir string, size int64) string {
	t.Helper()
	img := make([]byte, size)
	pvd := img[16*2048:]
	pvd[0] = 1
	copy(pvd[1:6], "CD001")
	pvd[6] = 1
	binary.LittleEndian.PutUint32(pvd[80:], uint32(size/2048))
	binary.BigEndian.PutUint32(pvd[84:], uint32(size/2048))
	binary.LittleEndian.PutUint16(pvd[128:], 2048)
	binary.BigEndian.PutUint16(pvd[130:], 2048)
	term := img[17*2048:]
	term[0] = 255
	copy(term[1:6], "CD001")
	term[6] = 1
	return write(t, filepath.Join(dir, "image.iso"), img)
}

// Hostile is one image an importer must refuse.
type Hostile struct {
	Name     string
	Declared string // the format the task declares
	Path     string
	Why      string // what the refusal must say
}

// HostileCorpus makes the images an importer must refuse.
func HostileCorpus(t testing.TB, dir string) []Hostile {
	t.Helper()
	src := Raw(t, dir, 4<<20)
	qcow2 := Make(t, dir, src, Variants[1])
	mk := func(name string) string { return filepath.Join(dir, name) }

	backing := mk("backing.qcow2")
	QemuImg(t, "create", "-f", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw", backing, "1M")
	dataFile := mk("datafile.qcow2")
	QemuImg(t, "create", "-f", "qcow2", "-o", "data_file="+mk("datafile.raw"), dataFile, "1M")
	huge := mk("huge.qcow2")
	QemuImg(t, "create", "-f", "qcow2", huge, "100T")
	flat := mk("flat.vmdk")
	QemuImg(t, "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", flat, "1M")
	split := mk("split.vmdk")
	QemuImg(t, "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", split, "1M")

	data, err := os.ReadFile(qcow2)
	if err != nil {
		t.Fatal(err)
	}
	iso, _ := os.ReadFile(ISO(t, dir, 1<<20))
	polyglot := bytes.Clone(iso)
	copy(polyglot, data[:4096]) // a qcow2 header in the ISO's system area

	return append([]Hostile{
		{"qcow2 with a backing file", "qcow2", backing, "backing file"},
		{"qcow2 with an external data file", "qcow2", dataFile, "external data file"},
		{"qcow2 with a huge virtual size", "qcow2", huge, "over the limit"},
		{"vmdk descriptor naming a flat extent", "vmdk", flat, "descriptor file names other files"},
		{"vmdk split into extents", "vmdk", split, "names other files"},
		{"vmdk sparse extent naming a second extent", "vmdk", twoExtents(t, dir, src), "single-extent"},
		{"raw declared as qcow2", "qcow2", src, "is raw, not qcow2"},
		{"qcow2 declared as raw", "raw", qcow2, "is qcow2, not raw"},
		{"truncated qcow2", "qcow2", write(t, mk("truncated.qcow2"), data[:len(data)/2]), "truncated"},
		{"truncated qcow2 header", "qcow2", write(t, mk("header.qcow2"), data[:40]), "truncated"},
		{"iso that is also a qcow2", "iso", write(t, mk("polyglot.iso"), polyglot), "valid as qcow2 and iso"},
		{"gzip declared as raw", "raw", write(t, mk("image.gz"), []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3}), "compressed images are not supported"},
	}, hostileParsing(t, dir, src)...)
}

// hostileParsing makes the images on which a careless parser and qemu-img
// disagree (issue 8): VMDK descriptors, formats qemu probes in bytes
// declared raw, and qcow2 tables that point twice at one cluster.
func hostileParsing(t testing.TB, dir, src string) []Hostile {
	t.Helper()
	mk := func(name string) string { return filepath.Join(dir, name) }
	secret := write(t, mk("host-secret"), bytes.Repeat([]byte("host secret "), 100))
	sparse := Make(t, dir, src, Variants[3])
	rewrite := func(name string, edit func(string) string) string {
		return RewriteVMDKDescriptor(t, sparse, dir, name, edit)
	}
	addExtent := func(name, line string) string {
		return rewrite(name, func(d string) string {
			i := strings.Index(d, "SPARSE \"")
			eol := i + strings.IndexByte(d[i:], '\n') + 1
			return d[:eol] + line + d[eol:]
		})
	}
	badFooter, err := os.ReadFile(FooterVMDK(t, dir, src, 1))
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(badFooter[len(badFooter)-1536+12:], 0) // the footer marker's type
	hostile := []Hostile{
		{"vmdk whose capacity 0 makes qemu read a flat extent on a host file", "vmdk", HostileVMDK(t, dir, secret), "capacity is 0"},
		{"vmdk descriptor file naming a host file", "vmdk", FlatExtentVMDK(t, dir, secret), "descriptor file names other files"},
		{"vmdk naming a parent image", "vmdk", ParentHintVMDK(t, dir, src, sparse, vmdkCID(t, sparse)), "parentFileNameHint"},
		{"vmdk with a second createType", "vmdk", rewrite("two-create-types.vmdk", func(d string) string {
			return strings.Replace(d, "createType=", "xcreateType=\"monolithicFlat\"\ncreateType=", 1)
		}), "createType entries"},
		{"vmdk with a signed extent size", "vmdk", addExtent("signed-extent.vmdk", "RW +8 FLAT \""+secret+"\" 0\n"), "extent lines"},
		{"vmdk with an indented RDONLY extent", "vmdk", addExtent("indented-extent.vmdk", " \tRDONLY 8 FLAT \""+secret+"\" 0\n"), "extent lines"},
		{"vmdk with a FLAT extent split over lines", "vmdk", addExtent("split-extent.vmdk", "RW\n8\nFLAT\n\""+secret+"\"\n0\n"), "extent lines"},
		{"streamOptimized vmdk with an invalid footer", "vmdk", write(t, mk("bad-footer.vmdk"), badFooter), "footer is invalid"},
		{"raw that qemu probes as a vmdk descriptor", "raw", DisguisedDescriptorVMDK(t, dir, secret), "descriptor file names other files"},
		{"raw that is a VMware 3 COWD extent", "raw", COWDVMDK(t, dir), "COWD"},
		{"qcow2 whose L2 entries all point at one data cluster", "qcow2", SharedClusterQcow2(t, dir, 64<<30), "data cluster is referenced twice"},
		{"qcow2 whose L1 entries share an L2 table", "qcow2", SharedL2Qcow2(t, dir), "L2 table is referenced twice"},
		{"vmdk whose grain tables all point at one grain", "vmdk", SharedGrainVMDK(t, dir), "grain is referenced twice"},
		{"vhd whose table points every entry at one block", "vhd", SharedBlockVHD(t, dir), "block is used twice"},
		{"vhdx whose table points every entry at one block", "vhdx", SharedBlockVHDX(t, dir), "payload block is used twice"},
	}
	images := QemuOnlyImages(t, dir)
	for _, format := range []string{"qed", "luks", "parallels", "bochs", "cloop"} {
		hostile = append(hostile, Hostile{"raw that is a " + format + " image", "raw", images[format], "would open as " + format})
	}
	return hostile
}

// vmdkCID is the CID in the descriptor of the VMDK at path.
func vmdkCID(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := bytes.Cut(data, []byte("\nCID="))
	if !ok {
		t.Fatalf("%s has no CID", path)
	}
	cid, _, _ := bytes.Cut(after, []byte("\n"))
	return string(cid)
}

// twoExtents makes a monolithicSparse vmdk whose embedded descriptor names
// a second extent, another file.
func twoExtents(t testing.TB, dir, src string) string {
	t.Helper()
	data, err := os.ReadFile(Make(t, dir, src, Variants[3]))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte("SPARSE \""))
	if i < 0 {
		t.Fatal("no SPARSE extent line in the vmdk descriptor")
	}
	eol := i + bytes.IndexByte(data[i:], '\n') + 1
	extra := []byte("RW 2048 FLAT \"/etc/passwd\" 0\n")
	data = append(data[:eol:eol], append(extra, data[eol+len(extra):]...)...)
	return write(t, filepath.Join(dir, "two-extents.vmdk"), data)
}

func write(t testing.TB, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
