package importer

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The store is a directory of images named by image id, with Glance's file
// store semantics: an image appears whole, under its final name, or not at
// all. Bytes are staged in an anonymous file (O_TMPFILE) that the kernel
// removes if the importer dies, and linked in under the final name only
// once complete and synced. Where the filesystem has no O_TMPFILE, a
// hidden named file is used, and the next attempt removes it.

// staging is a file that becomes <dir>/<name> only when committed.
type staging struct {
	*os.File
	dir   string
	named string // the path of a named staging file; "" for an anonymous one
}

// stagingPrefix names a hidden staging file of an image, so that a later
// attempt can find and remove what a killed one left.
func stagingPrefix(imageID string) string { return "." + imageID + ".partial-" }

// createStaging creates an empty staging file in dir.
func createStaging(dir, imageID string) (*staging, error) {
	f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE, 0o640)
	if err == nil {
		return &staging{File: f, dir: dir}, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("creating a staging file in %s: %w", dir, err)
	}
	return createNamedStaging(dir, imageID)
}

// createNamedStaging creates a staging file with a name, for programs
// (qemu-img) that create their output by path.
func createNamedStaging(dir, imageID string) (*staging, error) {
	f, err := os.CreateTemp(dir, stagingPrefix(imageID)+"*")
	if err != nil {
		return nil, fmt.Errorf("creating a staging file in %s: %w", dir, err)
	}
	return &staging{File: f, dir: dir, named: f.Name()}, nil
}

// path is a path through which another process can open the file.
func (s *staging) path() string {
	if s.named != "" {
		return s.named
	}
	return "/proc/self/fd/" + strconv.Itoa(int(s.Fd()))
}

// commit syncs the file and makes it <dir>/<name>, replacing any earlier
// image of that name, and syncs the directory so the name survives a crash.
func (s *staging) commit(name string) error {
	if err := s.Sync(); err != nil {
		return fmt.Errorf("syncing the image: %w", err)
	}
	if err := s.Chmod(0o640); err != nil {
		return err
	}
	final := filepath.Join(s.dir, name)
	if s.named != "" {
		if err := os.Rename(s.named, final); err != nil {
			return err
		}
		s.named = ""
		return syncDir(s.dir)
	}
	err := unix.Linkat(unix.AT_FDCWD, s.path(), unix.AT_FDCWD, final, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.EEXIST) {
		// A retry of an import that had finished: link aside, then rename over.
		aside := filepath.Join(s.dir, stagingPrefix(name)+randomSuffix())
		if err = unix.Linkat(unix.AT_FDCWD, s.path(), unix.AT_FDCWD, aside, unix.AT_SYMLINK_FOLLOW); err == nil {
			err = os.Rename(aside, final)
		}
	}
	if err != nil {
		return fmt.Errorf("linking the image into the store: %w", err)
	}
	return syncDir(s.dir)
}

// startSync starts syncing the file, so that the disk works while the
// image is inspected; commit's own sync then has next to nothing left.
// The channel gets the sync's error.
func (s *staging) startSync() <-chan error {
	synced := make(chan error, 1)
	go func() { synced <- s.Sync() }()
	return synced
}

// discard closes the file and removes it unless it was committed.
func (s *staging) discard() {
	s.Close()
	if s.named != "" {
		os.Remove(s.named)
	}
}

// removeStaleStaging removes the staging files a killed attempt at the same
// image left in dir.
func removeStaleStaging(dir, imageID string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if IsStaging(e.Name(), imageID) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
	}
	return nil
}

// IsStaging says whether name is a staging file of an import of imageID:
// the prefix, then the random part that os.CreateTemp (decimal) or
// randomSuffix (hex) adds. Never a staging file of another image whose id
// starts the same (".a.partial-" starts ".a.partial-b.partial-1" too).
func IsStaging(name, imageID string) bool {
	random, ok := strings.CutPrefix(name, stagingPrefix(imageID))
	return ok && stagingRandom.MatchString(random)
}

