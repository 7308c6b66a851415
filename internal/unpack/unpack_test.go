package unpack

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/imageimport/image-import-operator/internal/testimages"
)

// chunked writes as the importer's fanout does: io.ReadFull into chunks of
// 1 MiB, which drops the error of a read that fills its chunk.
type chunked struct{ n int64 }

func (c *chunked) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func (c *chunked) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := io.ReadFull(r, buf)
		total += int64(n)
		c.n += int64(n)
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return total, nil
		default:
			return total, err
		}
	}
}

func TestDetectsEachCompressorByItsBytes(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 4<<20)
	want, _ := os.ReadFile(raw)
	for _, c := range testimages.Compressors {
		t.Run(c.Name, func(t *testing.T) {
			f, err := os.Open(testimages.Compress(t, c.Name, raw, filepath.Join(dir, "image."+c.Ext)))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var out bytes.Buffer
			rep, err := Stream(f, &out, Options{MaxRatio: 1000, MaxSize: 4 << 20})
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			if !bytes.Equal(out.Bytes(), want) || rep.Compression != c.Name || rep.Size != int64(len(want)) ||
				rep.UncompressedSize != int64(len(want)) || rep.CompressedSize != st.Size() || rep.SourceSize != st.Size() {
				t.Errorf("report %+v; %d bytes out, want %d", rep, out.Len(), len(want))
			}
		})
	}
	t.Run("no format of a disk image is taken for a compressed one", func(t *testing.T) {
		for _, v := range testimages.Variants {
			head := make([]byte, magicLen)
			f, _ := os.Open(testimages.Make(t, dir, raw, v))
			io.ReadFull(f, head)
			f.Close()
			if c := detect(head); c != nil {
				t.Errorf("%s detected as %s", v.Name, c.name)
			}
		}
	})
}

func TestLimitsHoldUnderReadFull(t *testing.T) {
	dir := t.TempDir()
	bomb, err := os.ReadFile(testimages.Bomb(t, dir, "zstd", 512<<20))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opt  Options
		kind Kind
		stop int64
	}{
		{"size", Options{MaxSize: 100 << 20}, TooLarge, 100 << 20},
		{"ratio", Options{MaxRatio: 1000}, Bomb, RatioGrace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &chunked{}
			rep, err := Stream(bytes.NewReader(bomb), w, tc.opt)
			var refusal *Error
			if !errors.As(err, &refusal) || refusal.Kind != tc.kind {
				t.Fatalf("err %v, want a refusal of kind %d", err, tc.kind)
			}
			if w.n > tc.stop+2<<20 || rep.Size > tc.stop+2<<20 {
				t.Errorf("wrote %d bytes (report %d) for a limit at %d", w.n, rep.Size, tc.stop)
			}
		})
	}
	t.Run("under the grace, any ratio", func(t *testing.T) {
		small, _ := os.ReadFile(testimages.Bomb(t, dir, "gzip", 64<<20))
		if _, err := Stream(bytes.NewReader(small), &chunked{}, Options{MaxRatio: 2}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTheSourcesErrorIsNotACorruptStream(t *testing.T) {
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 1<<20)
	data, _ := os.ReadFile(testimages.Compress(t, "xz", raw, filepath.Join(dir, "image.xz")))
	dropped := errors.New("connection reset")
	r := io.MultiReader(bytes.NewReader(data[:len(data)/2]), &failing{dropped})
	if _, err := Stream(r, io.Discard, Options{}); err != dropped {
		t.Errorf("err %v, want the source's", err)
	}
	var refusal *Error
	if _, err := Stream(bytes.NewReader(data[:len(data)/2]), io.Discard, Options{}); !errors.As(err, &refusal) || refusal.Kind != Corrupt {
		t.Errorf("err %v, want a corrupt stream", err)
	}
}

type failing struct{ err error }

func (f *failing) Read([]byte) (int, error) { return 0, f.err }
