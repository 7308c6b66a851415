package diskformat

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/imageimport/image-import-operator/internal/testimages"
)

// seeds adds the first 64 KiB of an image of every format qemu-img makes,
// an ISO and the hostile corpus, so that the fuzzer starts from real
// headers.
func seeds(f *testing.F) {
	testimages.RequireQemuImg(f)
	dir := f.TempDir()
	src := testimages.Raw(f, dir, 1<<20)
	var paths []string
	for _, v := range testimages.Variants {
		paths = append(paths, testimages.Make(f, dir, src, v))
	}
	paths = append(paths, testimages.ISO(f, dir, 64<<10))
	for _, h := range testimages.HostileCorpus(f, dir) {
		paths = append(paths, h.Path)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data[:min(len(data), 64<<10)])
	}
}

func fuzzProber(f *testing.F, probe func(io.ReaderAt, int64) (Info, bool, error)) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		info, ok, err := probe(bytes.NewReader(data), int64(len(data)))
		if !ok && err != nil {
			t.Fatalf("a prober that does not recognise the bytes returned %v", err)
		}
		if ok && err == nil && info.VirtualSize < 0 {
			t.Fatalf("accepted a negative virtual size: %+v", info)
		}
	})
}

func FuzzInspect(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Inspect(bytes.NewReader(data), int64(len(data)), Options{MaxVirtualSize: 1 << 40})
		if err == nil && (info.Format == "" || info.VirtualSize < 0 || info.VirtualSize > 1<<40) {
			t.Fatalf("Inspect accepted %+v", info)
		}
	})
}

func FuzzQcow2(f *testing.F) { fuzzProber(f, probeQcow2) }
func FuzzVMDK(f *testing.F)  { fuzzProber(f, probeVMDK) }
func FuzzVHD(f *testing.F)   { fuzzProber(f, probeVHD) }
func FuzzVHDX(f *testing.F)  { fuzzProber(f, probeVHDX) }
func FuzzVDI(f *testing.F)   { fuzzProber(f, probeVDI) }
func FuzzISO(f *testing.F)   { fuzzProber(f, probeISO) }
