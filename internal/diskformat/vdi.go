package diskformat

import "io"

// VDI, as VirtualBox (and QEMU's block/vdi.c) lay it out.
const (
	vdiSignature  = 0xbeda107f
	vdiHeaderLen  = 456
	vdiDynamic    = 1
	vdiFixed      = 2
	vdiDiffImage  = 4
	vdiUUIDParent = 440
)

func probeVDI(r io.ReaderAt, size int64) (Info, bool, error) {
	h := make([]byte, vdiHeaderLen)
	if !readAt(r, size, 64, h[:4]) || le.Uint32(h[:4]) != vdiSignature {
		return Info{}, false, nil
	}
	if !readAt(r, size, 0, h) {
		return Info{}, true, invalid(VDI, "the header is truncated")
	}
	info := Info{VirtualSize: int64(le.Uint64(h[368:]))}
	imageType, dataOffset := le.Uint32(h[76:]), int64(le.Uint32(h[344:]))
	blockSize, blocks := uint64(le.Uint32(h[376:])), uint64(le.Uint32(h[384:]))
	span, spanOK := mulFits(blockSize, blocks)
	switch {
	case info.VirtualSize < 0 || !spanOK:
		return info, true, invalid(VDI, "the disk size is absurd")
	case imageType == vdiDiffImage || !allZero(h[vdiUUIDParent:vdiUUIDParent+16]):
		return info, true, unsafe(VDI, "a differencing image reads its parent, another file")
	case imageType != vdiDynamic && imageType != vdiFixed:
		return info, true, invalid(VDI, "image type %d is not dynamic or fixed", imageType)
	case dataOffset > size:
		return info, true, invalid(VDI, "the data lies outside the file (truncated?)")
	case imageType == vdiFixed && dataOffset+span > size:
		return info, true, invalid(VDI, "the fixed image is shorter than its blocks (truncated?)")
	}
	info.Variant = map[uint32]string{vdiDynamic: "dynamic", vdiFixed: "fixed"}[imageType]
	return info, true, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
