package diskformat_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// TestQcow2SharedClusters: images whose tables point twice at one cluster
// pass `qemu-img check` and expand far beyond their size; Inspect refuses
// them. The old inspector accepted both.
func TestQcow2SharedClusters(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()

	small := testimages.SharedClusterQcow2(t, dir, 512<<20)
	testimages.QemuImg(t, "check", small)
	var extents []struct {
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
	}
	if err := json.Unmarshal(testimages.QemuImg(t, "map", "--output=json", "-f", "qcow2", small), &extents); err != nil {
		t.Fatal(err)
	}
	var data int64
	for _, e := range extents {
		if e.Data {
			data += e.Length
		}
	}
	st, _ := os.Stat(small)
	if data != 512<<20 {
		t.Fatalf("qemu-img maps %d bytes of data: the fixture is not genuine", data)
	}
	t.Logf("a %d-byte file maps %d bytes of data", st.Size(), data)
	refused(t, small, "data cluster is referenced twice")

	big := testimages.SharedClusterQcow2(t, dir, 64<<30)
	testimages.QemuImg(t, "check", big)
	refused(t, big, "data cluster is referenced twice")

	sharedL2 := testimages.SharedL2Qcow2(t, dir)
	testimages.QemuImg(t, "check", sharedL2)
	refused(t, sharedL2, "L2 table is referenced twice")
}

// TestQcow2ClusterOverlaps: a data cluster on the header, the L1 table or
// an L2 table, and an unaligned one, as hand edits of a qemu-img image.
func TestQcow2ClusterOverlaps(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	img, _ := os.ReadFile(testimages.Make(t, dir, testimages.Raw(t, dir, 4<<20), testimages.Variants[1]))
	be := binary.BigEndian
	l1 := be.Uint64(img[40:])
	l2 := be.Uint64(img[l1:]) & 0x00fffffffffffe00
	firstData := func(img []byte) int {
		for e := int(l2); ; e += 8 {
			if be.Uint64(img[e:])&0x00fffffffffffe00 != 0 {
				return e
			}
		}
	}
	for _, tc := range []struct {
		name   string
		offset uint64
		why    string
	}{
		{"offset 0 (unallocated)", 0, ""},
		{"on the L1 table", l1, "referenced twice or overlaps the metadata"},
		{"on the L2 table", l2, "referenced twice or overlaps the metadata"},
		{"on the refcount table", be.Uint64(img[48:]), "referenced twice or overlaps the metadata"},
		{"unaligned", be.Uint64(img[firstData(img):])&0x00fffffffffffe00 + 512, "not cluster-aligned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(img)
			be.PutUint64(bad[firstData(bad):], tc.offset|1<<63)
			path := write(t, dir, "overlap.qcow2", bad)
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

// TestQcow2CompressedClustersShareHostClusters: `qemu-img convert -c` of
// compressible data packs many compressed clusters into each host cluster;
// Inspect accepts that, and refuses one compressed cluster used twice.
func TestQcow2CompressedClustersShareHostClusters(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	const size = 32 << 20
	// Text-like data: each 64 KiB cluster compresses to a few KiB.
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"kernel ", "module ", "init ", "systemd ", "boot ", "disk ", "\n", "0x1f ", "ext4 ", "cloud "}
	var raw bytes.Buffer
	for raw.Len() < size {
		raw.WriteString(words[rng.IntN(len(words))])
	}
	src := write(t, dir, "text.raw", raw.Bytes()[:size])
	img := filepath.Join(dir, "compressed.qcow2")
	testimages.QemuImg(t, "convert", "-f", "raw", "-O", "qcow2", "-c", src, img)

	data, _ := os.ReadFile(img)
	be := binary.BigEndian
	l2 := be.Uint64(data[be.Uint64(data[40:]):]) & 0x00fffffffffffe00
	const shift = 62 - (16 - 8)
	perHost := map[uint64]int{}
	var entries []int
	for e := int(l2); e < int(l2)+64<<10; e += 8 {
		if v := be.Uint64(data[e:]); v&(1<<62) != 0 {
			perHost[(v&(1<<shift-1))>>16]++
			entries = append(entries, e)
		}
	}
	shared := 0
	for _, n := range perHost {
		shared = max(shared, n)
	}
	if shared < 2 {
		t.Fatalf("no host cluster holds two compressed clusters (%d compressed): the test proves nothing", len(entries))
	}
	t.Logf("%d compressed clusters in %d host clusters, up to %d in one", len(entries), len(perHost), shared)
	if info, err := inspectFile(t, img); err != nil || info.VirtualSize != size {
		t.Fatalf("Inspect = %+v, %v", info, err)
	}

	dup := bytes.Clone(data)
	copy(dup[entries[1]:entries[1]+8], dup[entries[0]:entries[0]+8])
	refused(t, write(t, dir, "dup.qcow2", dup), "compressed cluster is referenced twice")

	onL2 := bytes.Clone(data)
	be.PutUint64(onL2[entries[0]:], 1<<62|l2)
	refused(t, write(t, dir, "on-l2.qcow2", onL2), "compressed data overlaps")
}

// TestQcow2WithSnapshot: an internal snapshot shares clusters between its
// tables and the active ones, never within the active ones.
func TestQcow2WithSnapshot(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	img := testimages.Make(t, dir, testimages.Raw(t, dir, 8<<20), testimages.Variants[1])
	testimages.QemuImg(t, "snapshot", "-c", "before", img)
	if out, err := exec("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 1M 1M", img); err != nil {
		t.Fatalf("qemu-io: %v\n%s", err, out)
	}
	testimages.QemuImg(t, "check", img)
	if info, err := inspectFile(t, img); err != nil || info.VirtualSize != 8<<20 {
		t.Fatalf("Inspect = %+v, %v", info, err)
	}
}

// TestQcow2LargeMetadata: 64 GiB with preallocated metadata has a
// million L2 entries, each pointing at its own cluster; Inspect walks them
// all in bounded memory (see BenchmarkInspectPreallocatedQcow2).
func TestQcow2LargeMetadata(t *testing.T) {
	testimages.RequireQemuImg(t)
	img := preallocated(t, t.TempDir())
	if info, err := inspectFile(t, img); err != nil || info.VirtualSize != 64<<30 {
		t.Fatalf("Inspect = %+v, %v", info, err)
	}
}

func preallocated(t testing.TB, dir string) string {
	img := filepath.Join(dir, "prealloc.qcow2")
	testimages.QemuImg(t, "create", "-f", "qcow2", "-o", "preallocation=metadata", img, "64G")
	return img
}

func BenchmarkInspectPreallocatedQcow2(b *testing.B) {
	testimages.RequireQemuImg(b)
	f, err := os.Open(preallocated(b, b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := diskformat.Inspect(f, st.Size(), diskformat.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestQcow2CloudLike: compressed clusters of real files (testimages'
// cloud-like image) are accepted.
func TestQcow2CloudLike(t *testing.T) {
	testimages.RequireQemuImg(t)
	img, _ := testimages.CloudLikeQcow2(t, t.TempDir(), 256<<20, 32<<20)
	if info, err := inspectFile(t, img); err != nil || info.VirtualSize != 256<<20 {
		t.Fatalf("Inspect = %+v, %v", info, err)
	}
}
