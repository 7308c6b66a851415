package exportpods

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strconv"
	"strings"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/imageexport"
)

// Open reads an image's data through the export pod of the claim that its
// location names (pvc://<namespace>/<claim>/<id>): the shim's ImageData.
// fs.ErrNotExist when the store has no such file.
func (p *Pods) Open(ctx context.Context, img *tasksv1.Image) (io.ReadSeekCloser, int64, error) {
	namespace, claim, id, ok := parseLocation(img.Status.Location)
	if !ok || namespace != img.Namespace {
		return nil, 0, fmt.Errorf("image %s/%s: location %q is not in its namespace's store: %w", img.Namespace, img.Name, img.Status.Location, fs.ErrNotExist)
	}
	f := &remoteFile{ctx: ctx, pods: p, namespace: namespace, claim: claim, id: id}
	// The first byte tells the size (Content-Range) and that the file is there.
	if err := f.open("bytes=0-"); err != nil {
		return nil, 0, err
	}
	return f, f.size, nil
}

// parseLocation splits pvc://<namespace>/<claim>/<id>.
func parseLocation(location string) (namespace, claim, id string, ok bool) {
	rest, ok := strings.CutPrefix(location, "pvc://")
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || !imageexport.ValidID(parts[2]) {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// remoteFile reads an image from an export pod: a response body read in
// order, and a new ranged request after a seek.
type remoteFile struct {
	ctx                  context.Context
	pods                 *Pods
	namespace, claim, id string
	size, offset         int64
	body                 io.ReadCloser // nil after a seek, until the next read
}

func (f *remoteFile) open(rangeHeader string) error {
	resp, err := f.pods.request(f.ctx, f.namespace, f.claim, f.id, rangeHeader)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		total := resp.Header.Get("Content-Range")
		size, err := strconv.ParseInt(total[strings.LastIndexByte(total, '/')+1:], 10, 64)
		if err != nil {
			resp.Body.Close()
			return fmt.Errorf("export pod: bad Content-Range %q", total)
		}
		f.size, f.body = size, resp.Body
		return nil
	case http.StatusRequestedRangeNotSatisfiable: // an empty image
		resp.Body.Close()
		f.size, f.body = 0, io.NopCloser(strings.NewReader(""))
		return nil
	case http.StatusNotFound:
		resp.Body.Close()
		return fmt.Errorf("image %s is not in store %s/%s: %w", f.id, f.namespace, f.claim, fs.ErrNotExist)
	}
	resp.Body.Close()
	return fmt.Errorf("export pod answered %s for image %s", resp.Status, f.id)
}

func (f *remoteFile) Read(b []byte) (int, error) {
	if f.offset >= f.size {
		return 0, io.EOF
	}
	if f.body == nil {
		if err := f.open("bytes=" + strconv.FormatInt(f.offset, 10) + "-"); err != nil {
			return 0, err
		}
	}
	n, err := f.body.Read(b)
	f.offset += int64(n)
	if errors.Is(err, io.EOF) && f.offset < f.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (f *remoteFile) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += f.offset
	case io.SeekEnd:
		offset += f.size
	}
	if offset < 0 {
		return 0, errors.New("seek before the start of the image")
	}
	if offset != f.offset && f.body != nil {
		f.body.Close()
		f.body = nil
	}
	f.offset = offset
	return offset, nil
}

func (f *remoteFile) Close() error {
	if f.body != nil {
		return f.body.Close()
	}
	return nil
}
