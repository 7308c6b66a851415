package diskformat

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// VMDK, as VMware's "Virtual Disk Format 5.0" describes it, read the way
// QEMU 7.2's block/vmdk.c reads it: where the two disagree, qemu-img is
// what will open the file, so its reading is the one checked.
const (
	vmdkMagic         = "KDMV"
	vmdk3Magic        = "COWD" // VMware 3 sparse extent: qemu probes and opens it as vmdk
	vmdkHeaderLen     = 79
	vmdkMaxDescriptor = 64 << 10
	vmdkGDAtEnd       = ^uint64(0) // streamOptimized: the footer holds the real header
	vmdkMarkerFooter  = 3
	vmdkMaxVersion    = 3
	// vmdkQemuDescAt and vmdkQemuDescLen are where qemu looks for the CIDs
	// and parentFileNameHint of a sparse file (vmdk_parent_open), whatever
	// the header says: s->desc_offset = 0x200, DESC_SIZE = 20 sectors.
	vmdkQemuDescAt  = 0x200
	vmdkQemuDescLen = 20 * 512
	// qemu's limits (vmdk_open_vmdk4, vmdk_add_extent).
	vmdkMaxGTEntries   = 512
	vmdkMaxGranularity = 0x200000
	vmdkFlagZeroGrain  = 1 << 2
	// vmdkMaxSectors bounds the walk's bitset to 32 MiB: a 128 GiB file.
	vmdkMaxSectors = 1 << 28
)

// vmdkSafeTypes hold their data in the one file that carries the descriptor.
var vmdkSafeTypes = map[string]bool{"monolithicSparse": true, "streamOptimized": true}

// vmdkExtentAccess are the first words of an extent line (VMware's
// specification). qemu only opens RW extents, but a line that starts with
// any of them is an extent to somebody, so all of them count.
var vmdkExtentAccess = []string{"RW", "RDONLY", "NOACCESS"}

// vmdkSparseExtent is the one extent line a monolithic image may carry,
// from its first word to the end of its line.
var vmdkSparseExtent = regexp.MustCompile(`^(RW|RDONLY|NOACCESS) [1-9][0-9]* SPARSE "[^"\r\n]+"[ \t\r]*$`)

func probeVMDK(r io.ReaderAt, size int64) (Info, bool, error) {
	probe := qemuProbeBuffer(r, size)
	if size >= 4 && string(probe[:4]) == vmdk3Magic {
		return Info{Variant: "COWD"}, true, &Error{Kind: ErrUnsupported, Format: VMDK,
			Reason: "a VMware 3 (COWD) sparse extent, which qemu-img opens as vmdk; only monolithicSparse or streamOptimized images are accepted"}
	}
	if vmdkTextProbe(probe) || bytes.HasPrefix(probe, []byte("# Disk DescriptorFile")) {
		return Info{Variant: "descriptor"}, true, unsafe(VMDK,
			"a descriptor file names other files as its extents; only single-file monolithicSparse or streamOptimized images are accepted")
	}
	if size < 4 || string(probe[:4]) != vmdkMagic {
		return Info{}, false, nil
	}
	h := make([]byte, vmdkHeaderLen)
	if !readAt(r, size, 0, h) {
		return Info{}, true, invalid(VMDK, "the header is truncated")
	}
	// qemu reads a header of capacity 0 as a pointer to a whole descriptor
	// file, which may name any file of the host as an extent.
	if le.Uint64(h[12:]) == 0 {
		return Info{}, true, unsafe(VMDK, "the header's capacity is 0, which makes qemu-img read the embedded descriptor as a descriptor file that can name other files")
	}
	descOffset, descSectors := le.Uint64(h[28:]), le.Uint64(h[36:])
	if le.Uint64(h[56:]) == vmdkGDAtEnd {
		// qemu takes everything but the test above from the footer.
		footer, err := vmdkFooter(r, size)
		if err != nil {
			return Info{}, true, err
		}
		h = footer
	}
	capacity, gdOffset := le.Uint64(h[12:]), le.Uint64(h[56:])
	virtual, ok := mulFits(capacity, 512)
	info := Info{VirtualSize: virtual}
	switch {
	case !ok:
		return info, true, invalid(VMDK, "the capacity is absurd")
	case capacity == 0:
		return info, true, invalid(VMDK, "the capacity in the footer is 0")
	case le.Uint32(h[4:]) > vmdkMaxVersion:
		return info, true, invalid(VMDK, "version %d is not supported", le.Uint32(h[4:]))
	case descOffset == 0 || descSectors == 0:
		return info, true, invalid(VMDK, "the image has no embedded descriptor")
	case descSectors > vmdkMaxDescriptor/512:
		return info, true, invalid(VMDK, "the descriptor is over %d bytes", vmdkMaxDescriptor)
	case gdOffset == vmdkGDAtEnd || gdOffset > uint64(size)/512:
		return info, true, invalid(VMDK, "the grain directory lies outside the file (truncated?)")
	}
	desc := make([]byte, descSectors*512)
	if descOffset > uint64(size)/512 || !readAt(r, size, int64(descOffset)*512, desc) {
		return info, true, invalid(VMDK, "the descriptor lies outside the file (truncated?)")
	}
	createType, err := checkVMDKDescriptor(cString(desc))
	info.Variant = createType
	if err != nil {
		return info, true, err
	}
	// Where qemu looks for a parent, whatever the header says.
	window := make([]byte, vmdkQemuDescLen)
	readPadded(r, size, vmdkQemuDescAt, window)
	if strings.Contains(cString(window), "parentFileNameHint") {
		return info, true, unsafe(VMDK, "the descriptor names a parent image (parentFileNameHint), another file that qemu-img would open")
	}
	return info, true, checkVMDKGrains(r, size, h, int64(descOffset), int64(descSectors))
}

