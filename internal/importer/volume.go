package importer

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/imageimport/image-import-operator/internal/importresult"
)

// A volume of the image's own is its last stop: the image, imported into
// the store directory as always (atomically, synced), becomes disk.img of
// a Filesystem volume (KubeVirt's convention), or is written onto the
// device of a Block volume. Either way the image's virtual size must fit
// the volume: a VM whose disk is larger than its volume fails the first
// time it writes past the end.

// FilesystemOverhead is the share of a Filesystem volume that disk.img
// cannot use: CDI's default, which KubeVirt assumes too.
const FilesystemOverhead = 0.055

// VolumeTarget is where a stored image goes last; the zero value leaves
// it in the store.
type VolumeTarget struct {
	// File is the name the image takes in the store directory (disk.img).
	File string
	// Device is the block device the image is written onto.
	Device string
	// Capacity is the volume's requested size in bytes; 0 when unknown.
	// The smaller of it and what the filesystem or device holds counts.
	Capacity int64
}

// Deliver moves the image stored as dir/<res.ImageID> to the target, after
// checking that its virtual size fits, and reports the bytes written.
func Deliver(dir string, res importresult.Result, t VolumeTarget) (importresult.Result, error) {
	stored := filepath.Join(dir, res.ImageID)
	switch {
	case t.Device != "":
		return res, toDevice(stored, res, t)
	case t.File != "":
		return res, toFile(stored, dir, res, t)
	}
	return res, nil
}

// toFile renames the stored image to t.File in the same directory.
func toFile(stored, dir string, res importresult.Result, t VolumeTarget) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return transient(importresult.ReasonInternal, err, "The volume cannot be read: %v.", err)
	}
	capacity := smallerKnown(t.Capacity, int64(fs.Blocks)*fs.Bsize)
	need := int64(math.Ceil(float64(res.VirtualSize) / (1 - FilesystemOverhead)))
	if need > capacity {
		os.Remove(stored)
		return permanent(importresult.ReasonInsufficientStorage, nil,
			"The image's virtual size is %d bytes: as %s on a Filesystem volume it needs %d bytes (plus %.1f%% filesystem overhead), and the volume has %d. Import again into a volume of at least %d bytes.",
			res.VirtualSize, t.File, need, FilesystemOverhead*100, capacity, need)
	}
	if err := os.Rename(stored, filepath.Join(dir, t.File)); err != nil {
		return transient(importresult.ReasonInternal, err, "Naming the image %s failed: %v.", t.File, err)
	}
	if err := syncDir(dir); err != nil {
		return transient(importresult.ReasonInternal, err, "Syncing the volume failed: %v.", err)
	}
	return nil
}

// toDevice writes the stored image onto the device, data where the image
// has data and zeros where it has holes (the device may hold old bytes),
// syncs the device, and removes the stored copy.
func toDevice(stored string, res importresult.Result, t VolumeTarget) error {
	src, err := os.Open(stored)
	if err != nil {
		return transient(importresult.ReasonInternal, err, "Reading the image failed: %v.", err)
	}
	defer src.Close()
	defer os.Remove(stored)
	dev, err := os.OpenFile(t.Device, os.O_WRONLY, 0)
	if err != nil {
		return transient(importresult.ReasonInternal, err, "The volume's device cannot be opened: %v.", err)
	}
	defer dev.Close()
	size, err := dev.Seek(0, io.SeekEnd)
	if err != nil {
		return transient(importresult.ReasonInternal, err, "The volume's device cannot be measured: %v.", err)
	}
	st, err := src.Stat()
	if err != nil {
		return transient(importresult.ReasonInternal, err, "Reading the image failed: %v.", err)
	}
	if isRegular(dev) {
		size = 0 // a file standing in for a device grows: only the capacity bounds it
	}
	capacity := smallerKnown(t.Capacity, size)
	if need := max(res.VirtualSize, st.Size()); need > capacity {
		return permanent(importresult.ReasonInsufficientStorage, nil,
			"The image's virtual size is %d bytes and the Block volume has %d. Import again into a volume of at least %d bytes.",
			need, capacity, need)
	}
	err = copySparse(dev, src, st.Size())
	if fi, serr := dev.Stat(); err == nil && serr == nil && fi.Mode().IsRegular() && fi.Size() < st.Size() {
		err = dev.Truncate(st.Size()) // a stand-in file whose image ends in a hole
	}
	if err != nil {
		return transient(importresult.ReasonInternal, err, "Writing the image onto the volume failed: %v.", err)
	}
	if err := dev.Sync(); err != nil {
		return transient(importresult.ReasonInternal, err, "Syncing the volume failed: %v.", err)
	}
	return nil
}

// copySparse copies size bytes of src to dst at the same offsets: data
// extents as they are, holes as zeros (fallocate's zero range, which a
// block device turns into write-zeroes or discard, else written zeros).
func copySparse(dst, src *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = size // only a hole is left
		} else if err != nil {
			return err
		}
		if err := zeroRange(dst, off, data-off, buf); err != nil {
			return err
		}
		if data >= size {
			return nil
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		hole = min(hole, size)
		if _, err := io.CopyBuffer(io.NewOffsetWriter(dst, data), io.NewSectionReader(src, data, hole-data), buf); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// zeroRange makes n bytes of f at off zeros.
func zeroRange(f *os.File, off, n int64, buf []byte) error {
	if n <= 0 {
		return nil
	}
	for _, mode := range []uint32{unix.FALLOC_FL_ZERO_RANGE, unix.FALLOC_FL_PUNCH_HOLE} {
		if unix.Fallocate(int(f.Fd()), mode|unix.FALLOC_FL_KEEP_SIZE, off, n) == nil {
			return nil
		}
	}
	clear(buf)
	for n > 0 {
		m := min(n, int64(len(buf)))
		if _, err := f.WriteAt(buf[:m], off); err != nil {
			return fmt.Errorf("writing zeros: %w", err)
		}
		off, n = off+m, n-m
	}
	return nil
}

func isRegular(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode().IsRegular()
}

// smallerKnown is the smaller of two sizes, a zero one being unknown.
func smallerKnown(a, b int64) int64 {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}
