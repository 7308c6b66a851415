package imageexport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

const testToken = "a token only the shim knows"

func tokenSHA256(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// serve runs a Server on a loopback port over dir and returns its URL.
func serve(t *testing.T, dir string, idle time.Duration) (string, <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Dir: dir, TokenSHA256: tokenSHA256(testToken), IdleTimeout: idle, Log: logr.Discard()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(cancel)
	return "http://" + l.Addr().String(), done
}

func get(t *testing.T, url, token, rangeHeader string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func TestServerServesImagesToTheTokenHolderOnly(t *testing.T) {
	dir := t.TempDir()
	data := []byte("0123456789abcdef")
	for name, content := range map[string][]byte{"img-1": data, ".img-2.partial-x": []byte("staging")} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(dir), "outside"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	url, _ := serve(t, dir, time.Minute)

	if resp, body := get(t, url+"/images/img-1", testToken, ""); resp.StatusCode != 200 || string(body) != string(data) ||
		resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body := get(t, url+"/images/img-1", testToken, "bytes=4-7"); resp.StatusCode != 206 || string(body) != "4567" ||
		resp.Header.Get("Content-Range") != "bytes 4-7/16" {
		t.Fatalf("range GET: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, _ := get(t, url+"/images/img-1", testToken, "bytes=99-"); resp.StatusCode != 416 {
		t.Fatalf("unsatisfiable range: %d, want 416", resp.StatusCode)
	}
	for _, bad := range []string{"", "wrong", testToken + "x", tokenSHA256(testToken)} {
		if resp, body := get(t, url+"/images/img-1", bad, ""); resp.StatusCode != 401 || string(body) == string(data) {
			t.Errorf("token %q: %d, want 401", bad, resp.StatusCode)
		}
	}
	for _, path := range []string{"/images/.img-2.partial-x", "/images/../outside", "/images/%2e%2e%2foutside", "/images/sub", "/images/missing", "/elsewhere", "/images/"} {
		if resp, body := get(t, url+path, testToken, ""); resp.StatusCode != 404 {
			t.Errorf("%s: %d %q, want 404", path, resp.StatusCode, body)
		}
	}
	if resp, _ := get(t, url+"/healthz", "", ""); resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}

func TestServerExitsWhenIdle(t *testing.T) {
	url, done := serve(t, t.TempDir(), 300*time.Millisecond)
	get(t, url+"/images/none", testToken, "")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not exit once idle")
	}
}

func TestServerRefusesABadTokenHash(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := &Server{Dir: t.TempDir(), TokenSHA256: "abc", IdleTimeout: time.Minute, Log: logr.Discard()}
	if err := s.Serve(context.Background(), l); err == nil {
		t.Fatal("served with a token hash that is not 64 hex digits")
	}
}

// A download slower than the idle timeout is never cut: the server waits
// for it to end before it exits.
func TestServerDoesNotExitDuringADownload(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 16<<20)
	if err := os.WriteFile(filepath.Join(dir, "img"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	url, done := serve(t, dir, 200*time.Millisecond)
	req, _ := http.NewRequest(http.MethodGet, url+"/images/img", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start, n := time.Now(), 0
	buf := make([]byte, 256<<10)
	for {
		k, err := resp.Body.Read(buf)
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n != len(data) || time.Since(start) < time.Second {
		t.Fatalf("read %d of %d bytes in %s", n, len(data), time.Since(start))
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not exit once the download ended and it was idle")
	}
}
