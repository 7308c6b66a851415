package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// Compressed sources, made by the real gzip, xz, zstd and bzip2, served by a
// real HTTP server, imported by the importer with the real qemu-img.

// compressedSources makes the raw image and, for every compressor, its raw,
// qcow2 and vmdk forms compressed; it returns dir and the raw image.
func compressedSources(t *testing.T, dir string) string {
	t.Helper()
	raw := testimages.Raw(t, dir, 8<<20)
	for _, v := range []testimages.Variant{testimages.Variants[1], testimages.Variants[3], testimages.Variants[10]} {
		src := testimages.Make(t, dir, raw, v)
		for _, c := range testimages.Compressors {
			testimages.Compress(t, c.Name, src, filepath.Join(dir, v.Format+"."+c.Ext))
		}
	}
	return raw
}

func TestImportsCompressedSources(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	raw := compressedSources(t, dir)
	srv := serveDir(t, dir)
	rawMD5, _, rawSHA512 := fileDigests(t, raw)
	for _, c := range testimages.Compressors {
		for _, format := range []string{"raw", "qcow2", "vmdk"} {
			name := format + "." + c.Ext
			t.Run(name, func(t *testing.T) {
				o := importFrom(t, srv.URL+"/"+name, format, "raw")
				if o.code != 0 {
					t.Fatalf("exit code %d: %s", o.code, o.result.Error)
				}
				// Byte-exact: the stored disk is the raw image it was made from.
				if m5, _, _ := fileDigests(t, filepath.Join(o.store, imageID)); m5 != rawMD5 {
					t.Errorf("stored md5 %s, the raw image's %s", m5, rawMD5)
				}
				compressed := filepath.Join(dir, name)
				_, srcSHA256, _ := fileDigests(t, compressed)
				cst, _ := os.Stat(compressed)
				ust, _ := os.Stat(filepath.Join(dir, testimages.Variants[map[string]int{"raw": 10, "qcow2": 1, "vmdk": 3}[format]].Name+"."+format))
				r := o.result
				u := r.Unpacked
				if u == nil || u.Compression != c.Name || u.CompressedSize != cst.Size() || u.UncompressedSize != ust.Size() ||
					u.DiskSize != ust.Size() || u.OVAEntry != "" {
					t.Errorf("result says %+v unpacked; want %s, %d bytes to %d", u, c.Name, cst.Size(), ust.Size())
				}
				if r.BytesTransferred != cst.Size() || r.SourceSHA256 != srcSHA256 || r.SourceFormat != format || r.Checksum != rawMD5 || r.OSHashValue != rawSHA512 {
					t.Errorf("result %+v: the source's checksum is of the download, the image's of the stored image", r)
				}
			})
		}
	}
	t.Run("stored as it is, decompressed", func(t *testing.T) {
		o := importFrom(t, srv.URL+"/qcow2.xz", "qcow2", "qcow2")
		if o.code != 0 {
			t.Fatalf("exit code %d: %s", o.code, o.result.Error)
		}
		m5, _, s512 := fileDigests(t, filepath.Join(o.store, imageID))
		want, _, _ := fileDigests(t, filepath.Join(dir, "qcow2-v3.qcow2"))
		if m5 != want || o.result.Checksum != m5 || o.result.OSHashValue != s512 {
			t.Errorf("stored md5 %s, result %s; the decompressed qcow2's is %s", m5, o.result.Checksum, want)
		}
	})
}