// checkVMDKGrains walks the grain directory and grain tables as qemu reads
// them (get_cluster_offset): each grain table and each grain must lie in
// the file and be referenced once, apart from the header and descriptor
// (descriptor sectors from descOffset) and from each other. A sparse VMDK whose tables all point
// at one grain passes `qemu-img check` and expands 256 KiB to a disk of
// written data. Compressed grains (streamOptimized) vary in length, so
// only their first sectors are compared. Memory: one bit per sector of the
// file and one grain table; work: each table is read once.
func checkVMDKGrains(r io.ReaderAt, size int64, h []byte, descOffset, descSectors int64) error {
	capacity, granularity := le.Uint64(h[12:]), le.Uint64(h[20:])
	gtEntries, gdOffset := uint64(le.Uint32(h[44:])), le.Uint64(h[56:])
	compressed := le.Uint16(h[77:]) == 1
	zeroGrains := le.Uint32(h[8:])&vmdkFlagZeroGrain != 0
	perGD := gtEntries * granularity
	switch {
	case gtEntries == 0 || gtEntries > vmdkMaxGTEntries || granularity == 0 || granularity > vmdkMaxGranularity || perGD > 1<<32-1:
		return invalid(VMDK, "the grain table size %d or the grain size %d is invalid", gtEntries, granularity)
	case size/512 > vmdkMaxSectors:
		return &Error{Kind: ErrUnsupported, Format: VMDK, Reason: fmt.Sprintf("the file is over %d sectors, more than this importer checks", vmdkMaxSectors)}
	}
	gdEntries := (capacity + perGD - 1) / perGD
	if gdEntries*4 > uint64(size) || gdOffset > uint64(size)/512 || gdOffset*512+gdEntries*4 > uint64(size) {
		return invalid(VMDK, "the grain directory lies outside the file (truncated?)")
	}
	sectors := size / 512
	used := newClusterSet(sectors)
	claim := used.addRange         // marks sectors, false if one was taken
	claim(0, 1)                    // the header
	claim(descOffset, descSectors) // the descriptor, in the file (checked above)
	if !claim(int64(gdOffset), int64(gdEntries*4+511)/512) {
		return unsafe(VMDK, "the grain directory overlaps the header or the descriptor")
	}
	gd := make([]byte, min(gdEntries*4, 64<<10))
	gt := make([]byte, gtEntries*4)
	for i := uint64(0); i < gdEntries; i++ {
		if i*4%uint64(len(gd)) == 0 && !readAt(r, size, int64(gdOffset*512+i*4), gd[:min(uint64(len(gd)), (gdEntries-i)*4)]) {
			return invalid(VMDK, "the grain directory is truncated")
		}
		at := int64(le.Uint32(gd[i*4%uint64(len(gd)):]))
		if at == 0 {
			continue
		}
		if !readAt(r, size, at*512, gt) {
			return invalid(VMDK, "a grain table lies outside the file (truncated?)")
		}
		if !claim(at, (int64(len(gt))+511)/512) {
			return unsafe(VMDK, "a grain table is referenced twice or overlaps other metadata (grain directory entry %d), which makes a small file expand to a large disk", i)
		}
		for e := gt; len(e) >= 4; e = e[4:] {
			grain := int64(le.Uint32(e))
			switch {
			case grain == 0 || grain == 1 && zeroGrains:
				continue
			case compressed && grain >= sectors:
				return invalid(VMDK, "a grain lies outside the file (truncated?)")
			case compressed && !claim(grain, 1):
				return unsafe(VMDK, "a grain is referenced twice or overlaps the metadata, which makes a small file expand to a large disk")
			case compressed:
			case grain+int64(granularity) > sectors:
				return invalid(VMDK, "a grain lies outside the file (truncated?)")
			case !claim(grain, int64(granularity)):
				return unsafe(VMDK, "a grain is referenced twice or overlaps the metadata, which makes a small file expand to a large disk")
			}
		}
	}
	return nil
}

