package diskformat_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

const limit = 1 << 40 // 1 TiB

func inspectFile(t *testing.T, path string) (diskformat.Info, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	return diskformat.Inspect(f, st.Size(), diskformat.Options{MaxVirtualSize: limit})
}

func TestInspectImagesMadeByQemuImg(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	const size = 4 << 20
	src := testimages.Raw(t, dir, size)
	for _, v := range testimages.Variants {
		t.Run(v.Name, func(t *testing.T) {
			info, err := inspectFile(t, testimages.Make(t, dir, src, v))
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if info.Format != v.Format || info.Variant != v.Variant || info.VirtualSize != size {
				t.Errorf("Inspect = %+v, want format %s, variant %q, virtual size %d", info, v.Format, v.Variant, size)
			}
		})
	}
	t.Run("iso", func(t *testing.T) {
		info, err := inspectFile(t, testimages.ISO(t, dir, 1<<20))
		if err != nil || info.Format != diskformat.ISO || info.VirtualSize != 1<<20 {
			t.Errorf("Inspect = %+v, %v", info, err)
		}
	})
}

func TestInspectRefusesTheHostileCorpus(t *testing.T) {
	testimages.RequireQemuImg(t)
	for _, h := range testimages.HostileCorpus(t, t.TempDir()) {
		t.Run(h.Name, func(t *testing.T) {
			info, err := inspectFile(t, h.Path)
			if strings.Contains(h.Why, ", not ") {
				// A well-formed image of another format: Inspect names the
				// format and the importer refuses the declared one.
				if err != nil || info.Format == h.Declared {
					t.Errorf("Inspect = %+v, %v; want a clean %s", info, err, strings.Fields(h.Why)[1])
				}
				return
			}
			if err == nil {
				t.Fatalf("Inspect accepted it: %+v", info)
			}
			if !strings.Contains(err.Error(), h.Why) {
				t.Errorf("Inspect error %q does not say %q", err, h.Why)
			}
			if !errors.Is(err, diskformat.ErrUnsafe) && !errors.Is(err, diskformat.ErrInvalid) && !errors.Is(err, diskformat.ErrUnsupported) {
				t.Errorf("Inspect error %q is not classified", err)
			}
		})
	}
}
