package unpack

import (
	"io"

	"github.com/klauspost/compress/gzip"
)

// gzip (RFC 1952), every member of a multi-member file (pigz, bgzip,
// concatenated .gz files), with klauspost/compress's inflater: the same
// format as compress/gzip at about twice its speed.
func init() {
	codecs = append(codecs, codec{
		name: "gzip",
		// ID1 ID2 and CM=8 (deflate), the only method defined.
		magic: func(b []byte) bool { return len(b) >= 3 && b[0] == 0x1f && b[1] == 0x8b && b[2] == 8 },
		open: func(r io.Reader) (io.ReadCloser, error) {
			z, err := gzip.NewReader(r)
			if err != nil {
				return nil, err
			}
			z.Multistream(true)
			return z, nil
		},
	})
}
