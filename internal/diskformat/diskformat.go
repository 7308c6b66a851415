// Package diskformat tells what a disk image is and whether it is safe to
// hand to qemu-img. It is pure Go, reads only headers and metadata through
// an io.ReaderAt, and bounds every read, so that any input, however hostile,
// costs little memory and no panic.
//
// Safety rules, beyond Glance's format_inspector:
//   - the bytes must be exactly one format: a file that is valid as two (an
//     ISO that is also a qcow2, say) is refused;
//   - qcow2: no backing file, no external data file (CVE-2024-32498), no
//     encryption, no unknown incompatible feature, metadata inside the file,
//     and no L2 table or data cluster referenced twice or overlapping the
//     metadata (a small file must not expand to a large disk);
//   - vmdk: a single monolithic extent (monolithicSparse or streamOptimized)
//     only, never a descriptor naming other files (CVE-2022-47951), read as
//     QEMU 7.2 reads it: capacity 0, a second "createType" substring, any
//     second extent line, a parent, a bad footer are all refused;
//   - bytes that qemu would probe as a format of its own (QED, LUKS,
//     Parallels, Bochs, cloop, VMware 3 COWD, a VMDK text descriptor) are
//     named and refused, so that nothing declared raw turns into one later;
//   - vmdk, vhd and vhdx sparse tables, like qcow2's: no grain, grain
//     table or block used twice or overlapping the metadata;
//   - vhd, vhdx, vdi: no differencing (parent) images;
//   - every format: a virtual size within the configured limit.
package diskformat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Format names follow Glance's disk_format values.
const (
	Raw   = "raw"
	Qcow2 = "qcow2"
	VMDK  = "vmdk"
	VHD   = "vhd"
	VHDX  = "vhdx"
	VDI   = "vdi"
	ISO   = "iso"
	GZIP  = "gzip" // recognised only to refuse it clearly
	XZ    = "xz"
)

// QemuFormat is qemu-img's name for a Glance disk format.
func QemuFormat(f string) string {
	switch f {
	case VHD:
		return "vpc"
	case ISO:
		return "raw" // an ISO is raw sectors to qemu
	}
	return f
}

var (
	// ErrUnsafe wraps refusals of images that could harm the host.
	ErrUnsafe = errors.New("unsafe image")
	// ErrInvalid wraps images that are corrupt, truncated or ambiguous.
	ErrInvalid = errors.New("invalid image")
	// ErrUnsupported wraps valid images this importer does not handle.
	ErrUnsupported = errors.New("unsupported image")
)

// Info is what Inspect found.
type Info struct {
	// Format is the detected format.
	Format string
	// VirtualSize is the size of the disk the image describes, in bytes.
	VirtualSize int64
	// Variant refines the format: "v2"/"v3" for qcow2, the createType of
	// a vmdk, "fixed"/"dynamic" for vhd and vdi.
	Variant string
}

// Options bound what Inspect accepts.
type Options struct {
	// MaxVirtualSize refuses images describing a larger disk; 0 means no limit.
	MaxVirtualSize int64
}

// prober recognises one format. It returns ok=false when the bytes are
// not that format, and an error when they are but are unsafe or invalid.
type prober struct {
	format string
	probe  func(r io.ReaderAt, size int64) (info Info, ok bool, err error)
}

var probers = []prober{
	{Qcow2, probeQcow2},
	{VMDK, probeVMDK},
	{VHDX, probeVHDX},
	{VHD, probeVHD},
	{VDI, probeVDI},
	{ISO, probeISO},
	{GZIP, probeMagic(GZIP, []byte{0x1f, 0x8b})},
	{XZ, probeMagic(XZ, []byte{0xfd, '7', 'z', 'X', 'Z', 0})},
	{QED, probeQemuOnly(QED)},
	{LUKS, probeQemuOnly(LUKS)},
	{Parallels, probeQemuOnly(Parallels)},
	{Bochs, probeQemuOnly(Bochs)},
	{Cloop, probeQemuOnly(Cloop)},
}

// Inspect finds the format of the size bytes in r and checks that the image
// is safe. Bytes that are no known format are raw.
func Inspect(r io.ReaderAt, size int64, opts Options) (Info, error) {
	var found []Info
	var firstErr error
	for _, p := range probers {
		info, ok, err := p.probe(r, size)
		if !ok {
			continue
		}
		info.Format = p.format
		found = append(found, info)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	switch len(found) {
	case 0:
		found = append(found, Info{Format: Raw, VirtualSize: size})
	case 1:
	default:
		names := make([]string, len(found))
		for i, f := range found {
			names[i] = f.Format
		}
		return found[0], invalid("", "the file is valid as %s at once", strings.Join(names, " and "))
	}
	info := found[0]
	if firstErr != nil {
		return info, firstErr
	}
	if slices.Contains([]string{GZIP, XZ}, info.Format) {
		return info, &Error{Kind: ErrUnsupported, Format: info.Format, Reason: "compressed images are not supported; upload the uncompressed image"}
	}
	if opts.MaxVirtualSize > 0 && info.VirtualSize > opts.MaxVirtualSize {
		return info, unsafe(info.Format, "the virtual size of %d bytes is over the limit of %d bytes", info.VirtualSize, opts.MaxVirtualSize)
	}
	if info.VirtualSize < 0 {
		return info, invalid(info.Format, "the virtual size is negative")
	}
	return info, nil
}

// readAt reads exactly len(buf) bytes at off, or reports that the file is
// too short.
func readAt(r io.ReaderAt, size, off int64, buf []byte) bool {
	if off < 0 || off > size || int64(len(buf)) > size-off {
		return false
	}
	n, err := r.ReadAt(buf, off)
	return n == len(buf) && (err == nil || err == io.EOF)
}

func probeMagic(format string, magic []byte) func(io.ReaderAt, int64) (Info, bool, error) {
	return func(r io.ReaderAt, size int64) (Info, bool, error) {
		buf := make([]byte, len(magic))
		if !readAt(r, size, 0, buf) || string(buf) != string(magic) {
			return Info{}, false, nil
		}
		return Info{Format: format, VirtualSize: size}, true, nil
	}
}

var (
	be = binary.BigEndian
	le = binary.LittleEndian
)

// Error is a refusal: its Kind is ErrUnsafe, ErrInvalid or ErrUnsupported.
type Error struct {
	Kind   error
	Format string // the format the bytes are, when known
	Reason string // what is wrong, in words for users
}

func (e *Error) Error() string {
	if e.Format == "" {
		return e.Kind.Error() + ": " + e.Reason
	}
	return e.Kind.Error() + ": " + e.Format + ": " + e.Reason
}

func (e *Error) Unwrap() error { return e.Kind }

func invalid(format string, msg string, args ...any) error {
	return &Error{Kind: ErrInvalid, Format: format, Reason: fmt.Sprintf(msg, args...)}
}

func unsafe(format string, msg string, args ...any) error {
	return &Error{Kind: ErrUnsafe, Format: format, Reason: fmt.Sprintf(msg, args...)}
}

// mulFits multiplies two non-negative numbers, reporting overflow of int64.
func mulFits(a, b uint64) (int64, bool) {
	if a != 0 && b > (1<<63-1)/a {
		return 0, false
	}
	return int64(a * b), true
}
