package diskformat_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// qemuInfo is what `qemu-img info --output=json` says of path, letting it
// guess the format when format is "".
type qemuInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	BackingFilename string `json:"backing-filename"`
}

func qemuImgInfo(t *testing.T, path, format string) qemuInfo {
	t.Helper()
	args := []string{"info", "--output=json"}
	if format != "" {
		args = append(args, "-f", format)
	}
	var info qemuInfo
	if err := json.Unmarshal(testimages.QemuImg(t, append(args, path)...), &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// refused checks that Inspect refuses path with a reason that says why.
func refused(t *testing.T, path, why string) *diskformat.Error {
	t.Helper()
	info, err := inspectFile(t, path)
	var e *diskformat.Error
	if !errors.As(err, &e) {
		t.Fatalf("Inspect = %+v, %v; want a refusal saying %q", info, err, why)
	}
	if !strings.Contains(err.Error(), why) {
		t.Errorf("Inspect error %q does not say %q", err, why)
	}
	return e
}

func secretFile(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	secret := bytes.Repeat([]byte("host secret "), 200)
	path := filepath.Join(dir, "secret")
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, secret
}

// TestVMDKsThatReadHostFiles: the real qemu-img copies a host file into
// its output from each of these; Inspect refuses every one. On the old
// inspector the first was accepted as a monolithicSparse of size 0.
func TestVMDKsThatReadHostFiles(t *testing.T) {
	testimages.RequireQemuImg(t)
	for _, tc := range []struct {
		name  string
		build func(testing.TB, string, string) string
		why   string
	}{
		{"capacity 0, xcreateType, +8", testimages.HostileVMDK, "capacity is 0"},
		{"descriptor file", testimages.FlatExtentVMDK, "descriptor file names other files"},
		{"disguised descriptor file", testimages.DisguisedDescriptorVMDK, "descriptor file names other files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			secretPath, secret := secretFile(t, dir)
			img := tc.build(t, dir, secretPath)
			out := filepath.Join(dir, "out.raw")
			testimages.QemuImg(t, "convert", "-f", "vmdk", "-O", "raw", img, out)
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, secret) {
				t.Fatal("qemu-img did not copy the secret: the fixture is not genuine")
			}
			if e := refused(t, img, tc.why); !errors.Is(e, diskformat.ErrUnsafe) || e.Format != diskformat.VMDK {
				t.Errorf("refusal %v is not an unsafe vmdk", e)
			}
		})
	}
}

