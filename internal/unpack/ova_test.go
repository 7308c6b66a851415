package unpack

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imageimport/image-import-operator/internal/testimages"
)

func TestParseOVF(t *testing.T) {
	vmware := testimages.OVFDescriptor("appliance", "disk1.vmdk")
	cases := []struct {
		name, ovf string
		kind      Kind   // when refused
		why       string // "" when accepted
	}{
		{"VMware's", vmware, 0, ""},
		{"two disks", testimages.OVFDescriptor("vm", "a.vmdk", "b.vmdk"), Invalid, "references 2 disks"},
		{"three disks", testimages.OVFDescriptor("vm", "a.vmdk", "b.vmdk", "c.vmdk"), Invalid, "references 3 disks"},
		{"no disk", testimages.OVFDescriptor("vm"), Invalid, "references no disk"},
		{"a blank disk beside", strings.Replace(vmware, "</DiskSection>", `<Disk ovf:capacity="1" ovf:diskId="blank"/></DiskSection>`, 1), 0, ""},
		{"a file that is not listed", strings.Replace(vmware, `ovf:fileRef="file1"`, `ovf:fileRef="file9"`, 1), Invalid, "not in the descriptor's References"},
		{"a traversal", strings.Replace(vmware, `ovf:href="disk1.vmdk"`, `ovf:href="../../etc/shadow"`, 1), Unsafe, "climbs out"},
		{"an absolute path", strings.Replace(vmware, `ovf:href="disk1.vmdk"`, `ovf:href="/etc/shadow"`, 1), Unsafe, "absolute path"},
		{"a URL", strings.Replace(vmware, `ovf:href="disk1.vmdk"`, `ovf:href="http://169.254.169.254/disk"`, 1), Unsafe, "outside of the OVA"},
		{"chunks", strings.Replace(vmware, `ovf:id="file1"`, `ovf:id="file1" ovf:chunkSize="2147483648"`, 1), Invalid, "chunks"},
		{"not an Envelope", "<html><body/></html>", Invalid, "not one Envelope"},
		{"not XML", "\x00\x01 binary", Invalid, "not valid XML"},
		{"empty", "", Invalid, "no Envelope"},
		{"an entity", `<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><Envelope>&x;</Envelope>`, Invalid, "not valid XML"},
		{"deep", "<Envelope>" + strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100) + "</Envelope>", Invalid, "nests elements"},
		{"attributes", strings.Replace(vmware, "<DiskSection>", "<DiskSection"+strings.Repeat(` a=""`, maxAttributes)+">", 1), Invalid, "more than the limit of 16384 attributes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := parseOVF([]byte(tc.ovf))
			if tc.why == "" {
				if err != nil {
					t.Fatal(err)
				}
				if d.href != "disk1.vmdk" || d.Name != "appliance" || d.Product != "Example Appliance" || d.Vendor != "Example Corp" || d.Version != "1.2.3" ||
					!strings.HasSuffix(d.DiskFormat, "#streamOptimized") {
					t.Errorf("read %+v", d)
				}
				return
			}
			var refusal *Error
			if !errors.As(err, &refusal) || refusal.Kind != tc.kind || !strings.Contains(err.Error(), tc.why) {
				t.Errorf("err %v, want kind %d saying %q", err, tc.kind, tc.why)
			}
		})
	}
}

func TestOVFTextFitsTheResult(t *testing.T) {
	long := strings.Replace(testimages.OVFDescriptor("vm", "disk1.vmdk"), "<Product>Example Appliance</Product>",
		"<Product>"+strings.Repeat("é\n\t", 500)+"</Product>", 1)
	d, err := parseOVF([]byte(long))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Product) > 64+len("…") || strings.ContainsAny(d.Product, "\n\t") {
		t.Errorf("product %q", d.Product)
	}
}

// The disk's entry name reaches the task's status: one printable line,
// while the entry is matched by its exact name.
func TestOVFEntryFitsTheResult(t *testing.T) {
	href := "d\u202eisk\nx\t.vmdk"
	ovf := strings.Replace(testimages.OVFDescriptor("vm", "disk1.vmdk"), `ovf:href="disk1.vmdk"`, `ovf:href="d&#x202E;isk&#10;x&#9;.vmdk"`, 1)
	d, err := parseOVF([]byte(ovf))
	if err != nil {
		t.Fatal(err)
	}
	if d.href != href || d.Entry != "d isk x .vmdk" {
		t.Errorf("href %q, entry %q", d.href, d.Entry)
	}
}