// vmdkFooter returns the header copy in a streamOptimized footer, where
// qemu reads it: 1536 bytes before the end of the file rounded up to a
// sector, after a footer marker and before an end-of-stream marker.
func vmdkFooter(r io.ReaderAt, size int64) ([]byte, error) {
	at := (size+511)&^511 - 3*512
	f := make([]byte, 3*512)
	if at < 512 || !readPadded(r, size, at, f) { // qemu reads zeros past the end
		return nil, invalid(VMDK, "the grain directory is at the end but the file is too short for a footer")
	}
	marker, header, eos := f[:512], f[512:1024], f[1024:]
	if string(header[:4]) != vmdkMagic || le.Uint32(marker[8:]) != 0 || le.Uint32(marker[12:]) != vmdkMarkerFooter ||
		le.Uint64(eos) != 0 || le.Uint32(eos[8:]) != 0 || le.Uint32(eos[12:]) != 0 {
		return nil, invalid(VMDK, "the grain directory is at the end but the footer is invalid")
	}
	return header[:vmdkHeaderLen], nil
}

// checkVMDKDescriptor checks an embedded descriptor the way qemu would read
// it and returns its createType. It must name exactly one extent, SPARSE,
// the file itself, and no parent.
func checkVMDKDescriptor(desc string) (string, error) {
	// qemu takes the first occurrence of the substring "createType"
	// (vmdk_parse_description), wherever it is: "xcreateType=" counts.
	if n := strings.Count(desc, "createType"); n != 1 {
		return "", unsafe(VMDK, "the descriptor has %d createType entries; exactly one is accepted", n)
	}
	i := strings.Index(desc, "createType") + len("createType")
	createType, _, closed := strings.Cut(desc[min(i+2, len(desc)):], `"`)
	switch {
	case !strings.HasPrefix(desc[i:], `="`) || !closed:
		return "", unsafe(VMDK, "the descriptor's createType is not of the form createType=\"...\"")
	case !vmdkSafeTypes[createType]:
		return createType, unsafe(VMDK, "only single-extent monolithicSparse or streamOptimized images are accepted (createType %q)", createType)
	case strings.Contains(desc, "parentFileNameHint"):
		return createType, unsafe(VMDK, "the descriptor names a parent image (parentFileNameHint), another file that qemu-img would open")
	}
	extents := vmdkExtentLines(desc)
	if len(extents) != 1 {
		return createType, unsafe(VMDK, "only single-extent monolithicSparse or streamOptimized images are accepted (the descriptor has %d extent lines)", len(extents))
	}
	if !vmdkSparseExtent.MatchString(extents[0]) {
		return createType, unsafe(VMDK, "the descriptor's one extent is not a SPARSE extent in the file itself: %q", extents[0])
	}
	return createType, nil
}

// vmdkExtentLines returns every extent line as qemu's sscanf could read
// one: from each line start (qemu splits lines at '\n' only) it skips
// whitespace, newlines included, and takes the first word; a word that is
// an access mode starts an extent. Each extent is returned once, from that
// word to the end of its line.
func vmdkExtentLines(desc string) []string {
	var lines []string
	word := -1 // the first non-space at or after the current line start
	last := -1 // the last word looked at
	for p := 0; p < len(desc); {
		// Line starts only grow, so word does too: the walk is linear
		// even in a descriptor of blank lines.
		word = max(word, p)
		for word < len(desc) && isCSpace(desc[word]) {
			word++
		}
		if word > last && word < len(desc) {
			last = word
			end := word
			for end < len(desc) && !isCSpace(desc[end]) {
				end++
			}
			if slicesContainsFold(vmdkExtentAccess, desc[word:end]) {
				eol := strings.IndexByte(desc[word:], '\n')
				if eol < 0 {
					eol = len(desc) - word
				}
				lines = append(lines, desc[word:word+eol])
			}
		}
		nl := strings.IndexByte(desc[p:], '\n')
		if nl < 0 {
			break
		}
		p += nl + 1
	}
	return lines
}

// vmdkTextProbe is qemu's vmdk_probe for text: after comment lines and
// lines of spaces, a line "version=1", "version=2" or "version=3" makes the
// bytes a VMDK descriptor file.
func vmdkTextProbe(buf []byte) bool {
	p := 0
	for p < len(buf) {
		switch buf[p] {
		case '#':
			for p < len(buf) && buf[p] != '\n' {
				p++
			}
			p++
			continue
		case ' ':
			for p < len(buf) && buf[p] == ' ' {
				p++
			}
			if p < len(buf) && buf[p] == '\r' {
				p++
			}
			if p == len(buf) || buf[p] != '\n' {
				return false
			}
			p++
			continue
		}
		rest := string(buf[p:])
		for _, v := range []string{"version=1", "version=2", "version=3"} {
			if strings.HasPrefix(rest, v+"\n") || strings.HasPrefix(rest, v+"\r\n") {
				return true
			}
		}
		return false
	}
	return false
}

// isCSpace is C's isspace in the C locale, what sscanf skips.
func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func slicesContainsFold(list []string, s string) bool {
	for _, w := range list {
		if strings.EqualFold(w, s) {
			return true
		}
	}
	return false
}

// cString is b up to its first NUL, as C string functions see it.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
