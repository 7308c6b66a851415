package unpack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imageimport/image-import-operator/internal/sandbox"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// xz run in the sandbox, and the Go decoders every format falls back to:
// the same bytes out, the same refusals.

func requireChildren(t *testing.T) {
	t.Helper()
	if sandbox.ABI() == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the kernel has no Landlock; CI machines must have it")
		}
		t.Skip("the kernel has no Landlock: the decompressors cannot run sandboxed")
	}
	testimages.RequireTool(t, "xz")
}

// decoders runs f once with the sandboxed decompressors and once with the
// Go decoders, and says which decoder each format must get.
func decoders(t *testing.T, f func(t *testing.T, want func(format string) string)) {
	t.Run("sandboxed", func(t *testing.T) {
		requireChildren(t)
		f(t, func(format string) string {
			if tl, ok := tools[format]; ok {
				return "sandboxed " + tl.program
			}
			return "Go"
		})
	})
	t.Run("Go", func(t *testing.T) {
		inProcess.Store(true)
		defer inProcess.Store(false)
		f(t, func(string) string { return "Go" })
	})
}

func TestBothDecodersGiveTheSameBytes(t *testing.T) {
	dir := t.TempDir()
	// Not a disk, but bytes that compress as a disk's data does, and zeros.
	data := append(bytes.Repeat([]byte("a disk image's data, "), 200_000), make([]byte, 3<<20)...)
	raw := filepath.Join(dir, "data")
	os.WriteFile(raw, data, 0o644)
	files := map[string]string{}
	for _, c := range testimages.Compressors {
		files[c.Name] = testimages.Compress(t, c.Name, raw, filepath.Join(dir, "data."+c.Ext))
	}
	decoders(t, func(t *testing.T, want func(string) string) {
		for _, c := range testimages.Compressors {
			t.Run(c.Name, func(t *testing.T) {
				src, _ := os.ReadFile(files[c.Name])
				var out bytes.Buffer
				rep, err := Stream(bytes.NewReader(src), &out, Options{MaxRatio: 1000, MaxSize: 64 << 20})
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out.Bytes(), data) || rep.Decoder != want(c.Name) || rep.Compression != c.Name ||
					rep.CompressedSize != int64(len(src)) || rep.UncompressedSize != int64(len(data)) || rep.SourceSize != int64(len(src)) {
					t.Errorf("report %+v; %d bytes out, want %d by the %s decoder", rep, out.Len(), len(data), want(c.Name))
				}
			})
		}
	})
}

// byCompressor reads the file that make writes with each compressor.
func byCompressor(t *testing.T, make func(tool string) string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, c := range testimages.Compressors {
		b, err := os.ReadFile(make(c.Name))
		if err != nil {
			t.Fatal(err)
		}
		files[c.Name] = b
	}
	return files
}

func TestBothDecodersRefuseBombs(t *testing.T) {
	dir := t.TempDir()
	bombs := byCompressor(t, func(tool string) string { return testimages.Bomb(t, dir, tool, 512<<20) })
	decoders(t, func(t *testing.T, want func(string) string) {
		for _, c := range testimages.Compressors {
			for _, tc := range []struct {
				name string
				opt  Options
				kind Kind
				stop int64
			}{
				{"size", Options{MaxSize: 100 << 20}, TooLarge, 100 << 20},
				{"ratio", Options{MaxRatio: 1000}, Bomb, RatioGrace},
			} {
				t.Run(c.Name+"/"+tc.name, func(t *testing.T) {
					w := &chunked{}
					start := time.Now()
					rep, err := Stream(bytes.NewReader(bombs[c.Name]), w, tc.opt)
					var refusal *Error
					if !errors.As(err, &refusal) || refusal.Kind != tc.kind {
						t.Fatalf("err %v, want a refusal of kind %d", err, tc.kind)
					}
					stop := tc.stop
					if tc.kind == Bomb && rep.Decoder != "Go" {
						// xz reads a few blocks ahead of what it decodes,
						// and they count: here the whole 79 KiB bomb.
						stop = max(stop, 1000*int64(len(bombs[c.Name])))
					}
					if w.n > stop+2<<20 || rep.Size > stop+2<<20 || rep.Decoder != want(c.Name) {
						t.Errorf("wrote %d bytes (report %+v) for a limit at %d", w.n, rep, tc.stop)
					}
					noChildLeft(t)
					t.Logf("refused in %v", time.Since(start))
				})
			}
		}
	})
}

