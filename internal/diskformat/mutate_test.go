package diskformat_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// TestTableWalksSurviveCorruption corrupts the tables the walks read, in
// whole images (the fuzz seeds stop at 64 KiB, before a VHDX's region
// table): no panic, and nothing accepted with a negative or absurd size.
func TestTableWalksSurviveCorruption(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	src := testimages.Raw(t, dir, 4<<20)
	rng := rand.New(rand.NewPCG(8, 8))
	for _, v := range testimages.Variants {
		img, err := os.ReadFile(testimages.Make(t, dir, src, v))
		if err != nil {
			t.Fatal(err)
		}
		// Where the tables are: from the start, around the VHDX regions, and
		// a few random places.
		hot := []int{0, 512, 1536, 192 << 10, 1 << 20, 2 << 20, 3 << 20}
		for range 400 {
			type saved struct {
				at  int
				old uint64
			}
			var undo []saved
			for range 1 + rng.IntN(8) {
				at := hot[rng.IntN(len(hot))] + rng.IntN(4096)
				if rng.IntN(4) == 0 {
					at = rng.IntN(len(img))
				}
				if at+8 <= len(img) {
					undo = append(undo, saved{at, binary.LittleEndian.Uint64(img[at:])})
					binary.LittleEndian.PutUint64(img[at:], rng.Uint64()>>rng.IntN(64))
				}
			}
			info, err := diskformat.Inspect(bytes.NewReader(img), int64(len(img)), diskformat.Options{MaxVirtualSize: 1 << 40})
			if err == nil && (info.VirtualSize < 0 || info.VirtualSize > 1<<40) {
				t.Fatalf("%s: accepted %+v", v.Name, info)
			}
			for i := len(undo) - 1; i >= 0; i-- {
				binary.LittleEndian.PutUint64(img[undo[i].at:], undo[i].old)
			}
		}
	}
}
