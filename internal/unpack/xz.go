package unpack

import (
	"bytes"
	"io"

	"github.com/therootcompany/xz"
)

// maxWindow bounds the memory a decoder may need for its history (xz's
// dictionary, zstd's window): what zstd -d accepts without --memory, and
// twice what xz -9 uses. A stream that asks for more is refused, not
// allocated.
const maxWindow = 128 << 20

// xz (.xz: LZMA2 with the BCJ and delta filters, CRC32, CRC64 and SHA-256
// checks, several streams and stream padding), with the Go port of XZ
// Embedded (the decoder in the Linux kernel), which decodes about twice as
// fast as github.com/ulikunitz/xz here.
func init() {
	codecs = append(codecs, codec{
		name:  "xz",
		magic: func(b []byte) bool { return bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0}) },
		open: func(r io.Reader) (io.ReadCloser, error) {
			z, err := xz.NewReader(r, maxWindow)
			if err != nil {
				return nil, err
			}
			z.Multistream(true)
			return io.NopCloser(z), nil
		},
		demanding: []error{xz.ErrMemlimit},
	})
}