func TestDetectsCompressionFromTheBytes(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	raw := compressedSources(t, dir)
	rawMD5, _, _ := fileDigests(t, raw)
	// A gzip named .qcow2, a plain image named .gz.
	os.Rename(filepath.Join(dir, "qcow2.gz"), filepath.Join(dir, "named.qcow2"))
	os.Rename(filepath.Join(dir, "raw.raw"), filepath.Join(dir, "named.raw.gz"))
	// gzip with several members, as pigz and cat a.gz b.gz write it.
	data, _ := os.ReadFile(raw)
	half := filepath.Join(dir, "half")
	os.WriteFile(half, data[:len(data)/2], 0o644)
	first, _ := os.ReadFile(testimages.Compress(t, "gzip", half, half+".gz"))
	os.WriteFile(half, data[len(data)/2:], 0o644)
	second, _ := os.ReadFile(testimages.Compress(t, "gzip", half, half+".gz"))
	os.WriteFile(filepath.Join(dir, "members.gz"), append(first, second...), 0o644)
	srv := serveDir(t, dir)
	for _, tc := range []struct{ name, format, compression string }{
		{"named.qcow2", "qcow2", "gzip"},
		{"named.raw.gz", "raw", ""},
		{"members.gz", "raw", "gzip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := importFrom(t, srv.URL+"/"+tc.name, tc.format, "raw")
			if o.code != 0 {
				t.Fatalf("exit code %d: %s", o.code, o.result.Error)
			}
			if m5, _, _ := fileDigests(t, filepath.Join(o.store, imageID)); m5 != rawMD5 {
				t.Errorf("stored md5 %s, the raw image's %s", m5, rawMD5)
			}
			if got := o.result.Unpacked; tc.compression == "" && got != nil || tc.compression != "" && (got == nil || got.Compression != tc.compression) {
				t.Errorf("unpacked %+v, want compression %q", got, tc.compression)
			}
		})
	}
}

func TestSourceChecksumsAreOfTheDownload(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	compressedSources(t, dir)
	srv := serveDir(t, dir)
	_, compressed, _ := fileDigests(t, filepath.Join(dir, "qcow2.xz"))
	_, decompressed, _ := fileDigests(t, filepath.Join(dir, "qcow2-v3.qcow2"))
	if o := importFrom(t, srv.URL+"/qcow2.xz", "qcow2", "raw", "--expected-sha256="+compressed); o.code != 0 {
		t.Fatalf("the sha256 of the .xz: exit code %d: %s", o.code, o.result.Error)
	}
	o := importFrom(t, srv.URL+"/qcow2.xz", "qcow2", "raw", "--expected-sha256="+decompressed)
	expectRefused(t, o, importresult.ExitPermanent, "The sha256 checksum of the source is "+compressed)
}

func TestRefusesDecompressionBombs(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	for _, c := range testimages.Compressors {
		testimages.Bomb(t, dir, c.Name, 256<<20)
	}
	big := testimages.Bomb(t, dir, "bzip2", 2<<30)
	huge := testimages.Bomb(t, dir, "zstd", 2<<30)
	srv := serveDir(t, dir)
	for _, c := range testimages.Compressors {
		t.Run(c.Name+" past the ratio", func(t *testing.T) {
			o := importFrom(t, srv.URL+"/bomb-268435456."+c.Name, "raw", "qcow2")
			expectRefused(t, o, importresult.ExitPermanent, "times its size")
			expectReason(t, o, importresult.ReasonLimitExceeded, "--max-decompression-ratio")
		})
	}
	t.Run("a 2 KiB bzip2 of 2 GiB", func(t *testing.T) {
		if st, _ := os.Stat(big); st.Size() > 4<<10 {
			t.Fatalf("the bomb is %d bytes", st.Size())
		}
		o := importFrom(t, srv.URL+"/"+filepath.Base(big), "raw", "qcow2", "--max-image-size="+strconv.Itoa(1<<30))
		expectRefused(t, o, importresult.ExitPermanent, "--max-decompression-ratio")
	})
	t.Run("2 GiB of zstd past --max-image-size", func(t *testing.T) {
		o := importFrom(t, srv.URL+"/"+filepath.Base(huge), "raw", "qcow2", "--max-image-size="+strconv.Itoa(1<<30), "--max-decompression-ratio=0")
		expectRefused(t, o, importresult.ExitPermanent, "unpacks to more than the limit of 1073741824 bytes (--max-image-size)")
		expectReason(t, o, importresult.ReasonLimitExceeded, "")
	})
}

