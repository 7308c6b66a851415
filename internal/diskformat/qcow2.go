package diskformat

import (
	"fmt"
	"io"
	"slices"
)

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
	// qcow2MaxHostClusters bounds the bitsets of the cluster walk to 32 MiB
	// each: a 128 GiB file of 512-byte clusters, 16 TiB of 64 KiB ones.
	qcow2MaxHostClusters = 1 << 28
	// qcow2MaxCompressed bounds the compressed descriptors kept to 32 MiB:
	// 256 GiB of data in 64 KiB clusters.
	qcow2MaxCompressed = 4 << 20

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

// checkQcow2Clusters walks the L1 and L2 tables. Every cluster they point
// at must lie in the file (a truncated image fails here instead of reading
// as zeros in qemu-img), be aligned, and be referenced once: qemu never
// shares a cluster within the active tables (only snapshots share, and
// they have tables of their own), so an L2 table or a data cluster that two
// entries point at is a crafted image that expands far beyond its size.
// Compressed clusters legitimately share host clusters with each other, so
// they are kept apart: a compressed descriptor may be used once, and the
// host clusters it spans may hold no table or uncompressed data.
//
// Memory: one L2 table, two bitsets of one bit per host cluster of the file
// and eight bytes per compressed cluster, all bounded. Work: each L2 table
// is read once, and every table lies in the file, so the walk reads at most
// the file's size whatever the header claims.
func checkQcow2Clusters(r io.ReaderAt, size int64, h []byte, extendedL2 bool) error {
	clusterBits := be.Uint32(h[20:])
	clusterSize := int64(1) << clusterBits
	l1Entries, l1Offset := int64(be.Uint32(h[36:])), int64(be.Uint64(h[40:]))
	if l1Entries > qcow2MaxL1Entries {
		return invalid(Qcow2, "the L1 table has %d entries", l1Entries)
	}
	hostClusters := (size + clusterSize - 1) / clusterSize
	if hostClusters > qcow2MaxHostClusters {
		return &Error{Kind: ErrUnsupported, Format: Qcow2, Reason: fmt.Sprintf(
			"the file has %d clusters of %d bytes, over the %d this importer checks", hostClusters, clusterSize, qcow2MaxHostClusters)}
	}
	entrySize := int64(8)
	if extendedL2 {
		entrySize = 16
	}
	used := newClusterSet(hostClusters)       // header, tables, uncompressed data
	compressed := newClusterSet(hostClusters) // host clusters holding compressed data
	var compressedAt []uint64                 // compressed descriptors' host offsets
	used.add(0)                               // the header
	for off := l1Offset &^ (clusterSize - 1); off < l1Offset+l1Entries*8; off += clusterSize {
		used.add(off / clusterSize)
	}
	// Only the L1 entries the virtual size needs: qemu ignores the rest.
	perL2 := clusterSize * (clusterSize / entrySize)
	l1Entries = min(l1Entries, int64((be.Uint64(h[24:])+uint64(perL2)-1)/uint64(perL2)))
	rcOffset, rcClusters := int64(be.Uint64(h[48:])), int64(be.Uint32(h[56:]))
	for i := range rcClusters {
		if !used.add(rcOffset/clusterSize + i) {
			return invalid(Qcow2, "the refcount table overlaps the header or the L1 table")
		}
	}

	csizeShift := 62 - (clusterBits - 8)
	csizeMask := uint64(1)<<(clusterBits-8) - 1
	coffsetMask := uint64(1)<<csizeShift - 1
	l1 := make([]byte, min(l1Entries*8, 64<<10))
	l2 := make([]byte, clusterSize)
	for i := int64(0); i < l1Entries; i++ {
		if i*8%int64(len(l1)) == 0 {
			chunk := l1[:min(int64(len(l1)), (l1Entries-i)*8)]
			if !readAt(r, size, l1Offset+i*8, chunk) {
				return invalid(Qcow2, "the L1 table is truncated")
			}
		}
		l2Offset := int64(be.Uint64(l1[i*8%int64(len(l1)):]) & qcow2OffsetMask)
		switch {
		case l2Offset == 0:
			continue
		case l2Offset%clusterSize != 0:
			return invalid(Qcow2, "an L2 table is not cluster-aligned")
		case !readAt(r, size, l2Offset, l2):
			return invalid(Qcow2, "an L2 table lies outside the file (truncated?)")
		case !used.add(l2Offset / clusterSize):
			return unsafe(Qcow2, "an L2 table is referenced twice or overlaps other metadata (L1 entry %d), which makes a small file expand to a large disk", i)
		case compressed.has(l2Offset / clusterSize):
			return unsafe(Qcow2, "an L2 table overlaps compressed data (L1 entry %d)", i)
		}
		for e := l2; int64(len(e)) >= entrySize; e = e[entrySize:] {
			entry := be.Uint64(e)
			if entry&qcow2Compressed != 0 {
				coff := entry & coffsetMask
				csize := ((entry>>csizeShift)&csizeMask+1)*512 - coff%512
				if coff >= uint64(size) {
					return invalid(Qcow2, "a compressed cluster lies outside the file (truncated?)")
				}
				last := min(coff+csize-1, uint64(size)-1) // qemu reads zeros past the end
				for c := int64(coff) / clusterSize; c <= int64(last)/clusterSize; c++ {
					if used.has(c) {
						return unsafe(Qcow2, "compressed data overlaps an L2 table, the metadata or an uncompressed cluster")
					}
					compressed.add(c)
				}
				if len(compressedAt) >= qcow2MaxCompressed {
					return &Error{Kind: ErrUnsupported, Format: Qcow2, Reason: fmt.Sprintf(
						"the image has over %d compressed clusters, more than this importer checks", qcow2MaxCompressed)}
				}
				compressedAt = append(compressedAt, coff)
				continue
			}
			off := int64(entry & qcow2OffsetMask)
			switch {
			case off == 0:
				continue
			case off%clusterSize != 0:
				return invalid(Qcow2, "a data cluster is not cluster-aligned")
			case off+clusterSize > size:
				return invalid(Qcow2, "a data cluster lies outside the file (truncated?)")
			case !used.add(off / clusterSize):
				return unsafe(Qcow2, "a data cluster is referenced twice or overlaps the metadata, which makes a small file expand to a large disk")
			case compressed.has(off / clusterSize):
				return unsafe(Qcow2, "a data cluster overlaps compressed data")
			}
		}
	}
	slices.Sort(compressedAt)
	for i := 1; i < len(compressedAt); i++ {
		if compressedAt[i] == compressedAt[i-1] {
			return unsafe(Qcow2, "a compressed cluster is referenced twice, which makes a small file expand to a large disk")
		}
	}
	return nil
}

