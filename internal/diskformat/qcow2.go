package diskformat

import "io"

// qcow2, as docs/interop/qcow2.txt in QEMU describes it.
const (
	qcow2Magic            = "QFI\xfb"
	qcow2V2HeaderLen      = 72
	qcow2V3HeaderLen      = 104
	qcow2MaxHeaderLen     = 4096
	qcow2ExtEnd           = 0x00000000
	qcow2ExtBackingFormat = 0xe2792aca
	qcow2ExtDataFile      = 0x44415441
	qcow2MaxExtensions    = 64
	qcow2MaxL1Entries     = 32 << 20 / 8 // QEMU's limit: a 32 MiB L1 table
	qcow2OffsetMask       = 0x00fffffffffffe00
	qcow2Compressed       = 1 << 62

	qcow2IncompatDirty       = 1 << 0
	qcow2IncompatCorrupt     = 1 << 1
	qcow2IncompatDataFile    = 1 << 2
	qcow2IncompatCompression = 1 << 3
	qcow2IncompatExtendedL2  = 1 << 4
	qcow2IncompatKnown       = qcow2IncompatDirty | qcow2IncompatCorrupt | qcow2IncompatDataFile | qcow2IncompatCompression | qcow2IncompatExtendedL2
)

func probeQcow2(r io.ReaderAt, size int64) (Info, bool, error) {
	h := make([]byte, qcow2V3HeaderLen)
	if !readAt(r, size, 0, h[:4]) || string(h[:4]) != qcow2Magic {
		return Info{}, false, nil
	}
	if !readAt(r, size, 0, h[:qcow2V2HeaderLen]) {
		return Info{}, true, invalid(Qcow2, "the header is truncated")
	}
	version := be.Uint32(h[4:])
	info := Info{Variant: map[uint32]string{2: "v2", 3: "v3"}[version]}
	if info.Variant == "" {
		return info, true, invalid(Qcow2, "version %d is not 2 or 3", version)
	}
	clusterBits := be.Uint32(h[20:])
	virtual := be.Uint64(h[24:])
	info.VirtualSize = int64(virtual)
	switch {
	case clusterBits < 9 || clusterBits > 21:
		return info, true, invalid(Qcow2, "cluster size 2^%d is out of range", clusterBits)
	case virtual > 1<<62:
		return info, true, invalid(Qcow2, "the virtual size is absurd")
	case be.Uint64(h[8:]) != 0 || be.Uint32(h[16:]) != 0:
		return info, true, unsafe(Qcow2, "the image has a backing file, which could read any file of the host")
	case be.Uint32(h[32:]) != 0:
		return info, true, unsafe(Qcow2, "the image is encrypted")
	}
	if err := checkQcow2Tables(h, size); err != nil {
		return info, true, err
	}
	headerLen := uint32(qcow2V2HeaderLen)
	if version == 3 {
		if !readAt(r, size, 0, h) {
			return info, true, invalid(Qcow2, "the version 3 header is truncated")
		}
		incompat := be.Uint64(h[72:])
		switch {
		case incompat&^qcow2IncompatKnown != 0:
			return info, true, unsafe(Qcow2, "unknown incompatible features 0x%x", incompat&^qcow2IncompatKnown)
		case incompat&qcow2IncompatDataFile != 0:
			return info, true, unsafe(Qcow2, "the image has an external data file, which could read any file of the host")
		case incompat&qcow2IncompatCorrupt != 0:
			return info, true, invalid(Qcow2, "the image is marked corrupt")
		}
		headerLen = be.Uint32(h[100:])
		if headerLen < qcow2V3HeaderLen || headerLen > qcow2MaxHeaderLen || headerLen%8 != 0 {
			return info, true, invalid(Qcow2, "header length %d is invalid", headerLen)
		}
	}
	if err := checkQcow2Extensions(r, size, int64(headerLen), int64(1)<<clusterBits); err != nil {
		return info, true, err
	}
	extendedL2 := version == 3 && be.Uint64(h[72:])&qcow2IncompatExtendedL2 != 0
	return info, true, checkQcow2Clusters(r, size, h, extendedL2)
}