// ovaFixtures are OVAs made by tar: the seeds of the fuzzer, and cases.
func ovaFixtures(t testing.TB) (dir string, disk []byte) {
	t.Helper()
	dir = t.(interface{ TempDir() string }).TempDir()
	disk = bytes.Repeat([]byte("disk"), 4096)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("vm.ovf", []byte(testimages.OVFDescriptor("vm", "disk1.vmdk")))
	write("vm.mf", []byte("SHA256(disk1.vmdk)= 0\n"))
	write("disk1.vmdk", disk)
	write("nvram", []byte("nvram"))
	testimages.Tar(t, dir, "good.ova", "vm.ovf", "vm.mf", "disk1.vmdk", "nvram")
	testimages.Tar(t, dir, "disk-first.ova", "disk1.vmdk", "vm.ovf")
	os.Symlink("/etc/passwd", filepath.Join(dir, "link"))
	testimages.Tar(t, dir, "symlink.ova", "vm.ovf", "link", "disk1.vmdk")
	testimages.Tar(t, dir, "symlink-disk.ova", "vm.ovf", "--transform", "s,^link$,disk1.vmdk,", "link")
	os.Link(filepath.Join(dir, "disk1.vmdk"), filepath.Join(dir, "hard"))
	testimages.Tar(t, dir, "hardlink.ova", "vm.ovf", "disk1.vmdk", "hard")
	testimages.Tar(t, dir, "twice.ova", "--hard-dereference", "vm.ovf", "disk1.vmdk", "disk1.vmdk")
	testimages.Tar(t, dir, "traversal.ova", "-P", "vm.ovf", "../"+filepath.Base(dir)+"/nvram", "disk1.vmdk")
	testimages.Tar(t, dir, "absolute.ova", "-P", "vm.ovf", filepath.Join(dir, "nvram"), "disk1.vmdk")
	testimages.Tar(t, dir, "device.ova", "vm.ovf", "-C", "/", "dev/null")
	testimages.Tar(t, dir, "no-disk.ova", "vm.ovf", "nvram")
	write("two.ovf", []byte(testimages.OVFDescriptor("vm", "disk1.vmdk", "nvram")))
	testimages.Tar(t, dir, "two-disks.ova", "two.ovf", "disk1.vmdk", "nvram")
	return dir, disk
}