func TestBothDecodersRefuseCorruptAndTruncatedStreams(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7 / 3) // compressible, with no long runs
	}
	raw := filepath.Join(dir, "data")
	os.WriteFile(raw, data, 0o644)
	files := map[string][]byte{}
	for _, c := range testimages.Compressors {
		files[c.Name], _ = os.ReadFile(testimages.Compress(t, c.Name, raw, filepath.Join(dir, "data."+c.Ext)))
	}
	decoders(t, func(t *testing.T, want func(string) string) {
		for _, c := range testimages.Compressors {
			src := files[c.Name]
			corrupt := bytes.Clone(src)
			corrupt[len(corrupt)/2] ^= 0x55
			for _, tc := range []struct {
				name, says string
				src        []byte
			}{
				{"truncated", "truncated", src[:len(src)/2]},
				{"corrupt", "corrupt", corrupt},
				{"trailing garbage", "corrupt", append(bytes.Clone(src), "garbage after the stream"...)},
			} {
				t.Run(c.Name+"/"+tc.name, func(t *testing.T) {
					rep, err := Stream(bytes.NewReader(tc.src), io.Discard, Options{})
					var refusal *Error
					if !errors.As(err, &refusal) || refusal.Kind != Corrupt || !strings.HasPrefix(refusal.Reason, "The "+c.Name+" stream is ") || !strings.Contains(refusal.Reason, tc.says) {
						t.Fatalf("err %v, want a corrupt stream", err)
					}
					if rep.Decoder != want(c.Name) {
						t.Errorf("decoded by %s, want %s", rep.Decoder, want(c.Name))
					}
					noChildLeft(t)
					t.Log(err)
				})
			}
			t.Run(c.Name+"/the download fails", func(t *testing.T) {
				dropped := errors.New("connection reset")
				r := io.MultiReader(bytes.NewReader(src[:len(src)/2]), &failing{dropped})
				if _, err := Stream(r, io.Discard, Options{}); err != dropped {
					t.Errorf("err %v, want the source's", err)
				}
			})
		}
	})
}

// A decompressor that fails for want of memory, or is killed, is the
// node's trouble: not a refusal of the stream, which another try may
// import.
func TestADecompressorsOwnFailureIsNotACorruptStream(t *testing.T) {
	requireChildren(t)
	src, _ := os.ReadFile(testimages.Compress(t, "xz", testimages.Raw(t, t.TempDir(), 1<<20), filepath.Join(t.TempDir(), "image.xz")))
	for _, tc := range []struct{ name, script, says string }{
		{"out of memory", `echo "xz: (stdin): Cannot allocate memory" >&2; exit 1`, "Cannot allocate memory"},
		{"killed", `kill -KILL $$`, "signal: killed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer swapTool("xz", tool{program: "sh", args: func() []string { return []string{"-c", tc.script} }, outOfMemory: saysOutOfMemory})()
			_, err := Stream(bytes.NewReader(src), io.Discard, Options{})
			var (
				failed  *ChildError
				refusal *Error
			)
			if !errors.As(err, &failed) || errors.As(err, &refusal) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err %v, want the sandboxed decompressor's failure", err)
			}
		})
	}
	t.Run("a decompressor's error on its input is a corrupt stream", func(t *testing.T) {
		defer swapTool("xz", tool{program: "sh", args: func() []string { return []string{"-c", `echo "xz: (stdin): Compressed data is corrupt" >&2; exit 1`} }, outOfMemory: saysOutOfMemory})()
		_, err := Stream(bytes.NewReader(src), io.Discard, Options{})
		var refusal *Error
		if !errors.As(err, &refusal) || refusal.Kind != Corrupt || !strings.Contains(err.Error(), "Compressed data is corrupt)") {
			t.Fatalf("err %v, want a corrupt stream in xz's words", err)
		}
	})
}