var stagingRandom = regexp.MustCompile(`^[0-9a-f]{1,20}$`)

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sparseWriter is the staging file as a stream sink. It leaves a hole
// where a whole block is zero, as cp --sparse and xz -d do: the runs of
// zeros a raw disk is made of (and that compression removed) cost no disk
// space or I/O, and qemu-img skips them as holes. With writeback, it starts
// the kernel's writeback of every 16 MiB as soon as it is written: the disk
// works while the network does, dirty pages never pile up to throttle the
// download, and the final fsync has little left to do.
type sparseWriter struct {
	f         *os.File
	writeback bool
	direct    bool  // the file is in O_DIRECT mode: see useDirectIO
	off       int64 // bytes of the stream so far
	startOff  int64 // where the writeback not yet started begins
}

// useDirectIO writes the image's data blocks with O_DIRECT: from the
// chunks straight to the disk, instead of copied into the page cache and
// written back from there. The copy costs a core about a second per GiB
// here, the importer's largest cost after the hashes; the disk must get the
// bytes before the commit's fsync anyway. A write that is not aligned (the
// image's last block) and a filesystem that refuses O_DIRECT (EINVAL) fall
// back to the page cache for good.
func (w *sparseWriter) useDirectIO() { w.setDirect(true) }

func (w *sparseWriter) setDirect(on bool) {
	flags, err := unix.FcntlInt(w.f.Fd(), unix.F_GETFL, 0)
	if err == nil {
		if on {
			flags |= unix.O_DIRECT
		} else {
			flags &^= unix.O_DIRECT
		}
		_, err = unix.FcntlInt(w.f.Fd(), unix.F_SETFL, flags)
	}
	w.direct = on && err == nil
}

// directAlign is the alignment O_DIRECT asks of offsets, lengths and
// buffers: the page size, a multiple of any disk's logical block.
const directAlign = 4 << 10

// writeAt writes p at off, with O_DIRECT where it can.
func (w *sparseWriter) writeAt(p []byte, off int64) error {
	if w.direct && (off%directAlign != 0 || len(p)%directAlign != 0 || uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign != 0) {
		w.setDirect(false)
	}
	_, err := w.f.WriteAt(p, off)
	if w.direct && errors.Is(err, unix.EINVAL) {
		w.setDirect(false)
		_, err = w.f.WriteAt(p, off)
	}
	return err
}

const (
	sparseBlock    = 4 << 10
	writebackEvery = 16 << 20
)

var zeroBlock [sparseBlock]byte

func (w *sparseWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		// The next run of blocks that are all zero or all not.
		n := min(len(p), sparseBlock)
		zero := bytes.Equal(p[:n], zeroBlock[:n])
		for n < len(p) {
			m := min(len(p)-n, sparseBlock)
			if bytes.Equal(p[n:n+m], zeroBlock[:m]) != zero {
				break
			}
			n += m
		}
		if !zero {
			if err := w.writeAt(p[:n], w.off); err != nil {
				return written, err
			}
		}
		w.off += int64(n)
		written += n
		p = p[n:]
	}
	if w.writeback && w.off-w.startOff >= writebackEvery {
		// Advisory: a filesystem without it loses only the speed-up.
		_ = unix.SyncFileRange(int(w.f.Fd()), w.startOff, w.off-w.startOff, unix.SYNC_FILE_RANGE_WRITE)
		w.startOff = w.off
	}
	return written, nil
}

// WriteZeros leaves a hole of n bytes.
func (w *sparseWriter) WriteZeros(n int) error {
	w.off += int64(n)
	return nil
}

// finish gives the file the stream's size, which a final hole leaves short,
// and leaves O_DIRECT mode: the inspector reads the file after us, at the
// offsets and into the buffers it likes.
func (w *sparseWriter) finish() error {
	if w.direct {
		w.setDirect(false)
	}
	return w.f.Truncate(w.off)
}
