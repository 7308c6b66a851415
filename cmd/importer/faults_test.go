package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/sandbox"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// TestMain lets a test run the importer as a child process, to kill it,
// and lets the importer, in process or not, launch the sandboxed qemu-img.
func TestMain(m *testing.M) {
	sandbox.Main()
	if os.Getenv("IMPORTER_TEST_RUN_MAIN") == "1" {
		os.Exit(dispatch(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// source is an image served with faults.
type source struct {
	data     []byte
	requests atomic.Int32
	// fault decides, per request number (1, 2, ...), what goes wrong.
	fault func(n int32, w http.ResponseWriter, r *http.Request) bool
}

func (s *source) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	w.Header().Set("ETag", `"v1"`)
	if s.fault != nil && s.fault(n, w, r) {
		return
	}
	http.ServeContent(w, r, "image", time.Unix(0, 0), bytes.NewReader(s.data))
}

func newSource(t *testing.T) *source {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(testimages.Raw(t, dir, 4<<20))
	if err != nil {
		t.Fatal(err)
	}
	return &source{data: data}
}

// halfThenDrop sends the headers and half the body, then drops the connection.
func halfThenDrop(s *source, ranges bool) func(int32, http.ResponseWriter, *http.Request) bool {
	return func(n int32, w http.ResponseWriter, r *http.Request) bool {
		if n > 1 {
			return false
		}
		if !ranges {
			w.Header().Del("ETag")
		} else {
			w.Header().Set("Accept-Ranges", "bytes")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
		w.Write(s.data[:len(s.data)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the server resets the connection
	}
}

func TestServerFaults(t *testing.T) {
	testimages.RequireQemuImg(t)
	cases := []struct {
		name   string
		fault  func(s *source) func(int32, http.ResponseWriter, *http.Request) bool
		code   int
		reason string
		why    string
	}{{
		name:   "connection reset mid-stream, no ranges",
		fault:  func(s *source) func(int32, http.ResponseWriter, *http.Request) bool { return halfThenDrop(s, false) },
		code:   importresult.ExitTransient,
		reason: importresult.ReasonNetworkError,
		why:    "failed",
	}, {
		name: "a stall",
		fault: func(s *source) func(int32, http.ResponseWriter, *http.Request) bool {
			return func(_ int32, w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
				w.Write(s.data[:len(s.data)/2])
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
				return true
			}
		},
		code:   importresult.ExitTransient,
		reason: importresult.ReasonTimeout,
		why:    "sent nothing for 2s",
	}, {
		name: "HTTP 500",
		fault: func(*source) func(int32, http.ResponseWriter, *http.Request) bool {
			return func(_ int32, w http.ResponseWriter, _ *http.Request) bool { w.WriteHeader(500); return true }
		},
		code:   importresult.ExitTransient,
		reason: importresult.ReasonNetworkError,
		why:    "answered HTTP 500 Internal Server Error",
	}, {
		name: "HTTP 404",
		fault: func(*source) func(int32, http.ResponseWriter, *http.Request) bool {
			return func(_ int32, w http.ResponseWriter, r *http.Request) bool { http.NotFound(w, r); return true }
		},
		code:   importresult.ExitPermanent,
		reason: importresult.ReasonSourceError,
		why:    "answered HTTP 404 Not Found",
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newSource(t)
			src.fault = tc.fault(src)
			srv := serve(t, "127.0.0.2", src)
			o := importFrom(t, srv.URL+"/image", "raw", "raw")
			expectRefused(t, o, tc.code, tc.why)
			if o.result.Reason != tc.reason {
				t.Errorf("reason %q, want %q", o.result.Reason, tc.reason)
			}
		})
	}
}

func TestResumesAfterAReset(t *testing.T) {
	src := newSource(t)
	src.fault = halfThenDrop(src, true)
	srv := serve(t, "127.0.0.2", src)
	o := importFrom(t, srv.URL+"/image", "raw", "raw")
	if o.code != 0 {
		t.Fatalf("exit code %d: %s", o.code, o.result.Error)
	}
	stored, _ := os.ReadFile(filepath.Join(o.store, imageID))
	if !bytes.Equal(stored, src.data) {
		t.Fatal("the resumed image differs from the source")
	}
	if n := src.requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (the first, and one Range request)", n)
	}
	if o.result.BytesTransferred != int64(len(src.data)) {
		t.Errorf("bytes transferred %d, want %d", o.result.BytesTransferred, len(src.data))
	}
}

func TestFailsThenSucceedsOnRetry(t *testing.T) {
	src := newSource(t)
	src.fault = func(n int32, w http.ResponseWriter, _ *http.Request) bool {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		return n == 1
	}
	srv := serve(t, "127.0.0.2", src)
	expectRefused(t, importFrom(t, srv.URL+"/image", "raw", "raw"), importresult.ExitTransient, "HTTP 503")
	if o := importFrom(t, srv.URL+"/image", "raw", "raw"); o.code != 0 {
		t.Fatalf("the retry failed: %d %s", o.code, o.result.Error)
	}
}

func TestChecksums(t *testing.T) {
	src := newSource(t)
	srv := serve(t, "127.0.0.2", src)
	_, sha, _ := sums(src.data)
	if o := importFrom(t, srv.URL+"/image", "raw", "raw", "--expected-sha256="+strings.ToUpper(sha)); o.code != 0 {
		t.Fatalf("a matching checksum failed: %s", o.result.Error)
	}
	o := importFrom(t, srv.URL+"/image", "raw", "raw", "--expected-md5="+strings.Repeat("0", 32))
	expectRefused(t, o, importresult.ExitPermanent, "The md5 checksum of the source is")
	if o.result.Reason != importresult.ReasonChecksumMismatch {
		t.Errorf("reason %q", o.result.Reason)
	}
}

func TestCredentialsStayWithTheirOrigin(t *testing.T) {
	src := newSource(t)
	var leaked atomic.Bool
	other := serve(t, "127.0.0.3", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store(r.Header.Get("Authorization") != "")
		http.ServeContent(w, r, "image", time.Unix(0, 0), bytes.NewReader(src.data))
	}))
	origin := serve(t, "127.0.0.2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "glance" || pass != "s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, other.URL+"/image", http.StatusFound)
	}))
	creds := t.TempDir()
	os.WriteFile(filepath.Join(creds, "username"), []byte("glance\n"), 0o600)
	os.WriteFile(filepath.Join(creds, "password"), []byte("s3cret"), 0o600)

	o := importFrom(t, origin.URL+"/image", "raw", "raw", "--allowed-hosts=127.0.0.2,127.0.0.3")
	expectRefused(t, o, importresult.ExitPermanent, "answered HTTP 401 Unauthorized")

	o = importFrom(t, origin.URL+"/image", "raw", "raw", "--allowed-hosts=127.0.0.2,127.0.0.3", "--credentials-dir="+creds)
	if o.code != 0 {
		t.Fatalf("exit code %d: %s", o.code, o.result.Error)
	}
	if leaked.Load() {
		t.Error("the credentials followed a redirect to another origin")
	}
}

