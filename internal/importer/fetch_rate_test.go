package importer

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

// download runs the importer's fetch path (URL policy, fetcher, fanout)
// against url, with cfg's limits, and throws the bytes away.
func download(t *testing.T, cfg Config, url string) (fetched, error) {
	t.Helper()
	cfg.Source, cfg.SourceFormat, cfg.TargetFormat = url, diskformat.Raw, diskformat.Raw
	if cfg.Policy.AllowedSchemes == nil {
		cfg.Policy = urlpolicy.Policy{AllowedSchemes: []string{"http"}, AllowedHosts: []string{"127.0.0.1"}}
	}
	cfg.ConnectTimeout = cmp.Or(cfg.ConnectTimeout, 2*time.Second)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, 2*time.Second)
	policy, u, err := cfg.validate()
	if err != nil {
		return fetched{}, err
	}
	f, err := newFetcher(&cfg, policy)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	track := startTracker(nil)
	defer track.close()
	sink := newFanout(nil, io.Discard)
	got, err := f.fetch(ctx, u, sink, track)
	return got, errors.Join(err, sink.Close())
}

// trickle serves size bytes, chunk bytes every interval, with a
// Content-Length: a source that is slow on purpose (or a slow link).
func trickle(t *testing.T, size, chunk int, interval time.Duration) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.WriteHeader(http.StatusOK)
		buf := make([]byte, chunk)
		for sent := 0; sent < size; sent += chunk {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(interval):
			}
			w.Write(buf[:min(chunk, size-sent)])
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/image"
}

// TestMinimumTransferRate: a source that sends a byte well within every
// idle timeout, forever, fails once a window has averaged less than the
// minimum rate; a slow but steady or bursty source does not.
func TestMinimumTransferRate(t *testing.T) {
	// Scaled down 60x from the defaults (1 KiB/s over 60 s, idle 60 s):
	// the window is 1 s, the idle timeout 2 s.
	limits := Config{MinTransferRate: 1024, TransferRateWindow: time.Second, IdleTimeout: 2 * time.Second}

	t.Run("a byte every 100ms, under the idle timeout, is too slow", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		// 80 bytes at 10 bytes/s: 8 s if nothing stops it.
		_, err := download(t, limits, trickle(t, 80, 1, 100*time.Millisecond))
		var f *Failure
		if !errors.As(err, &f) {
			t.Fatalf("the trickle was downloaded whole in %s (err %v), want a failure for its rate", time.Since(start).Round(time.Millisecond), err)
		}
		t.Logf("failed after %s: %s", time.Since(start).Round(time.Millisecond), f.Message)
		if f.Permanent || f.Reason != importresult.ReasonTimeout {
			t.Errorf("failure %+v, want a transient %s", f, importresult.ReasonTimeout)
		}
		if !strings.Contains(f.Message, "below the minimum transfer rate of 1024 bytes/s averaged over 1s") {
			t.Errorf("message %q does not name the rate", f.Message)
		}
		if time.Since(start) > 6*time.Second { // 1 s window + a step; generous under load
			t.Errorf("took %s to notice", time.Since(start))
		}
	})

	t.Run("a steady 40 KiB/s passes", func(t *testing.T) {
		t.Parallel()
		got, err := download(t, limits, trickle(t, 80<<10, 2<<10, 50*time.Millisecond))
		if err != nil || got.size != 80<<10 {
			t.Fatalf("got %d bytes, err %v", got.size, err)
		}
	})

	t.Run("bursts with pauses shorter than the window pass", func(t *testing.T) {
		t.Parallel()
		// 16 KiB, then 400 ms of silence, four times: every 1 s window holds
		// two bursts, or one if the machine is slow to wake the server.
		got, err := download(t, limits, trickle(t, 64<<10, 16<<10, 400*time.Millisecond))
		if err != nil || got.size != 64<<10 {
			t.Fatalf("got %d bytes, err %v", got.size, err)
		}
	})

	t.Run("no minimum when the rate is 0", func(t *testing.T) {
		t.Parallel()
		off := limits
		off.MinTransferRate = 0
		got, err := download(t, off, trickle(t, 15, 1, 100*time.Millisecond))
		if err != nil || got.size != 15 {
			t.Fatalf("got %d bytes, err %v", got.size, err)
		}
	})
}

// TestMaxImageSize: a source over the limit is refused, whether it says so
// in its Content-Length or not.
func TestMaxImageSize(t *testing.T) {
	body := strings.Repeat("x", 4096)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.(http.Flusher).Flush() // no Content-Length: the size shows only as it comes
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		io.WriteString(w, body)
	}))
	defer srv.Close()
	for _, path := range []string{"/length", "/chunked"} {
		_, err := download(t, Config{MaxImageSize: 4095}, srv.URL+path)
		var f *Failure
		if !errors.As(err, &f) || !f.Permanent || !strings.Contains(f.Message, "larger than the limit of 4095 bytes") {
			t.Errorf("%s: %v, want a permanent refusal over the limit", path, err)
		}
		if got, err := download(t, Config{MaxImageSize: 4096}, srv.URL+path); err != nil || got.size != 4096 {
			t.Errorf("%s at the limit: %d bytes, %v", path, got.size, err)
		}
	}
}