// TestVMDKParentHint: qemu opens the file a sparse VMDK names as
// parentFileNameHint, whatever its header says, and with a matching CID
// reads that image's data. The old inspector accepted it.
func TestVMDKParentHint(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	victimData := testimages.Raw(t, dir, 1<<20)
	victim := filepath.Join(dir, "victim.vmdk")
	testimages.QemuImg(t, "convert", "-f", "raw", "-O", "vmdk", victimData, victim)
	empty := filepath.Join(dir, "empty.raw")
	if err := os.WriteFile(empty, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(victim)
	_, after, _ := bytes.Cut(data, []byte("\nCID="))
	cid, _, _ := bytes.Cut(after, []byte("\n"))
	img := testimages.ParentHintVMDK(t, dir, empty, victim, string(cid))
	if got := qemuImgInfo(t, img, "vmdk").BackingFilename; got != victim {
		t.Fatalf("qemu-img sees backing file %q, want %q: the fixture is not genuine", got, victim)
	}
	out := filepath.Join(dir, "out.raw")
	testimages.QemuImg(t, "convert", "-f", "vmdk", "-O", "raw", img, out)
	testimages.QemuImg(t, "compare", "-f", "raw", "-F", "raw", out, victimData) // qemu read the victim
	refused(t, img, "parentFileNameHint")
}

// TestVMDKFooterCapacity: with the grain directory at the end, qemu takes
// the capacity from the footer; Inspect reports the same. The old inspector
// reported the header's.
func TestVMDKFooterCapacity(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	const size = 4 << 20
	src := testimages.Raw(t, dir, size)
	for _, headerSectors := range []uint64{1, size / 512, 1 << 40} {
		img := testimages.FooterVMDK(t, dir, src, headerSectors)
		if q := qemuImgInfo(t, img, "vmdk"); q.VirtualSize != size {
			t.Fatalf("qemu-img sees %d bytes, want %d: the fixture is not genuine", q.VirtualSize, size)
		}
		testimages.QemuImg(t, "compare", "-f", "vmdk", "-F", "raw", img, src)
		info, err := inspectFile(t, img)
		if err != nil || info.VirtualSize != size || info.Variant != "streamOptimized" {
			t.Errorf("header of %d sectors: Inspect = %+v, %v; want a streamOptimized of %d bytes", headerSectors, info, err, size)
		}
	}
}

// TestDescriptorRules: each rule of the embedded descriptor on its own,
// on a monolithicSparse made by qemu-img.
func TestDescriptorRules(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	sparse := testimages.Make(t, dir, testimages.Raw(t, dir, 1<<20), testimages.Variants[3])
	addLine := func(line string) func(string) string {
		return func(d string) string {
			i := strings.Index(d, "SPARSE \"")
			eol := i + strings.IndexByte(d[i:], '\n') + 1
			return d[:eol] + line + d[eol:]
		}
	}
	for _, tc := range []struct {
		name string
		edit func(string) string
		why  string // "" when accepted
	}{
		{"as made", func(d string) string { return d }, ""},
		{"xcreateType", func(d string) string {
			return strings.Replace(d, "createType=", "xcreateType=\"monolithicFlat\"\ncreateType=", 1)
		}, "2 createType entries"},
		{"createType in a comment", addLine("# createType=\"monolithicFlat\"\n"), "2 createType entries"},
		{"no createType", func(d string) string { return strings.Replace(d, "createType=", "kind=", 1) }, "0 createType entries"},
		{"createType with spaces", func(d string) string { return strings.Replace(d, "createType=", "createType = ", 1) }, `createType="..."`},
		{"monolithicFlat", func(d string) string { return strings.Replace(d, "monolithicSparse", "monolithicFlat", 1) }, "createType \"monolithicFlat\""},
		{"+8 extent", addLine("RW +8 FLAT \"/etc/hostname\" 0\n"), "2 extent lines"},
		{"indented extent", addLine("  RW 8 FLAT \"/etc/hostname\" 0\n"), "2 extent lines"},
		{"RDONLY extent", addLine("RDONLY 8 FLAT \"/etc/hostname\" 0\n"), "2 extent lines"},
		{"NOACCESS extent", addLine("NOACCESS 8 ZERO\n"), "2 extent lines"},
		{"extent after a blank line", addLine("\n\nRW 8 FLAT \"/etc/hostname\" 0\n"), "2 extent lines"},
		{"extent over lines", addLine("RW\n8 FLAT \"/etc/hostname\" 0\n"), "2 extent lines"},
		{"FLAT instead of SPARSE", func(d string) string { return strings.Replace(d, " SPARSE ", " FLAT ", 1) }, "not a SPARSE extent"},
		{"offset after SPARSE", func(d string) string { return strings.Replace(d, ".vmdk\"\n", ".vmdk\" 0\n", 1) }, "not a SPARSE extent"},
		{"parentFileNameHint", addLine("parentFileNameHint=\"/etc/hostname\"\n"), "parentFileNameHint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := testimages.RewriteVMDKDescriptor(t, sparse, dir, strings.ReplaceAll(tc.name, " ", "-")+".vmdk", tc.edit)
			if tc.why == "" {
				if info, err := inspectFile(t, img); err != nil || info.Variant != "monolithicSparse" {
					t.Fatalf("Inspect = %+v, %v", info, err)
				}
				return
			}
			refused(t, img, tc.why)
		})
	}
}

// TestVMDKHeader: capacity 0 (with or without a lying footer) and a
// truncated footer.
func TestVMDKHeader(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	src := testimages.Raw(t, dir, 1<<20)
	sparse, _ := os.ReadFile(testimages.Make(t, dir, src, testimages.Variants[3]))
	zero := bytes.Clone(sparse)
	binary.LittleEndian.PutUint64(zero[12:], 0)
	refused(t, write(t, dir, "zero.vmdk", zero), "capacity is 0")

	footer, _ := os.ReadFile(testimages.FooterVMDK(t, dir, src, 0))
	refused(t, write(t, dir, "zero-footer.vmdk", footer), "capacity is 0")
	binary.LittleEndian.PutUint64(footer[12:], 2048)
	binary.LittleEndian.PutUint64(footer[len(footer)-1024+12:], 0) // the footer's capacity
	refused(t, write(t, dir, "zero-in-footer.vmdk", footer), "capacity in the footer is 0")
	refused(t, write(t, dir, "no-footer.vmdk", footer[:len(footer)-1536]), "footer is invalid")
}

