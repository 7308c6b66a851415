package unpack

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"path"
	"strings"
	"unicode"
)

// descriptor is what the importer reads of an OVF descriptor: the one disk
// and the names to record.
type descriptor struct {
	OVA
	href string // the disk's entry name
}

// maxDepth bounds the nesting of the descriptor's elements (OVF's own go
// about eight deep).
const maxDepth = 64

// maxAttributes bounds the attributes of a descriptor (a VMware one has a
// few hundred): encoding/xml makes each one a few allocations, and a
// descriptor of nothing but attributes would cost tens of times its size.
const maxAttributes = 16 << 10

// ovfDisk is a Disk of the DiskSection.
type ovfDisk struct{ fileRef, format string }

// ovfFile is a File of the References section.
type ovfFile struct {
	href, compression, chunkSize string
}

// parseOVF reads an OVF descriptor (OVF 1.x or 2.x; elements and attributes
// matched by local name, as every producer uses the ovf prefix for the
// envelope's namespace). encoding/xml expands no entity but the five
// predefined ones and reads no DTD, so the descriptor cannot name files
// or grow.
func parseOVF(raw []byte) (*descriptor, error) {
	if n := bytes.Count(raw, []byte("=")); n > maxAttributes { // an attribute has one
		return nil, refuse(Invalid, nil, "The OVF descriptor has %d '=' signs, more than the limit of %d attributes allows", n, maxAttributes)
	}
	d := xml.NewDecoder(bytes.NewReader(raw))
	var (
		stack   []string
		files   = map[string]ovfFile{}
		disks   []ovfDisk // Disks that reference a file
		text    *string   // where the current element's text goes
		buf     strings.Builder
		systems int
		root    bool
		desc    descriptor
	)
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, refuse(Invalid, err, "The OVF descriptor is not valid XML (%v)", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) == 0 && (root || t.Name.Local != "Envelope") {
				return nil, refuse(Invalid, nil, "The OVF descriptor's root element is %q, not one Envelope", cut(t.Name.Local, 64))
			}
			root = true
			if len(stack) >= maxDepth {
				return nil, refuse(Invalid, nil, "The OVF descriptor nests elements over %d deep", maxDepth)
			}
			parent := ""
			if len(stack) > 0 {
				parent = stack[len(stack)-1]
			}
			stack = append(stack, t.Name.Local)
			text = nil
			switch {
			case parent == "References" && t.Name.Local == "File":
				files[attr(t, "id")] = ovfFile{href: attr(t, "href"), compression: attr(t, "compression"), chunkSize: attr(t, "chunkSize")}
			case parent == "DiskSection" && t.Name.Local == "Disk":
				if ref := attr(t, "fileRef"); ref != "" { // a blank disk has no file to import
					disks = append(disks, ovfDisk{fileRef: ref, format: attr(t, "format")})
				}
			case t.Name.Local == "VirtualSystem":
				if systems++; systems == 1 {
					desc.Name = clean(attr(t, "id"))
				}
			case systems == 1 && parent == "VirtualSystem" && t.Name.Local == "Name":
				text = &desc.Name
			case systems == 1 && parent == "ProductSection" && t.Name.Local == "Product" && desc.Product == "":
				text = &desc.Product
			case systems == 1 && parent == "ProductSection" && t.Name.Local == "Vendor" && desc.Vendor == "":
				text = &desc.Vendor
			case systems == 1 && parent == "ProductSection" && t.Name.Local == "Version" && desc.Version == "":
				text = &desc.Version
			}
			buf.Reset()
		case xml.CharData:
			if text != nil && buf.Len() < 4096 {
				buf.Write(t)
			}
		case xml.EndElement:
			if text != nil {
				if s := clean(buf.String()); s != "" {
					*text = s
				}
				text = nil
			}
			stack = stack[:len(stack)-1]
		}
	}
	if !root {
		return nil, refuse(Invalid, nil, "The OVF descriptor holds no Envelope")
	}
	switch len(disks) {
	case 0:
		return nil, refuse(Invalid, nil, "The OVF descriptor references no disk")
	case 1:
	default:
		return nil, refuse(Invalid, nil, "The OVF descriptor references %d disks; only an OVA with one disk can be imported", len(disks))
	}
	ref := disks[0].fileRef
	f, ok := files[ref]
	switch {
	case !ok:
		return nil, refuse(Invalid, nil, "The OVF disk's file %q is not in the descriptor's References", cut(ref, 64))
	case f.chunkSize != "":
		return nil, refuse(Invalid, nil, "The OVF disk is split into chunks (ovf:chunkSize), which is not supported")
	case f.compression != "" && f.compression != "gzip" && f.compression != "identity":
		return nil, refuse(Invalid, nil, "The OVF disk's compression %q is not gzip", cut(f.compression, 32))
	}
	href, err := diskEntry(f.href)
	if err != nil {
		return nil, err
	}
	desc.href = href
	desc.Entry = printable(href, 128)
	desc.DiskFormat = printable(disks[0].format, 128)
	return &desc, nil
}

// diskEntry checks that href names an entry of the OVA: a relative path,
// not a URL, without a .. segment.
func diskEntry(href string) (string, error) {
	switch {
	case href == "":
		return "", refuse(Invalid, nil, "The OVF disk's file has no ovf:href")
	case strings.Contains(href, ":"):
		return "", refuse(Unsafe, nil, "The OVF disk's file is %q, outside of the OVA", cut(href, 128))
	case strings.HasPrefix(href, "/") || strings.HasPrefix(href, `\`):
		return "", refuse(Unsafe, nil, "The OVF disk's file %q has an absolute path", cut(href, 128))
	}
	for _, seg := range strings.FieldsFunc(href, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == ".." {
			return "", refuse(Unsafe, nil, "The OVF disk's file %q climbs out of the archive (..)", cut(href, 128))
		}
	}
	return entryName(path.Clean(href)), nil
}

// attr returns the attribute of e with the local name, in any namespace.
func attr(e xml.StartElement, local string) string {
	for _, a := range e.Attr {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// clean makes a descriptor's text fit for a result: one line of printable
// characters, at most 64 bytes.
func clean(s string) string { return printable(s, 64) }

// printable is s as one line of printable characters (runs of others, and
// of spaces, become one space: no newline, tab or bidirectional control
// reaches a status), at most n bytes.
func printable(s string, n int) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }), " ")
	return cut(s, n)
}
