package unpack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkDecoders decompresses, through Stream into 1 MiB chunks as the importer reads, each
// compressed file of $UNPACK_BENCH_DIR (bench/unpack.sh makes them) with
// the sandboxed decompressors and with the Go decoders. MB/s are of
// decompressed bytes.
//
//	UNPACK_BENCH_DIR=dir go test ./internal/unpack -run '^$' -bench Decoders -benchtime 1x
func BenchmarkDecoders(b *testing.B) {
	dir := os.Getenv("UNPACK_BENCH_DIR")
	if dir == "" {
		b.Skip("UNPACK_BENCH_DIR names no directory of compressed images")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.*"))
	for _, file := range files {
		if !strings.Contains(".xz .zst .gz .bz2", filepath.Ext(file)) {
			continue
		}
		for _, decoder := range []string{"sandboxed", "Go"} {
			b.Run(filepath.Base(file)+"/"+decoder, func(b *testing.B) {
				if decoder == "sandboxed" && !canLaunch() {
					b.Skip("the decompressors cannot run sandboxed here")
				}
				inProcess.Store(decoder == "Go")
				defer inProcess.Store(false)
				for b.Loop() {
					f, err := os.Open(file)
					if err != nil {
						b.Fatal(err)
					}
					rep, err := Stream(f, &chunked{}, Options{}) // 1 MiB reads, as the importer's
					f.Close()
					if err != nil {
						b.Fatal(err)
					}
					b.SetBytes(rep.Size)
					b.ReportMetric(0, "ns/op")
					b.Logf("%s by %s", rep.Compression, rep.Decoder)
				}
			})
		}
	}
}
