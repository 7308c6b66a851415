package unpack

import (
	"encoding/binary"
	"io"

	"github.com/klauspost/compress/zstd"
)

// zstd (RFC 8878): every frame, skippable frames (pzstd's) skipped, with
// klauspost/compress, which decodes blocks on a second goroutine while the
// first is written out. Windows over maxWindow are refused, as zstd -d
// refuses them without --memory.
func init() {
	codecs = append(codecs, codec{
		name: "zstd",
		magic: func(b []byte) bool {
			if len(b) < 4 {
				return false
			}
			m := binary.LittleEndian.Uint32(b)
			return m == 0xfd2fb528 || m&0xfffffff0 == 0x184d2a50 // a frame, or a skippable frame
		},
		open: func(r io.Reader) (io.ReadCloser, error) {
			z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(maxWindow), zstd.WithDecoderMaxMemory(maxWindow))
			if err != nil {
				return nil, err
			}
			return z.IOReadCloser(), nil
		},
		// A frame that says its content size is one segment, whose window
		// is that size: over the limit, the decoder calls it too large.
		demanding: []error{zstd.ErrWindowSizeExceeded, zstd.ErrDecoderSizeExceeded},
	})
}
