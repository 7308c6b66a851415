package importer

import (
	"strings"
	"testing"

	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/unpack"
)

// TestUnpackedFitsTheTerminationMessage: the OVF's texts are cut to 64
// bytes and the entry to 128 by the unpacker; a success result holding the
// worst of them (characters JSON escapes six times over) still fits.
func TestUnpackedFitsTheTerminationMessage(t *testing.T) {
	worst := strings.Repeat("<", 64) + "…"
	rep := unpack.Report{Compression: "bzip2", CompressedSize: 1 << 40, UncompressedSize: 1 << 50, Size: 1 << 50,
		OVA: &unpack.OVA{Entry: strings.Repeat("&", 128) + "…", Name: worst, Product: worst, Vendor: worst, Version: worst}}
	r := importresult.Result{
		ImageID: strings.Repeat("a", 255), Size: 1 << 50, VirtualSize: 1 << 50, SourceFormat: "qcow2", DiskFormat: "qcow2",
		Checksum: strings.Repeat("0", 32), OSHashAlgo: "sha512", OSHashValue: strings.Repeat("0", 128),
		SourceSHA256: strings.Repeat("0", 64), BytesTransferred: 1 << 50, DurationSeconds: 1e9, Unpacked: unpacked(rep),
	}
	b, err := importresult.Marshal(r)
	if err != nil || len(b) > importresult.MaxSize {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
}