func TestMaxImageSizeBoundsTheUnpackedBytes(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	compressedSources(t, dir) // 8 MiB raw, compressed to well under 4 MiB
	srv := serveDir(t, dir)
	for _, c := range testimages.Compressors {
		t.Run(c.Name, func(t *testing.T) {
			o := importFrom(t, srv.URL+"/raw."+c.Ext, "raw", "raw", "--max-image-size="+strconv.Itoa(4<<20))
			expectRefused(t, o, importresult.ExitPermanent, "unpacks to more than the limit of 4194304 bytes")
		})
	}
}

func TestRefusesCorruptStreams(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	compressedSources(t, dir)
	for _, c := range testimages.Compressors {
		data, err := os.ReadFile(filepath.Join(dir, "qcow2."+c.Ext))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "truncated."+c.Ext), data[:len(data)/2], 0o644)
		data[len(data)/2] ^= 0x55
		os.WriteFile(filepath.Join(dir, "corrupt."+c.Ext), data, 0o644)
	}
	srv := serveDir(t, dir)
	for _, c := range testimages.Compressors {
		for _, kind := range []string{"truncated", "corrupt"} {
			t.Run(kind+"."+c.Ext, func(t *testing.T) {
				o := importFrom(t, srv.URL+"/"+kind+"."+c.Ext, "qcow2", "raw")
				expectRefused(t, o, importresult.ExitPermanent, "The "+c.Name+" stream is ")
				expectReason(t, o, importresult.ReasonCorruptSource, map[string]string{"truncated": "truncated", "corrupt": "corrupt"}[kind])
			})
		}
	}
	t.Run("a download that drops is not a corrupt stream", func(t *testing.T) {
		data, _ := os.ReadFile(filepath.Join(dir, "qcow2.xz"))
		s := &source{data: data}
		s.fault = halfThenDrop(s, false)
		o := importFrom(t, serve(t, "127.0.0.2", s).URL+"/qcow2.xz", "qcow2", "raw")
		expectRefused(t, o, importresult.ExitTransient, "")
		if o.result.Reason == importresult.ReasonCorruptSource {
			t.Errorf("a dropped download is blamed on the stream: %s", o.result.Error)
		}
	})
}

func TestRefusesNestedCompression(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	compressedSources(t, dir)
	testimages.Compress(t, "xz", filepath.Join(dir, "raw.gz"), filepath.Join(dir, "raw.gz.xz"))
	testimages.Compress(t, "gzip", filepath.Join(dir, "qcow2.zst"), filepath.Join(dir, "qcow2.zst.gz"))
	srv := serveDir(t, dir)
	for name, format := range map[string]string{"raw.gz.xz": "raw", "qcow2.zst.gz": "qcow2"} {
		t.Run(name, func(t *testing.T) {
			o := importFrom(t, srv.URL+"/"+name, format, "raw")
			expectRefused(t, o, importresult.ExitPermanent, "compressed data: only one level of compression is unpacked")
		})
	}
}

func TestRefusesCompressedHostileImages(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	corpus := map[string]testimages.Hostile{}
	for _, h := range testimages.HostileCorpus(t, dir) {
		corpus[h.Name] = h
	}
	cases := []struct{ hostile, tool string }{
		{"qcow2 with a backing file", "gzip"},
		{"qcow2 with a backing file", "xz"},
		{"qcow2 with an external data file", "zstd"},
		{"vmdk descriptor naming a flat extent", "bzip2"},
	}
	for i, tc := range cases {
		h := corpus[tc.hostile]
		testimages.Compress(t, tc.tool, h.Path, filepath.Join(dir, "hostile"+strconv.Itoa(i)))
	}
	srv := serveDir(t, dir)
	for i, tc := range cases {
		t.Run(tc.tool+" "+tc.hostile, func(t *testing.T) {
			h := corpus[tc.hostile]
			o := importFrom(t, srv.URL+"/hostile"+strconv.Itoa(i), h.Declared, "raw")
			expectRefused(t, o, importresult.ExitPermanent, h.Why)
		})
	}
}

func expectReason(t *testing.T, o outcome, reason, says string) {
	t.Helper()
	if o.result.Reason != reason {
		t.Errorf("reason %s, want %s (%s)", o.result.Reason, reason, o.result.Error)
	}
	if !containsFold(o.result.Error, says) {
		t.Errorf("error %q does not say %q", o.result.Error, says)
	}
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
