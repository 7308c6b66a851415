package diskformat

import (
	"bytes"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/imageimport/image-import-operator/internal/testimages"
)

// seeds adds the first 64 KiB of an image of every format qemu-img makes,
// an ISO and the hostile corpus (the small hostile images whole, tables
// and all), so that the fuzzer starts from real headers. They are made
// once for all the fuzz tests. Larger seeds make the fuzzer spend minutes
// minimizing each new input.
func seeds(f *testing.F) {
	testimages.RequireQemuImg(f)
	seedOnce.Do(func() { seedData = makeSeeds(f) })
	for _, data := range seedData {
		f.Add(data)
	}
}

var (
	seedOnce sync.Once
	seedData [][]byte
)

func makeSeeds(f *testing.F) [][]byte {
	dir, err := os.MkdirTemp("", "diskformat-seeds-")
	if err != nil {
		f.Fatal(err)
	}
	defer os.RemoveAll(dir)
	src := testimages.Raw(f, dir, 1<<20)
	var paths []string
	for _, v := range testimages.Variants {
		paths = append(paths, testimages.Make(f, dir, src, v))
	}
	paths = append(paths, testimages.ISO(f, dir, 64<<10), testimages.FooterVMDK(f, dir, src, 1))
	for _, h := range testimages.HostileCorpus(f, dir) {
		paths = append(paths, h.Path)
	}
	var all [][]byte
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		all = append(all, data[:min(len(data), 64<<10)])
	}
	return all
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