func TestOVA(t *testing.T) {
	dir, disk := ovaFixtures(t)
	good, _ := os.ReadFile(filepath.Join(dir, "good.ova"))
	gz, _ := os.ReadFile(testimages.Compress(t, "gzip", filepath.Join(dir, "good.ova"), filepath.Join(dir, "good.ova.gz")))
	t.Run("the disk and nothing else", func(t *testing.T) {
		for name, data := range map[string][]byte{"tar": good, "gzip": gz} {
			var out bytes.Buffer
			rep, err := Stream(bytes.NewReader(data), &out, Options{OVA: true, MaxRatio: 1000})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !bytes.Equal(out.Bytes(), disk) || rep.OVA == nil || rep.OVA.Entry != "disk1.vmdk" || rep.OVA.Descriptor != "vm.ovf" ||
				rep.OVA.Product != "Example Appliance" || rep.Size != int64(len(disk)) || rep.SourceSize != int64(len(data)) {
				t.Errorf("%s: report %+v %+v, %d bytes out", name, rep, rep.OVA, out.Len())
			}
		}
	})
	for _, tc := range []struct {
		ova  string
		kind Kind
		why  string
	}{
		{"disk-first.ova", Invalid, `The first entry of an OVA must be its OVF descriptor (DSP0243), not "disk1.vmdk"`},
		{"symlink.ova", Unsafe, `"link" is a link (to "/etc/passwd")`},
		{"symlink-disk.ova", Unsafe, `"disk1.vmdk" is a link`},
		{"hardlink.ova", Unsafe, `"hard" is a link`},
		{"twice.ova", Unsafe, "holds its disk \"disk1.vmdk\" twice"},
		{"traversal.ova", Unsafe, "climbs out of the archive"},
		{"absolute.ova", Unsafe, "has an absolute path"},
		{"device.ova", Unsafe, `"dev/null" is a device`},
		{"no-disk.ova", Invalid, `has no entry "disk1.vmdk"`},
		{"two-disks.ova", Invalid, "references 2 disks"},
	} {
		t.Run(tc.ova, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, tc.ova))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Stream(bytes.NewReader(data), io.Discard, Options{OVA: true})
			var refusal *Error
			if !errors.As(err, &refusal) || refusal.Kind != tc.kind || !strings.Contains(err.Error(), tc.why) {
				t.Errorf("err %v, want kind %d saying %q", err, tc.kind, tc.why)
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		for _, n := range []int{100, 1024, len(good) / 2, len(good) - 1024*10 - 100} {
			_, err := Stream(bytes.NewReader(good[:n]), io.Discard, Options{OVA: true})
			var refusal *Error
			if !errors.As(err, &refusal) || refusal.Kind != Corrupt && refusal.Kind != Invalid {
				t.Errorf("%d bytes: err %v, want a corrupt or invalid OVA", n, err)
			}
		}
	})
	t.Run("a compressed disk in a compressed OVA", func(t *testing.T) {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "vm.ovf"), []byte(testimages.OVFDescriptor("vm", "disk1.vmdk")), 0o644)
		os.WriteFile(filepath.Join(d, "raw"), disk, 0o644)
		testimages.Compress(t, "gzip", filepath.Join(d, "raw"), filepath.Join(d, "disk1.vmdk"))
		testimages.Tar(t, d, "gz-disk.ova", "vm.ovf", "disk1.vmdk")
		plain, _ := os.ReadFile(filepath.Join(d, "gz-disk.ova"))
		var out bytes.Buffer
		if rep, err := Stream(bytes.NewReader(plain), &out, Options{OVA: true}); err != nil || !bytes.Equal(out.Bytes(), disk) || rep.Compression != "gzip" {
			t.Errorf("a gzip disk (ovf:compression) in a tar: %v, %+v", err, rep)
		}
		xz, _ := os.ReadFile(testimages.Compress(t, "xz", filepath.Join(d, "gz-disk.ova"), filepath.Join(d, "gz-disk.ova.xz")))
		_, err := Stream(bytes.NewReader(xz), io.Discard, Options{OVA: true})
		var refusal *Error
		if !errors.As(err, &refusal) || refusal.Kind != Nested {
			t.Errorf("a gzip disk in an xz OVA: %v, want nested compression refused", err)
		}
	})
}

// FuzzOVA feeds the OVA reader what the fuzzer makes of real OVAs: it may
// refuse anything, but never panics, never fails but with a refusal (the
// source cannot fail here), and never writes past its limit.
func FuzzOVA(f *testing.F) {
	dir, _ := ovaFixtures(f)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".ova") {
			data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 20
		w := &chunked{}
		rep, err := Stream(bytes.NewReader(data), w, Options{OVA: true, MaxSize: limit, MaxRatio: 1000})
		var refusal *Error
		if err != nil && !errors.As(err, &refusal) {
			t.Fatalf("not a refusal: %v", err)
		}
		if w.n > limit+1<<20 || rep.Size != w.n && err == nil {
			t.Fatalf("wrote %d bytes, reported %d", w.n, rep.Size)
		}
		if err == nil && (rep.OVA == nil || rep.OVA.Entry == "") {
			t.Fatalf("accepted with no disk: %+v", rep)
		}
	})
}

// A compressed OVA that is no tar, whose download then fails: the refusal
// and the failure are told apart while the decoder's goroutine still reads
// the download (a data race under -race, which make test runs).
func TestABadOVAWhoseDownloadFails(t *testing.T) {
	testimages.RequireTool(t, "zstd")
	noise := make([]byte, 140<<10)
	for i := range noise {
		noise[i] = byte(i * 7 / 3)
	}
	cmd := exec.Command("zstd", "-c", "-q")
	cmd.Stdin = bytes.NewReader(noise)
	zst, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	dropped := errors.New("connection reset")
	for range 20 {
		_, err := Stream(io.MultiReader(bytes.NewReader(zst), &failing{dropped}), io.Discard, Options{OVA: true})
		var refusal *Error
		if err != dropped && !errors.As(err, &refusal) {
			t.Fatalf("err %v, want the download's or a refusal", err)
		}
	}
}
