package diskformat

import "io"

// ISO 9660: the primary volume descriptor is at sector 16 (2048-byte sectors).
const (
	isoPVDOffset = 16 * 2048
	isoPVDLen    = 2048
)

func probeISO(r io.ReaderAt, size int64) (Info, bool, error) {
	pvd := make([]byte, isoPVDLen)
	if !readAt(r, size, isoPVDOffset, pvd[:6]) || string(pvd[1:6]) != "CD001" {
		return Info{}, false, nil
	}
	if !readAt(r, size, isoPVDOffset, pvd) {
		return Info{}, true, invalid(ISO, "the volume descriptor is truncated")
	}
	if pvd[0] != 1 {
		return Info{}, true, invalid(ISO, "the first volume descriptor is type %d, not primary", pvd[0])
	}
	blocks, blockSize := uint64(le.Uint32(pvd[80:])), uint64(le.Uint16(pvd[128:]))
	virtual, ok := mulFits(blocks, blockSize)
	info := Info{VirtualSize: virtual}
	switch {
	case !ok || blockSize == 0:
		return info, true, invalid(ISO, "the volume size is absurd")
	case virtual > size:
		return info, true, invalid(ISO, "the file is shorter than the volume (truncated?)")
	}
	info.VirtualSize = size // qemu reads the whole file as raw sectors
	return info, true, nil
}
