package importer

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
)

// The image's sha256 is skipped when, and only when, the image starts with
// the download's first bytes; otherwise it is the image's own.
func TestImageSHA256SkipsOnlyTheDownloadItself(t *testing.T) {
	download := bytes.Repeat([]byte("a disk image, as downloaded "), 100)
	for _, tc := range []struct {
		name  string
		image []byte
		skip  bool
	}{
		{"passed on as it is", download, true},
		{"decompressed", bytes.Repeat([]byte("something else "), 100), false},
		{"shorter than the compared head", download[:headLen-1], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &headRecorder{w: io.Discard}
			rec.Write(download[:len(tc.image)])
			h := &unlessSame{h: sha256.New(), download: rec}
			h.Write(tc.image)
			if h.skipped != tc.skip {
				t.Fatalf("skipped: %v, want %v", h.skipped, tc.skip)
			}
			if want := sha256.Sum256(tc.image); !tc.skip && !bytes.Equal(h.h.Sum(nil), want[:]) {
				t.Errorf("the image's sha256 is not of the image")
			}
		})
	}
}
