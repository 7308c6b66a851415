// Package imageexport is the program of an export pod: it serves the image
// store, mounted read-only, to the holder of a bearer token, for the Glance
// shim, which does not mount the store (package exportpods starts export
// pods and reads through them). It exits once idle.
//
// Only the shim may read: the pod's command line holds the sha256 of the
// token, never the token, so reading the pod spec, or reaching the pod on
// the pod network, gives nobody the images. It imports nothing of
// Kubernetes: it runs in the importer binary, which stays small.
package imageexport

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// Paths served by an export pod.
const (
	// ImagesPath prefixes an image id: GET /images/<id>.
	ImagesPath = "/images/"
	// HealthPath answers 200 without a token: the pod's readiness probe.
	HealthPath = "/healthz"
	// Port is the export pod's port.
	Port = 8443
)

// Server serves the files of one directory (the image store) to the
// holder of a token.
type Server struct {
	// Dir is the store: image <id> is Dir/<id>.
	Dir string
	// TokenSHA256 is the hex sha256 of the token a request must bear.
	TokenSHA256 string
	// IdleTimeout ends Serve after this long without a request.
	IdleTimeout time.Duration
	Log         logr.Logger

	last     atomic.Int64 // unix nanoseconds of the end of the last request
	inflight atomic.Int64 // requests being served
}

// Serve serves on l until ctx ends or the server has been idle for
// IdleTimeout.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	want, err := hex.DecodeString(s.TokenSHA256)
	if err != nil || len(want) != sha256.Size {
		return errors.New("the token's sha256 must be 64 hex digits")
	}
	s.last.Store(time.Now().UnixNano())
	srv := &http.Server{Handler: s.handler(want), ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.exitWhenIdle(ctx, cancel)
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) exitWhenIdle(ctx context.Context, cancel func()) {
	tick := time.NewTicker(min(s.IdleTimeout/4+time.Millisecond, 10*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// Never while a download runs, however long it takes.
			if s.inflight.Load() == 0 && time.Since(time.Unix(0, s.last.Load())) > s.IdleTimeout {
				s.Log.Info("Idle: exiting", "idleTimeout", s.IdleTimeout)
				cancel()
				return
			}
		}
	}
}

func (s *Server) handler(want []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == HealthPath {
			return
		}
		s.inflight.Add(1)
		defer func() {
			s.last.Store(time.Now().UnixNano())
			s.inflight.Add(-1)
		}()
		token, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(token))
		if !bearer || subtle.ConstantTimeCompare(got[:], want) != 1 {
			http.Error(w, "a valid bearer token is required", http.StatusUnauthorized)
			return
		}
		id, ok := strings.CutPrefix(r.URL.Path, ImagesPath)
		if !ok || !ValidID(id) || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(filepath.Join(s.Dir, id))
		if errors.Is(err, os.ErrNotExist) {
			http.NotFound(w, r)
			return
		}
		if err != nil {
			s.Log.Error(err, "Opening an image", "id", id)
			http.Error(w, "cannot open the image", http.StatusInternalServerError)
			return
		}
		defer f.Close()
		info, err := f.Stat()
		if err != nil || !info.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		// ServeContent answers Range requests (206, 416) and HEAD.
		http.ServeContent(w, r, "", info.ModTime(), f)
	})
}

// ValidID reports whether id can name a file of the store: one path
// element, not hidden (the importer's staging files start with a dot).
func ValidID(id string) bool {
	return id != "" && len(id) <= 253 && !strings.ContainsAny(id, "/\\\x00") && !strings.HasPrefix(id, ".")
}
