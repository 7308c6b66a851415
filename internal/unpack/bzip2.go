package unpack

import (
	"bytes"
	"compress/bzip2"
	"io"
)

// bzip2, concatenated streams (pbzip2's) included, with the standard
// library: no faster decoder is both pure Go and kept up.
func init() {
	codecs = append(codecs, codec{
		name: "bzip2",
		// "BZh", the block size (1-9), then the magic of a block (pi) or of
		// the end of the stream (sqrt(pi)): ten bytes a raw disk will not
		// start with by chance.
		magic: func(b []byte) bool {
			if len(b) < 10 || !bytes.HasPrefix(b, []byte("BZh")) || b[3] < '1' || b[3] > '9' {
				return false
			}
			return bytes.Equal(b[4:10], []byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59}) ||
				bytes.Equal(b[4:10], []byte{0x17, 0x72, 0x45, 0x38, 0x50, 0x90})
		},
		open: func(r io.Reader) (io.ReadCloser, error) { return io.NopCloser(bzip2.NewReader(r)), nil },
	})
}
