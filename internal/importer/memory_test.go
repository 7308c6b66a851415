package importer

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// TestMemoryIsFlat: what an import allocates does not grow with the image:
// every byte goes through the same fixed rings of chunks, whatever the
// size. It imports a small and a larger image of random data (qcow2 to raw,
// through the NBD export, and qcow2 as it is) and reports the bytes the
// importer allocated per MiB of image beyond the small one's. The qemu-img
// children and their launchers are other processes: not counted.
func TestMemoryIsFlat(t *testing.T) {
	requireSandbox(t)
	dir := t.TempDir()
	const small, large = 8 << 20, 72 << 20
	images := map[int64]string{}
	for _, size := range []int64{small, large} {
		raw := filepath.Join(dir, "dense.raw")
		data := make([]byte, size)
		rand.Read(data)
		if err := os.WriteFile(raw, data, 0o644); err != nil {
			t.Fatal(err)
		}
		images[size] = filepath.Join(dir, map[int64]string{small: "small.qcow2", large: "large.qcow2"}[size])
		testimages.QemuImg(t, "convert", "-f", "raw", "-O", "qcow2", raw, images[size])
	}
	allocated := func(path, target string) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, err, _ := importLocal(t, path, diskformat.Qcow2, target); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	for _, target := range []string{diskformat.Raw, diskformat.Qcow2} {
		t.Run(target, func(t *testing.T) {
			allocated(images[small], target) // warm: first-use allocations
			a, b := allocated(images[small], target), allocated(images[large], target)
			perMiB := (float64(b) - float64(a)) / float64((large-small)>>20)
			t.Logf("allocated %d KiB for %d MiB, %d KiB for %d MiB: %.0f bytes per MiB of image", a>>10, small>>20, b>>10, large>>20, perMiB)
			// A copy per byte would be 1 MiB per MiB; a buffer per
			// read of the network or the export, tens of KiB.
			if perMiB > 8<<10 {
				t.Errorf("%.0f bytes allocated per MiB of image: memory grows with the image", perMiB)
			}
		})
	}
}