// TestKillMidImportLeavesNothing kills the importer (SIGKILL) while it
// downloads and checks that the store holds no trace, then imports again.
func TestKillMidImportLeavesNothing(t *testing.T) {
	src := newSource(t)
	var stall atomic.Bool
	stall.Store(true)
	sent := make(chan struct{}, 1)
	src.fault = func(_ int32, w http.ResponseWriter, r *http.Request) bool {
		if !stall.Load() {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(src.data)))
		w.Write(src.data[:len(src.data)/2])
		w.(http.Flusher).Flush()
		sent <- struct{}{}
		<-r.Context().Done()
		return true
	}
	srv := serve(t, "127.0.0.2", src)
	store := t.TempDir()
	args := []string{"--source=" + srv.URL + "/image", "--source-format=raw", "--target-format=raw", "--dest=" + store,
		"--image-id=" + imageID, "--result-file=" + filepath.Join(t.TempDir(), "r"), "--allowed-hosts=127.0.0.2", "--allowed-ports="}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "IMPORTER_TEST_RUN_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("the importer never fetched")
	}
	time.Sleep(200 * time.Millisecond) // let it write what it got
	cmd.Process.Kill()
	cmd.Wait()
	if files := storeFiles(t, store); len(files) > 0 {
		t.Fatalf("a killed import left %v in the store", files)
	}

	stall.Store(false)
	again := exec.Command(os.Args[0], args...)
	again.Env = cmd.Env
	if out, err := again.CombinedOutput(); err != nil {
		t.Fatalf("the import after the kill failed: %v\n%s", err, out)
	}
	if files := storeFiles(t, store); len(files) != 1 || files[0] != imageID {
		t.Fatalf("store holds %v, want the image alone", files)
	}
}

// TestRemovesWhatAKilledConversionLeft: a named staging file (qemu-img's
// output, which must have a path) outlives a kill; the next attempt at the
// same image removes it.
func TestRemovesWhatAKilledConversionLeft(t *testing.T) {
	testimages.RequireQemuImg(t)
	dir := t.TempDir()
	raw := testimages.Raw(t, dir, 1<<20)
	testimages.Make(t, dir, raw, testimages.Variants[1])
	srv := serveDir(t, dir)
	store := t.TempDir()
	leftover := filepath.Join(store, "."+imageID+".partial-123")
	os.WriteFile(leftover, []byte("half an image"), 0o600)
	code := run([]string{"--source=" + srv.URL + "/qcow2-v3.qcow2", "--source-format=qcow2", "--target-format=raw",
		"--dest=" + store, "--scratch-dir=" + t.TempDir(), "--image-id=" + imageID,
		"--result-file=" + filepath.Join(t.TempDir(), "r"), "--allowed-hosts=127.0.0.2", "--allowed-ports="})
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if files := storeFiles(t, store); len(files) != 1 || files[0] != imageID {
		t.Fatalf("store holds %v, want the image alone", files)
	}
}
