package diskformat

import (
	"bytes"
	"io"
	"regexp"
	"strings"
)

// VMDK, as VMware's "Virtual Disk Format 5.0" describes it.
const (
	vmdkMagic          = "KDMV"
	vmdkHeaderLen      = 77
	vmdkMaxDescriptor  = 64 << 10
	vmdkDescriptorHead = "# Disk DescriptorFile"
)

// vmdkSafeTypes hold their data in the one file that carries the descriptor.
var vmdkSafeTypes = map[string]bool{"monolithicSparse": true, "streamOptimized": true}

var (
	vmdkCreateType = regexp.MustCompile(`(?m)^\s*createType\s*=\s*"([^"]*)"`)
	vmdkExtent     = regexp.MustCompile(`(?m)^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(.*)$`)
)

func probeVMDK(r io.ReaderAt, size int64) (Info, bool, error) {
	head := make([]byte, len(vmdkDescriptorHead))
	if readAt(r, size, 0, head) && string(head) == vmdkDescriptorHead {
		return Info{Variant: "descriptor"}, true, unsafe(VMDK,
			"a descriptor file names other files as its extents; only single-file monolithicSparse or streamOptimized images are accepted")
	}
	h := make([]byte, vmdkHeaderLen)
	if !readAt(r, size, 0, h[:4]) || string(h[:4]) != vmdkMagic {
		return Info{}, false, nil
	}
	if !readAt(r, size, 0, h) {
		return Info{}, true, invalid(VMDK, "the header is truncated")
	}
	capacity := le.Uint64(h[12:]) // in 512-byte sectors
	descOffset, descSectors := le.Uint64(h[28:]), le.Uint64(h[36:])
	gdOffset := le.Uint64(h[56:])
	virtual, ok := mulFits(capacity, 512)
	info := Info{VirtualSize: virtual}
	switch {
	case !ok:
		return info, true, invalid(VMDK, "the capacity is absurd")
	case descOffset == 0 || descSectors == 0:
		return info, true, invalid(VMDK, "the image has no embedded descriptor")
	case descSectors > vmdkMaxDescriptor/512:
		return info, true, invalid(VMDK, "the descriptor is over %d bytes", vmdkMaxDescriptor)
	case gdOffset != ^uint64(0) && gdOffset*512 > uint64(size): // ^0: streamOptimized puts it in the footer
		return info, true, invalid(VMDK, "the grain directory lies outside the file (truncated?)")
	}
	desc := make([]byte, descSectors*512)
	if !readAt(r, size, int64(descOffset)*512, desc) {
		return info, true, invalid(VMDK, "the descriptor lies outside the file (truncated?)")
	}
	if i := bytes.IndexByte(desc, 0); i >= 0 {
		desc = desc[:i]
	}
	info.Variant, ok = checkVMDKDescriptor(string(desc))
	if !ok {
		return info, true, unsafe(VMDK, "only single-extent monolithicSparse or streamOptimized images are accepted (createType %q)", info.Variant)
	}
	return info, true, nil
}

// checkVMDKDescriptor returns the createType and whether the descriptor
// names exactly one SPARSE extent: the file itself.
func checkVMDKDescriptor(desc string) (createType string, ok bool) {
	if m := vmdkCreateType.FindStringSubmatch(desc); m != nil {
		createType = m[1]
	}
	extents := vmdkExtent.FindAllStringSubmatch(desc, -1)
	if !vmdkSafeTypes[createType] || len(extents) != 1 {
		return createType, false
	}
	return createType, strings.EqualFold(extents[0][3], "SPARSE")
}
