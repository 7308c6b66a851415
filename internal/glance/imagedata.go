package glance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// ImageData reads the stored data of active images.
type ImageData interface {
	// Open returns the image's data and its size; fs.ErrNotExist when the
	// store has none.
	Open(ctx context.Context, img *tasksv1.Image) (io.ReadSeekCloser, int64, error)
}

// StoreDir reads images from a directory holding the image store (the
// store's volume mounted into the shim): the importer stores an image as
// <store>/<image id>.
type StoreDir string

func (d StoreDir) Open(_ context.Context, img *tasksv1.Image) (io.ReadSeekCloser, int64, error) {
	if strings.ContainsAny(img.Name, `/\`) || img.Name == "." || img.Name == ".." {
		return nil, 0, fs.ErrNotExist
	}
	f, err := os.Open(filepath.Join(string(d), img.Name))
	if err != nil {
		return nil, 0, err
	}
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		f.Close()
		return nil, 0, errors.Join(fs.ErrNotExist, err)
	}
	return f, info.Size(), nil
}

// downloadImage is GET /v2/images/{id}/file: the image's bytes, with
// Glance's headers; 204 when the image has no data, 206 for a Range.
func (s *Server) downloadImage(w http.ResponseWriter, r *http.Request, id *Identity, imageID string) {
	ctx := r.Context()
	if e := s.imagesAllowed(ctx, id, "get"); e != nil {
		e.write(w, r)
		return
	}
	g := s.lookupImage(w, r, id, imageID)
	if g == nil {
		return
	}
	if g.status() != string(tasksv1.ImageActive) {
		noContent(w)
		return
	}
	if s.ImageData == nil {
		newError(http.StatusServiceUnavailable, "Image data is not available from this server: it reads no image store.").write(w, r)
		return
	}
	data, size, err := s.ImageData.Open(ctx, g.obj)
	if errors.Is(err, fs.ErrNotExist) {
		noContent(w)
		return
	}
	if err != nil {
		s.internalError(w, r, fmt.Errorf("opening the data of image %s: %w", g.id(), err))
		return
	}
	defer data.Close()
	offset, length, ok := byteRange(r.Header.Get("Range"), size)
	if !ok {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		newError(http.StatusRequestedRangeNotSatisfiable, "Requested range not satisfiable").write(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	if c := g.obj.Status.Checksum; c != "" {
		h.Set("Content-MD5", c) // Glance sends the hex md5 here
	}
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	code := http.StatusOK
	if r.Header.Get("Range") != "" {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", offset, offset+length-1, size))
		code = http.StatusPartialContent
	}
	if _, err := data.Seek(offset, io.SeekStart); err != nil {
		s.internalError(w, r, err)
		return
	}
	w.WriteHeader(code)
	// A download lasts as long as its client keeps reading, not the
	// server's write timeout: each write gets its own deadline. (The route
	// takes GET only: a HEAD is Glance's 405.)
	out := &progressDeadline{w: w, rc: http.NewResponseController(w)}
	io.CopyBuffer(out, io.LimitReader(data, length), make([]byte, 1<<20))
}

// writeStallTimeout is how long one write of image data may block (a
// client that stopped reading) before the download is cut.
const writeStallTimeout = time.Minute

// progressDeadline moves the connection's write deadline before each write.
type progressDeadline struct {
	w  io.Writer
	rc *http.ResponseController
}

func (p *progressDeadline) Write(b []byte) (int, error) {
	p.rc.SetWriteDeadline(time.Now().Add(writeStallTimeout))
	return p.w.Write(b)
}

func noContent(w http.ResponseWriter) {
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
}

// byteRange parses a single "bytes=a-b", "bytes=a-" or "bytes=-n" range as
// WebOb does; no header is the whole image.
func byteRange(header string, size int64) (offset, length int64, ok bool) {
	if header == "" {
		return 0, size, true
	}
	spec, found := strings.CutPrefix(strings.TrimSpace(header), "bytes=")
	first, last, dash := strings.Cut(spec, "-")
	if !found || !dash || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	if first == "" {
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false
		}
		n = min(n, size)
		return size - n, n, size > 0
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 || start >= size {
		return 0, 0, false
	}
	end := size - 1
	if last != "" {
		if end, err = strconv.ParseInt(last, 10, 64); err != nil || end < start {
			return 0, 0, false
		}
		end = min(end, size-1)
	}
	return start, end - start + 1, true
}
