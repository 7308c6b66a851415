package importer

import (
	"bytes"
	"crypto/rand"
	"os"
	"strconv"
	"testing"
)

// TestDirectWritesAreExact: the sparse writer in O_DIRECT mode stores
// exactly the stream: aligned data, holes, a misaligned buffer and an
// unaligned last block (the page cache, from then on), on the test's
// filesystem and on tmpfs (which may refuse O_DIRECT: then all of it);
// and the file reads as any other once finished, aligned end or not.
func TestDirectWritesAreExact(t *testing.T) {
	for _, tc := range []struct {
		dir        string
		misaligned bool
	}{{t.TempDir(), true}, {t.TempDir(), false}, {"/dev/shm", true}} {
		dir := tc.dir
		t.Run(dir+"/misaligned="+strconv.FormatBool(tc.misaligned), func(t *testing.T) {
			if _, err := os.Stat(dir); err != nil {
				t.Skip(err)
			}
			f, err := os.CreateTemp(dir, "direct-test-")
			if err != nil {
				t.Fatal(err)
			}
			defer os.Remove(f.Name())
			defer f.Close()
			w := &sparseWriter{f: f}
			w.useDirectIO()
			t.Logf("O_DIRECT: %v", w.direct)

			chunk := make([]byte, 1<<20) // page-aligned, as the fanout's
			var want []byte
			write := func(p []byte) {
				t.Helper()
				if _, err := w.Write(p); err != nil {
					t.Fatal(err)
				}
				want = append(want, p...)
			}
			rand.Read(chunk)
			write(chunk)
			clear(chunk) // a hole
			rand.Read(chunk[8<<10 : 12<<10])
			write(chunk)
			rand.Read(chunk[:1000])
			if tc.misaligned {
				write(chunk[1 : 64<<10+1]) // a misaligned buffer
				write(chunk[:100])         // the unaligned end
			}
			if err := w.finish(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("stored %d bytes that are not the %d written", len(got), len(want))
			}
			// Whoever reads the file next, through the same descriptor,
			// reads as from any file.
			head := make([]byte, 3)
			if _, err := f.ReadAt(head, 1); err != nil || !bytes.Equal(head, want[1:4]) {
				t.Fatalf("reading 3 bytes at 1 after finish: %v", err)
			}
		})
	}
}
