package importer

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestLimitReaderKeepsFailing: io.ReadFull, which the fanout reads with,
// drops the error of a read that fills its buffer; the limit must fail
// the next read too, or a fast source outruns it until its end.
func TestLimitReaderKeepsFailing(t *testing.T) {
	const limit = 4 << 20
	r := limitReader(bytes.NewReader(make([]byte, 64<<20)), limit)
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := io.ReadFull(r, buf)
		total += int64(n)
		if errors.Is(err, errTooLarge) {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v, want the limit", total, err)
		}
	}
	if total > limit+int64(len(buf)) {
		t.Errorf("read %d bytes past a limit of %d", total, limit)
	}
}