// checkQcow2Clusters walks the L1 and L2 tables and checks that every
// cluster they point at lies in the file: a truncated image fails here
// instead of reading as zeros in qemu-img. It holds one L2 table at a time.
func checkQcow2Clusters(r io.ReaderAt, size int64, h []byte, extendedL2 bool) error {
	clusterBits := be.Uint32(h[20:])
	clusterSize := int64(1) << clusterBits
	l1Entries, l1Offset := int64(be.Uint32(h[36:])), int64(be.Uint64(h[40:]))
	if l1Entries > qcow2MaxL1Entries {
		return invalid(Qcow2, "the L1 table has %d entries", l1Entries)
	}
	entrySize := int64(8)
	if extendedL2 {
		entrySize = 16
	}
	// Only the L1 entries the virtual size needs, and each L2 table once:
	// the walk reads at most the file's size, whatever the header claims.
	perL2 := clusterSize * (clusterSize / entrySize)
	l1Entries = min(l1Entries, int64((be.Uint64(h[24:])+uint64(perL2)-1)/uint64(perL2)))
	seen := map[int64]bool{}
	l1 := make([]byte, 8)
	l2 := make([]byte, clusterSize)
	for i := range l1Entries {
		if !readAt(r, size, l1Offset+i*8, l1) {
			return invalid(Qcow2, "the L1 table is truncated")
		}
		l2Offset := int64(be.Uint64(l1) & qcow2OffsetMask)
		if l2Offset == 0 || seen[l2Offset] {
			continue
		}
		seen[l2Offset] = true
		if l2Offset%clusterSize != 0 {
			return invalid(Qcow2, "an L2 table is not cluster-aligned")
		}
		if !readAt(r, size, l2Offset, l2) {
			return invalid(Qcow2, "an L2 table lies outside the file (truncated?)")
		}
		for e := l2; int64(len(e)) >= entrySize; e = e[entrySize:] {
			entry := be.Uint64(e)
			var off, end int64
			if entry&qcow2Compressed != 0 {
				// Compressed: the host offset is in the low 62-(cluster_bits-8) bits.
				off = int64(entry & (1<<(62-(clusterBits-8)) - 1))
				end = off + 1
			} else {
				off = int64(entry & qcow2OffsetMask)
				end = off + clusterSize
			}
			if off != 0 && end > size {
				return invalid(Qcow2, "a data cluster lies outside the file (truncated?)")
			}
		}
	}
	return nil
}

// checkQcow2Tables checks that the L1 and refcount tables lie in the file:
// a truncated image fails here rather than reading as zeros in qemu-img.
func checkQcow2Tables(h []byte, size int64) error {
	l1Entries, l1Offset := be.Uint32(h[36:]), be.Uint64(h[40:])
	rcOffset, rcClusters := be.Uint64(h[48:]), be.Uint32(h[56:])
	clusterSize := uint64(1) << be.Uint32(h[20:])
	l1End := l1Offset + uint64(l1Entries)*8
	rcEnd := rcOffset + uint64(rcClusters)*clusterSize
	switch {
	case l1Entries > 0 && (l1Offset%clusterSize != 0 || l1End < l1Offset || l1End > uint64(size)):
		return invalid(Qcow2, "the L1 table lies outside the file (truncated?)")
	case rcOffset%clusterSize != 0 || rcClusters == 0 || rcEnd < rcOffset || rcEnd > uint64(size):
		return invalid(Qcow2, "the refcount table lies outside the file (truncated?)")
	}
	return nil
}

// checkQcow2Extensions walks the header extensions in the first cluster and
// refuses an external data file or a backing format.
func checkQcow2Extensions(r io.ReaderAt, size, off, clusterSize int64) error {
	hdr := make([]byte, 8)
	for range qcow2MaxExtensions {
		if off+8 > clusterSize || !readAt(r, size, off, hdr) {
			return invalid(Qcow2, "the header extensions run past the first cluster")
		}
		typ, length := be.Uint32(hdr), int64(be.Uint32(hdr[4:]))
		switch typ {
		case qcow2ExtEnd:
			return nil
		case qcow2ExtDataFile:
			return unsafe(Qcow2, "the image names an external data file, which could read any file of the host")
		case qcow2ExtBackingFormat:
			return unsafe(Qcow2, "the image names a backing file format")
		}
		off += 8 + (length+7)&^7
	}
	return invalid(Qcow2, "too many header extensions")
}