func TestFallsBackToGoWhereNoDecompressorCanRun(t *testing.T) {
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 1<<20)
	want, _ := os.ReadFile(raw)
	src, _ := os.ReadFile(testimages.Compress(t, "xz", raw, filepath.Join(dir, "image.xz")))
	check := func(t *testing.T) {
		var out bytes.Buffer
		rep, err := Stream(bytes.NewReader(src), &out, Options{})
		if err != nil || rep.Decoder != "Go" || !bytes.Equal(out.Bytes(), want) {
			t.Errorf("err %v, decoder %q, %d bytes; want the Go decoder's %d bytes", err, rep.Decoder, out.Len(), len(want))
		}
	}
	t.Run("not installed", func(t *testing.T) {
		defer swapTool("xz", tool{program: "xz-is-not-installed", args: func() []string { return nil }, outOfMemory: saysOutOfMemory})()
		check(t)
	})
	t.Run("no sandbox", func(t *testing.T) {
		defer func(old func() bool) { canLaunch = old }(canLaunch)
		canLaunch = func() bool { return false }
		check(t)
	})
}

// The decompressors are confined: no file but their program and libraries.
// (The sandbox's own tests cover the rest: no socket, no environment.)
func TestADecompressorIsConfined(t *testing.T) {
	requireChildren(t)
	src, _ := os.ReadFile(testimages.Compress(t, "xz", testimages.Raw(t, t.TempDir(), 1<<20), filepath.Join(t.TempDir(), "image.xz")))
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("a secret of the node's\n"), 0o600)
	// Built-ins only: sh itself opens the files, and writes what it read
	// as the decompressed stream.
	defer swapTool("xz", tool{program: "sh", args: func() []string {
		return []string{"-c", `for f in ` + secret + ` /etc/passwd; do read -r s < $f && echo "$s"; done; exit 0`}
	}, outOfMemory: saysOutOfMemory})()
	var out bytes.Buffer
	_, err := Stream(bytes.NewReader(src), &out, Options{})
	if err != nil || strings.Contains(out.String(), "secret") || strings.Contains(out.String(), "root:") {
		t.Fatalf("the decompressor read %q (%v)", out.Bytes(), err)
	}
}

func swapTool(format string, t tool) func() {
	old := tools[format]
	tools[format] = t
	return func() { tools[format] = old }
}

// noChildLeft fails when a child of this process still runs: a refusal
// stops the decompressor it no longer reads.
func noChildLeft(t *testing.T) {
	t.Helper()
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, pid := range strings.Fields(string(b)) {
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			if _, err := strconv.Atoi(pid); err == nil {
				t.Errorf("child %s (%s) still runs", pid, strings.TrimSpace(string(comm)))
			}
		}
	}
}

// Every byte a compressed OVA unpacks to counts against the limits, not
// only the disk's: the entries the OVA reader skips are decompressed all
// the same (a few hundred KiB of junk entry would cost hours of CPU).
func TestBothDecodersBoundEveryByteOfAnOVA(t *testing.T) {
	dir := t.TempDir()
	disk := bytes.Repeat([]byte("disk"), 4096)
	bombs := byCompressor(t, func(tool string) string { return testimages.OVABomb(t, dir, tool, disk, 192<<20) })
	decoders(t, func(t *testing.T, want func(string) string) {
		for _, c := range testimages.Compressors {
			for _, tc := range []struct {
				name string
				opt  Options
				kind Kind
			}{
				{"size", Options{OVA: true, MaxSize: 100 << 20}, TooLarge},
				{"ratio", Options{OVA: true, MaxRatio: 1000}, Bomb},
			} {
				t.Run(c.Name+"/"+tc.name, func(t *testing.T) {
					w := &chunked{}
					rep, err := Stream(bytes.NewReader(bombs[c.Name]), w, tc.opt)
					var refusal *Error
					if !errors.As(err, &refusal) || refusal.Kind != tc.kind {
						t.Fatalf("err %v, want a refusal of kind %d", err, tc.kind)
					}
					if w.n != int64(len(disk)) || rep.Decoder != want(c.Name) {
						t.Errorf("wrote %d bytes, want the disk's %d; report %+v", w.n, len(disk), rep)
					}
					noChildLeft(t)
				})
			}
		}
	})
}

