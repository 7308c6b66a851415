package unpack

import (
	"archive/tar"
	"bufio"
	"errors"
	"io"
	"path"
	"strings"
)

// An OVA (DSP0243, "Distribution as a single file") is a USTAR archive whose
// first entry is the OVF descriptor, optionally followed by the manifest
// and the certificate, then the files the descriptor references, in the
// order of its References. The order is what lets an OVA be read as it
// streams in: the descriptor says which entry is the disk before the disk
// arrives, and only that entry is written out. Glance takes the first .ovf
// wherever it is in the tar, which needs the whole tar on disk first; we
// follow the specification and refuse an OVA whose first entry is not the
// descriptor.
//
// Refused: entries with an absolute path or a .. segment, links, devices
// and FIFOs (nothing is extracted, but such an OVA is built to attack
// whoever does extract it), a second descriptor or a second entry of the
// disk, and descriptors that reference no disk or several.

// OVA is what an OVA held.
type OVA struct {
	Entry      string // the disk's entry in the tar
	Descriptor string // the OVF descriptor's entry
	Name       string // the virtual system's Name (or its ovf:id)
	Product    string // ProductSection: Product, Vendor, Version
	Vendor     string
	Version    string
	DiskFormat string // the Disk's ovf:format, e.g. ...vmdk.html#streamOptimized
}

// maxDescriptor bounds the OVF descriptor read into memory: VMware's and
// VirtualBox's are tens of KiB.
const maxDescriptor = 1 << 20

// ova streams the disk of the OVA r to w.
func (s *stream) ova(w io.Writer, r io.Reader) error {
	tr := tar.NewReader(r)
	hdr, err := s.next(tr)
	switch {
	case errors.Is(err, io.EOF):
		return refuse(Invalid, nil, "The OVA is an empty tar archive")
	case err != nil:
		return err
	}
	if hdr.Typeflag != tar.TypeReg || !strings.EqualFold(path.Ext(hdr.Name), ".ovf") {
		return refuse(Invalid, nil, "The first entry of an OVA must be its OVF descriptor (DSP0243), not %q", cut(hdr.Name, 128))
	}
	if hdr.Size > maxDescriptor {
		return refuse(Invalid, nil, "The OVF descriptor is %d bytes, over the limit of %d", hdr.Size, maxDescriptor)
	}
	raw, err := io.ReadAll(tr)
	if err != nil {
		return s.tarError(err)
	}
	desc, err := parseOVF(raw)
	if err != nil {
		return err
	}
	ova := desc.OVA
	ova.Descriptor = printable(entryName(hdr.Name), 128)
	s.rep.OVA = &ova
	found := false
	for {
		hdr, err := s.next(tr)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name := entryName(hdr.Name)
		switch {
		case hdr.Typeflag != tar.TypeReg: // a directory, a global header: nothing to read
		case name == desc.href && found:
			return refuse(Unsafe, nil, "The OVA holds its disk %q twice", ova.Entry)
		case name == desc.href:
			found = true
			in := bufio.NewReaderSize(tr, 64<<10)
			body, err := s.decompress(in, in, "disk "+ova.Entry+" of the OVA")
			if err != nil {
				return err
			}
			if err := s.copyDisk(w, body, s.tarError); err != nil {
				return err
			}
		case strings.EqualFold(path.Ext(name), ".ovf"):
			return refuse(Invalid, nil, "The OVA holds a second OVF descriptor, %q", cut(name, 128))
		}
	}
	if !found {
		return refuse(Invalid, nil, "The OVA has no entry %q, the disk its OVF descriptor references", ova.Entry)
	}
	return nil
}

// next returns the next entry of the tar, refusing those that are unsafe.
func (s *stream) next(tr *tar.Reader) (*tar.Header, error) {
	hdr, err := tr.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, s.tarError(err)
	}
	name := cut(hdr.Name, 128)
	if hdr.Name == "" || strings.HasPrefix(hdr.Name, "/") || strings.HasPrefix(hdr.Name, `\`) {
		return nil, refuse(Unsafe, nil, "The OVA entry %q has an absolute path", name)
	}
	for _, seg := range strings.FieldsFunc(hdr.Name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == ".." {
			return nil, refuse(Unsafe, nil, "The OVA entry %q climbs out of the archive (..)", name)
		}
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeXGlobalHeader:
		return hdr, nil
	case tar.TypeSymlink, tar.TypeLink:
		return nil, refuse(Unsafe, nil, "The OVA entry %q is a link (to %q); an OVA holds regular files only", name, cut(hdr.Linkname, 128))
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return nil, refuse(Unsafe, nil, "The OVA entry %q is a device or a FIFO; an OVA holds regular files only", name)
	}
	return nil, refuse(Invalid, nil, "The OVA entry %q is of tar type %q; an OVA holds regular files only", name, string(hdr.Typeflag))
}

// tarError is a failed read of the tar: the source's error when the source
// failed, a refusal as it is, a corrupt archive otherwise.
func (s *stream) tarError(err error) error {
	var refusal *Error
	switch {
	case errors.As(err, &refusal):
		return refusal
	case s.src.failed() != nil:
		return s.src.failed()
	case errors.Is(err, io.ErrUnexpectedEOF):
		return refuse(Corrupt, err, "The OVA is a truncated tar archive")
	}
	return refuse(Corrupt, err, "The OVA is not a valid tar archive (%v)", err)
}

// entryName is the name of an entry as the descriptor would reference it.
func entryName(name string) string {
	return strings.TrimPrefix(path.Clean(name), "./")
}

// cut shortens s to at most n bytes, on a character boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xc0 != 0x80 }