// clusterSet is a set of host cluster (or sector) indexes below n, one bit
// each.
type clusterSet struct {
	bits []uint64
	n    int64
}

func newClusterSet(n int64) clusterSet { return clusterSet{make([]uint64, (n+63)/64), n} }

// add puts c in the set and reports whether it was new. An index outside
// the file is never new.
func (s clusterSet) add(c int64) bool {
	if c < 0 || c >= s.n || s.bits[c/64]&(1<<(c%64)) != 0 {
		return false
	}
	s.bits[c/64] |= 1 << (c % 64)
	return true
}

// addRange puts [from, from+n) in the set and reports whether all of it
// was new; it stops at the first index that was not.
func (s clusterSet) addRange(from, n int64) bool {
	if from < 0 || n < 0 || from > s.n-n {
		return false
	}
	for c := from; c < from+n; {
		if c%64 == 0 && c+64 <= from+n { // a whole word at once
			if s.bits[c/64] != 0 {
				return false
			}
			s.bits[c/64] = ^uint64(0)
			c += 64
			continue
		}
		if !s.add(c) {
			return false
		}
		c++
	}
	return true
}

func (s clusterSet) has(c int64) bool {
	return c >= 0 && c < s.n && s.bits[c/64]&(1<<(c%64)) != 0
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