// A compressed OVA is read to the end of its stream, where its decoder
// checks the stream's checksum: the tar ends before, and a stream whose
// checksum does not match may hold a changed disk.
func TestBothDecodersCheckACompressedOVAsChecksum(t *testing.T) {
	dir, disk := ovaFixtures(t)
	// A byte of each format's last checksum: gzip's ISIZE, xz's stream
	// footer, zstd's content checksum, bzip2's stream CRC.
	fromEnd := map[string]int{"gzip": 1, "xz": 6, "zstd": 1, "bzip2": 2}
	files := map[string][]byte{}
	for _, c := range testimages.Compressors {
		files[c.Name], _ = os.ReadFile(testimages.Compress(t, c.Name, filepath.Join(dir, "good.ova"), filepath.Join(dir, "good.ova."+c.Ext)))
	}
	decoders(t, func(t *testing.T, want func(string) string) {
		for _, c := range testimages.Compressors {
			t.Run(c.Name, func(t *testing.T) {
				var out bytes.Buffer
				rep, err := Stream(bytes.NewReader(files[c.Name]), &out, Options{OVA: true})
				if err != nil || !bytes.Equal(out.Bytes(), disk) || rep.CompressedSize != int64(len(files[c.Name])) || rep.Decoder != want(c.Name) {
					t.Fatalf("the OVA: %v, report %+v", err, rep)
				}
				bad := bytes.Clone(files[c.Name])
				bad[len(bad)-fromEnd[c.Name]] ^= 0x10
				_, err = Stream(bytes.NewReader(bad), io.Discard, Options{OVA: true})
				var refusal *Error
				if !errors.As(err, &refusal) || refusal.Kind != Corrupt {
					t.Errorf("a changed checksum: err %v, want a corrupt stream", err)
				}
				noChildLeft(t)
			})
		}
	})
}

// A stream that needs a larger window than the importer decodes with is
// refused as such, naming the limit, rather than called corrupt.
func TestBothDecodersRefuseAWindowOverTheLimit(t *testing.T) {
	testimages.RequireTool(t, "zstd", "xz")
	data := bytes.Repeat([]byte("window "), 1<<16)
	zst := run(t, data, "zstd", "-c", "-q", "--long=28")                 // from a pipe: no content size shrinks the window
	xz := withXZDictionary(t, run(t, data, "xz", "-c", "-T1", "-0"), 32) // 256 MiB
	// A frame that tells its content size is one segment, its window that
	// size: what `zstd --long=31 disk.img` makes of a 200 MiB disk.
	segment := run(t, nil, "bash", "-o", "pipefail", "-c", "head -c 209715200 /dev/zero | zstd -c -q --long=31 --stream-size=209715200")
	decoders(t, func(t *testing.T, want func(string) string) {
		for name, src := range map[string][]byte{"zstd": zst, "zstd/single segment": segment, "xz": xz} {
			t.Run(name, func(t *testing.T) {
				rep, err := Stream(bytes.NewReader(src), io.Discard, Options{})
				var refusal *Error
				if !errors.As(err, &refusal) || refusal.Kind != Demanding || !strings.Contains(err.Error(), "window of more than 128 MiB") {
					t.Fatalf("err %v, want a window over the limit", err)
				}
				if rep.Decoder != want(strings.Split(name, "/")[0]) {
					t.Errorf("decoded by %s, want %s", rep.Decoder, want(name))
				}
				noChildLeft(t)
			})
		}
	})
}

// run pipes data through a program and returns what it writes.
func run(t *testing.T, data []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out
}

// withXZDictionary rewrites the LZMA2 dictionary size that the first block
// header of a single-threaded xz stream declares (its property byte, 0 to
// 40), and the header's CRC32: a stream that asks for a dictionary that
// compressing would have needed gigabytes for.
func withXZDictionary(t *testing.T, stream []byte, prop byte) []byte {
	t.Helper()
	b := bytes.Clone(stream)
	const start = 12 // after the stream header
	size := (int(b[start]) + 1) * 4
	flags := b[start+1]
	if flags != 0 || b[start+2] != 0x21 || b[start+3] != 1 { // no sizes, one filter: LZMA2, one property byte
		t.Fatalf("not a block header of xz -T1: % x", b[start:start+size])
	}
	b[start+4] = prop
	binary.LittleEndian.PutUint32(b[start+size-4:], crc32.ChecksumIEEE(b[start:start+size-4]))
	return b
}