// TestRawThatQemuProbesAsAnotherFormat: qemu-img, left to guess, opens
// each of these as a format of its own; Inspect names that format and
// refuses it. The old inspector called them all raw.
func TestRawThatQemuProbesAsAnotherFormat(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	secretPath, _ := secretFile(t, dir)
	images := testimages.QemuOnlyImages(t, dir)
	images["vmdk (COWD)"] = testimages.COWDVMDK(t, dir)
	images["vmdk (descriptor)"] = testimages.DisguisedDescriptorVMDK(t, dir, secretPath)
	for name, path := range images {
		t.Run(name, func(t *testing.T) {
			want, _, _ := strings.Cut(name, " ")
			if got := qemuImgInfo(t, path, "").Format; got != want {
				t.Fatalf("qemu-img probes %s as %s: the fixture is not genuine", name, got)
			}
			info, err := inspectFile(t, path)
			var e *diskformat.Error
			if !errors.As(err, &e) || e.Format != want || info.Format == diskformat.Raw {
				t.Fatalf("Inspect = %+v, %v; want a refusal naming %s", info, err, want)
			}
			if !strings.Contains(e.Reason, "qemu-img") && want != "vmdk" {
				t.Errorf("the reason %q does not say that qemu-img would read it as %s", e.Reason, want)
			}
		})
	}
	t.Run("short files", func(t *testing.T) {
		// qemu probes a zero-padded first sector: "QED" alone is a QED
		// image to it ("QED cluster size is invalid").
		for data, want := range map[string]string{"": diskformat.Raw, "#!/bin/sh\n": diskformat.Raw, "QED": diskformat.QED} {
			info, _ := diskformat.Inspect(strings.NewReader(data), int64(len(data)), diskformat.Options{})
			if info.Format != want {
				t.Errorf("%q: Inspect = %+v, want %s", data, info, want)
			}
		}
	})
}

func write(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func exec(name string, args ...string) ([]byte, error) {
	return osexec.Command(name, args...).CombinedOutput()
}

// TestVMDKSharedGrain: grain tables that all point at one grain pass
// `qemu-img check` and map a disk of data; Inspect refuses them. The old
// inspector accepted the image.
func TestVMDKSharedGrain(t *testing.T) {
	testimages.RequireQemuImg(t)
	img := testimages.SharedGrainVMDK(t, t.TempDir())
	testimages.QemuImg(t, "check", "-f", "vmdk", img)
	var extents []struct {
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
	}
	if err := json.Unmarshal(testimages.QemuImg(t, "map", "--output=json", "-f", "vmdk", img), &extents); err != nil {
		t.Fatal(err)
	}
	var data int64
	for _, e := range extents {
		if e.Data {
			data += e.Length
		}
	}
	if data != 1<<30 {
		t.Fatalf("qemu-img maps %d bytes of data: the fixture is not genuine", data)
	}
	refused(t, img, "grain is referenced twice")
}

// TestVMDKGrainOverlaps: a grain on the header, the descriptor or a grain
// table, as hand edits of a qemu-img image.
func TestVMDKGrainOverlaps(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	for _, v := range []testimages.Variant{testimages.Variants[3], testimages.Variants[4]} {
		img, _ := os.ReadFile(testimages.Make(t, dir, testimages.Raw(t, dir, 4<<20), v))
		le := binary.LittleEndian
		gt := le.Uint32(img[le.Uint64(img[56:])*512:])
		for _, tc := range []struct {
			name   string
			sector uint32
			why    string
		}{
			{"on the header", 0, ""}, // 0 is unallocated
			{"on the descriptor", 2, "referenced twice or overlaps the metadata"},
			{"on a grain table", gt, "referenced twice or overlaps the metadata"},
			{"on the first grain", le.Uint32(img[gt*512:]), "referenced twice"},
			{"past the end", uint32(len(img) / 512), "outside the file"},
		} {
			t.Run(v.Name+" "+tc.name, func(t *testing.T) {
				bad := bytes.Clone(img)
				le.PutUint32(bad[gt*512+4:], tc.sector) // the second entry of the first table
				path := write(t, dir, "overlap.vmdk", bad)
				if tc.why == "" {
					if _, err := inspectFile(t, path); err != nil {
						t.Fatal(err)
					}
					return
				}
				refused(t, path, tc.why)
			})
		}
	}
}

// TestSharedBlocks: a dynamic VHD or a VHDX whose table points every
// entry at one block maps a disk of data (and the VHDX passes qemu-img
// check); Inspect refuses both. The old inspector accepted them.
func TestSharedBlocks(t *testing.T) {
	testimages.RequireQemuImg(t)
	for _, tc := range []struct {
		format, qemu string
		build        func(testing.TB, string) string
		why          string
	}{
		{"vhd", "vpc", testimages.SharedBlockVHD, "block is used twice"},
		{"vhdx", "vhdx", testimages.SharedBlockVHDX, "payload block is used twice"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			img := tc.build(t, t.TempDir())
			var extents []struct {
				Length int64 `json:"length"`
				Data   bool  `json:"data"`
			}
			if err := json.Unmarshal(testimages.QemuImg(t, "map", "--output=json", "-f", tc.qemu, img), &extents); err != nil {
				t.Fatal(err)
			}
			var data int64
			for _, e := range extents {
				if e.Data {
					data += e.Length
				}
			}
			st, _ := os.Stat(img)
			if data < 1<<30 {
				t.Fatalf("qemu-img maps %d bytes of data: the fixture is not genuine", data)
			}
			t.Logf("a %d-byte %s maps %d bytes of data", st.Size(), tc.format, data)
			if tc.format == "vhdx" {
				testimages.QemuImg(t, "check", "-f", "vhdx", img)
			}
			refused(t, img, tc.why)
		})
	}
}
