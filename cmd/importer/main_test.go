package main

import (
	"bytes"
	"cmp"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/testimages"
	"golang.org/x/sys/unix"
)

// The importer's contract, tested end to end in process: real HTTP servers
// on loopback, real images made by qemu-img, real qemu-img conversions.

const imageID = "0b5d0b6e-2f4a-4c3e-9a51-3b0d3c2f7a10"

// server serves dir on a loopback address of its own (127.0.0.x), so that
// tests can allow that one address and check that others are refused.
type server struct {
	*httptest.Server
	host string // ip:port
}

func serve(t *testing.T, ip string, h http.Handler) *server {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(h)
	s.Listener = l
	s.Start()
	t.Cleanup(s.Close)
	return &server{Server: s, host: l.Addr().String()}
}

func serveDir(t *testing.T, dir string) *server {
	return serve(t, "127.0.0.2", http.FileServer(http.Dir(dir)))
}

// outcome of one importer run.
type outcome struct {
	code   int
	result importresult.Result
	store  string
}

// importFrom runs the importer with the test's policy: only 127.0.0.2, on
// any port, is allowed.
func importFrom(t *testing.T, url, declared, target string, extra ...string) outcome {
	t.Helper()
	dir := t.TempDir()
	store, scratch := filepath.Join(dir, "store"), filepath.Join(dir, "scratch")
	os.Mkdir(store, 0o755)
	os.Mkdir(scratch, 0o755)
	resultFile := filepath.Join(dir, "result.json")
	args := append([]string{
		"--source=" + url, "--source-format=" + declared, "--target-format=" + target,
		"--dest=" + store, "--scratch-dir=" + scratch, "--image-id=" + imageID, "--result-file=" + resultFile,
		"--allowed-hosts=127.0.0.2", "--allowed-ports=", "--idle-timeout=2s", "--connect-timeout=2s",
	}, extra...)
	code := run(args)
	var res importresult.Result
	b, err := os.ReadFile(resultFile)
	if err != nil {
		t.Fatalf("no result file: %v", err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("result %q is not JSON: %v", b, err)
	}
	if len(b) > importresult.MaxSize {
		t.Errorf("result is %d bytes, over the termination message limit", len(b))
	}
	if entries, _ := os.ReadDir(scratch); len(entries) > 0 {
		t.Errorf("scratch space not cleaned: %v", entries)
	}
	return outcome{code: code, result: res, store: store}
}

// storeFiles lists the store; it must hold the image alone, or nothing.
func storeFiles(t *testing.T, store string) []string {
	t.Helper()
	entries, err := os.ReadDir(store)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func expectRefused(t *testing.T, o outcome, code int, why string) {
	t.Helper()
	if o.code != code {
		t.Errorf("exit code %d, want %d (result %+v)", o.code, code, o.result)
	}
	if !strings.Contains(o.result.Error, why) {
		t.Errorf("error %q does not say %q", o.result.Error, why)
	}
	if files := storeFiles(t, o.store); len(files) > 0 {
		t.Errorf("a failed import left %v in the store", files)
	}
}

func fileDigests(t *testing.T, path string) (md5sum, sha256sum, sha512sum string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sums(b)
}

func sums(b []byte) (md5sum, sha256sum, sha512sum string) {
	m, s2, s5 := md5.Sum(b), sha256.Sum256(b), sha512.Sum512(b)
	return hex.EncodeToString(m[:]), hex.EncodeToString(s2[:]), hex.EncodeToString(s5[:])
}

func TestImportsEveryFormat(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	const size = 8 << 20
	raw := testimages.Raw(t, dir, size)
	srv := serveDir(t, dir)
	sources := map[string]string{} // name -> format
	for _, v := range testimages.Variants {
		testimages.Make(t, dir, raw, v)
		sources[v.Name+"."+v.Format] = v.Format
	}
	for name, format := range sources {
		for _, target := range []string{"raw", "qcow2", format} {
			t.Run(name+"-to-"+target, func(t *testing.T) {
				o := importFrom(t, srv.URL+"/"+name, format, target)
				if o.code != 0 {
					t.Fatalf("exit code %d: %s", o.code, o.result.Error)
				}
				if files := storeFiles(t, o.store); len(files) != 1 || files[0] != imageID {
					t.Fatalf("store holds %v, want just the image", files)
				}
				stored := filepath.Join(o.store, imageID)
				// The stored disk reads the same as qemu-img's own conversion.
				testimages.QemuImg(t, "compare", "-f", diskformat.QemuFormat(format), "-F", diskformat.QemuFormat(target), filepath.Join(dir, name), stored)
				m5, s256, s512 := fileDigests(t, stored)
				_, srcSHA256, _ := fileDigests(t, filepath.Join(dir, name))
				st, _ := os.Stat(stored)
				r := o.result
				if r.ImageID != imageID || r.Size != st.Size() || r.VirtualSize != size || r.Checksum != m5 ||
					r.OSHashValue != s512 || r.OSHashAlgo != "sha512" || r.SHA256 != s256 || r.SourceSHA256 != srcSHA256 ||
					r.SourceFormat != format || r.DiskFormat != target {
					t.Errorf("result %+v does not describe the stored image (size %d, md5 %s)", r, st.Size(), m5)
				}
				if target == format {
					if srcMD5, _, _ := fileDigests(t, filepath.Join(dir, name)); srcMD5 != m5 {
						t.Error("a same-format import must store the source bytes unchanged")
					}
				}
			})
		}
	}
	t.Run("iso", func(t *testing.T) {
		testimages.ISO(t, dir, 1<<20)
		o := importFrom(t, srv.URL+"/image.iso", "iso", "iso")
		if o.code != 0 || o.result.VirtualSize != 1<<20 {
			t.Fatalf("exit code %d, result %+v", o.code, o.result)
		}
	})
}

// TestChecksumsAreTheStoredFiles: the result's checksums are what md5sum,
// sha256sum and sha512sum print for the stored file, for a sparse image of
// data, holes and zeros written out, stored as raw (converted as it
// streams, holes and all) and as qcow2 (stored as downloaded, or as
// decompressed: then the image's sha256 is not the download's). The raw
// image is the disk byte for byte, and stays sparse.
func TestChecksumsAreTheStoredFiles(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	const virtual = 24<<20 + 512 // a partial cluster at the end
	qcow2, raw := testimages.CloudLikeQcow2(t, dir, virtual, 5<<20+3)
	f, err := os.OpenFile(raw, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// zeros written out between holes, and data in the last sector
	f.WriteAt(make([]byte, 3<<20), 9<<20)
	f.WriteAt([]byte("the last sector holds data"), virtual-100)
	f.Close()
	testimages.QemuImg(t, "convert", "-f", "raw", "-O", "qcow2", raw, qcow2)
	testimages.Compress(t, "gzip", qcow2, qcow2+".gz")
	srv := serveDir(t, dir)
	for _, tc := range []struct{ source, target string }{
		{"cloud.qcow2", "raw"}, {"cloud.qcow2", "qcow2"}, {"cloud.qcow2.gz", "qcow2"},
	} {
		target := tc.target
		t.Run(tc.source+"-to-"+target, func(t *testing.T) {
			o := importFrom(t, srv.URL+"/"+tc.source, "qcow2", target)
			if o.code != 0 {
				t.Fatalf("exit code %d: %s", o.code, o.result.Error)
			}
			stored := filepath.Join(o.store, imageID)
			r := o.result
			for tool, got := range map[string]string{"md5sum": r.Checksum, "sha256sum": r.SHA256, "sha512sum": r.OSHashValue} {
				out, err := exec.Command(tool, stored).Output()
				if err != nil {
					t.Fatal(err)
				}
				if want, _, _ := strings.Cut(string(out), " "); got != want {
					t.Errorf("%s of the stored file is %s; the result says %q", tool, want, got)
				}
			}
			if target != "raw" {
				return
			}
			want, _ := os.ReadFile(raw)
			if got, _ := os.ReadFile(stored); !bytes.Equal(got, want) {
				t.Errorf("the stored image (%d bytes) is not the disk (%d bytes)", len(got), len(want))
			}
			var st unix.Stat_t
			if err := unix.Stat(stored, &st); err != nil {
				t.Fatal(err)
			}
			if st.Size != virtual || st.Blocks*512 > 12<<20 {
				t.Errorf("the raw image is %d bytes with %d allocated; want %d, sparse", st.Size, st.Blocks*512, virtual)
			}
		})
	}
}

func TestRefusesTheHostileCorpus(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	corpus := testimages.HostileCorpus(t, dir)
	srv := serveDir(t, dir)
	// The unpacker refuses these before the inspector sees them.
	unpackerWhy := map[string]string{"gzip declared as raw": "The gzip stream is truncated"}
	for _, h := range corpus {
		t.Run(h.Name, func(t *testing.T) {
			rel, _ := filepath.Rel(dir, h.Path)
			o := importFrom(t, srv.URL+"/"+rel, h.Declared, "raw", "--max-virtual-size="+strconv.Itoa(1<<40))
			expectRefused(t, o, importresult.ExitPermanent, cmp.Or(unpackerWhy[h.Name], h.Why))
			t.Logf("%s: %s", o.result.Reason, o.result.Error)
		})
	}
}

func TestRefusesHostileURLs(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	testimages.Raw(t, dir, 1<<20)
	// The redirector is allowed (127.0.0.2); where it redirects is not.
	redirector := serve(t, "127.0.0.2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	}))
	victim := serveDir(t, dir) // 127.0.0.2 too: reachable only directly
	_, port, _ := net.SplitHostPort(victim.host)
	cases := []struct{ name, url, why string }{
		{"redirect to 127.0.0.1", redirector.URL + "/?to=http://127.0.0.1:" + port + "/source.raw", "Redirect to disallowed URL"},
		{"redirect to the metadata service", redirector.URL + "/?to=http://169.254.169.254/latest/meta-data/", "Redirect to disallowed URL: http://169.254.169.254/latest/meta-data/"},
		{"redirect to [::1]", redirector.URL + "/?to=http://[::1]:" + port + "/source.raw", "Redirect to disallowed URL"},
		{"redirect to 0x7f000001", redirector.URL + "/?to=http://0x7f000001:" + port + "/source.raw", "numeric or shorthand"},
		{"redirect to 2130706433", redirector.URL + "/?to=http://2130706433:" + port + "/source.raw", "numeric or shorthand"},
		{"redirect to file://", redirector.URL + "/?to=file:///etc/passwd", "Redirect to disallowed URL"},
		{"127.0.0.1 directly", "http://127.0.0.1:" + port + "/source.raw", "URI for import does not pass filtering"},
		{"2130706433 directly", "http://2130706433:" + port + "/source.raw", "numeric or shorthand"},
		{"[::1] directly", "http://[::1]:" + port + "/source.raw", "not in the allowed hosts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectRefused(t, importFrom(t, tc.url, "raw", "raw"), importresult.ExitPermanent, tc.why)
		})
	}
	t.Run("a name that resolves to loopback", func(t *testing.T) {
		// localhost passes the URL check (it is an allowed name) but
		// resolves to 127.0.0.1, which the dialer refuses.
		o := importFrom(t, "http://localhost:"+port+"/source.raw", "raw", "raw", "--allowed-hosts=127.0.0.2,localhost")
		expectRefused(t, o, importresult.ExitPermanent, "is loopback")
	})
	t.Run("the victim is fine when reached directly", func(t *testing.T) {
		if o := importFrom(t, victim.URL+"/source.raw", "raw", "raw"); o.code != 0 {
			t.Fatalf("exit code %d: %s", o.code, o.result.Error)
		}
	})
}
