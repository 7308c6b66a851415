package diskformat

import (
	"bytes"
	"fmt"
	"io"
)

// VHD, as Microsoft's "Virtual Hard Disk Image Format Specification" 1.0
// describes it: a 512-byte footer at the end (and, for dynamic disks, a
// copy at the start).
const (
	vhdCookie       = "conectix"
	vhdFooterLen    = 512
	vhdFixed        = 2
	vhdDynamic      = 3
	vhdDifferencing = 4
)

func probeVHD(r io.ReaderAt, size int64) (Info, bool, error) {
	footer := make([]byte, vhdFooterLen)
	atStart := readAt(r, size, 0, footer) && string(footer[:8]) == vhdCookie
	if !atStart && !(readAt(r, size, size-vhdFooterLen, footer) && string(footer[:8]) == vhdCookie) {
		return Info{}, false, nil
	}
	info := Info{VirtualSize: int64(be.Uint64(footer[48:]))}
	switch diskType := be.Uint32(footer[60:]); {
	case info.VirtualSize < 0:
		return info, true, invalid(VHD, "the virtual size is absurd")
	case diskType == vhdDifferencing:
		return info, true, unsafe(VHD, "a differencing disk reads its parent, another file")
	case diskType == vhdFixed && !atStart:
		info.Variant = "fixed"
		if size-vhdFooterLen < info.VirtualSize {
			return info, true, invalid(VHD, "the fixed disk is shorter than its virtual size (truncated?)")
		}
	case diskType == vhdDynamic && atStart:
		info.Variant = "dynamic"
		// The dynamic header, at the footer's data offset, must be in the file.
		if off := be.Uint64(footer[16:]); off > uint64(size) || !readAt(r, size, int64(off), make([]byte, 8)) {
			return info, true, invalid(VHD, "the dynamic disk header lies outside the file (truncated?)")
		}
		if err := checkVHDBlocks(r, size, int64(be.Uint64(footer[16:])), info.VirtualSize); err != nil {
			return info, true, err
		}
	default:
		return info, true, invalid(VHD, "disk type %d does not match where the footer is", diskType)
	}
	return info, true, nil
}

// vhdMaxSectors bounds the block walk's bitset to 32 MiB: a 128 GiB file.
const vhdMaxSectors = 1 << 28

// checkVHDBlocks walks the block allocation table of a dynamic disk as
// qemu's vpc driver reads it: each block (its bitmap, then its data) must
// lie in the file and be used once, apart from the footers, the dynamic
// header and the table. A 2 MiB VHD whose table points every entry at one
// block reads as 1 GiB of data. Memory: one bit per sector of the file.
func checkVHDBlocks(r io.ReaderAt, size, dynOffset, virtual int64) error {
	dyn := make([]byte, 36)
	if !readAt(r, size, dynOffset, dyn) {
		return invalid(VHD, "the dynamic disk header is truncated")
	}
	table, entries, blockSize := be.Uint64(dyn[16:]), int64(be.Uint32(dyn[28:])), int64(be.Uint32(dyn[32:]))
	switch {
	case blockSize < 512 || blockSize&(blockSize-1) != 0:
		return invalid(VHD, "the block size %d is not a power of two of at least 512", blockSize)
	case table > uint64(size) || int64(table)+entries*4 > size:
		return invalid(VHD, "the block allocation table lies outside the file (truncated?)")
	case size/512 > vhdMaxSectors:
		return &Error{Kind: ErrUnsupported, Format: VHD, Reason: fmt.Sprintf("the file is over %d sectors, more than this importer checks", vhdMaxSectors)}
	}
	bitmapSectors := (blockSize/(8*512) + 511) / 512
	blockSectors := bitmapSectors + blockSize/512
	used := newClusterSet(size / 512)
	used.addRange(0, 1)             // the footer's copy
	used.addRange(size/512-1, 1)    // the footer
	used.addRange(dynOffset/512, 2) // the dynamic header
	used.addRange(int64(table)/512, (entries*4+int64(table)%512+511)/512)
	entries = min(entries, (virtual+blockSize-1)/blockSize) // qemu reads no further
	bat := make([]byte, min(entries*4, 64<<10))
	for i := int64(0); i < entries; i++ {
		if i*4%int64(len(bat)) == 0 && !readAt(r, size, int64(table)+i*4, bat[:min(int64(len(bat)), (entries-i)*4)]) {
			return invalid(VHD, "the block allocation table is truncated")
		}
		at := be.Uint32(bat[i*4%int64(len(bat)):])
		switch {
		case at == 0xffffffff:
			continue
		case int64(at)+blockSectors > size/512:
			return invalid(VHD, "a block lies outside the file (truncated?)")
		case !used.addRange(int64(at), blockSectors):
			return unsafe(VHD, "a block is used twice or overlaps the metadata (table entry %d), which makes a small file expand to a large disk", i)
		}
	}
	return nil
}

// VHDX, as Microsoft's [MS-VHDX] describes it.
const (
	vhdxSignature      = "vhdxfile"
	vhdxRegionTable    = 192 << 10
	vhdxMaxRegions     = 2047
	vhdxMaxMetaEntries = 2047

	vhdxBlockFullyPresent     = 6
	vhdxBlockPartiallyPresent = 7
)

// GUIDs in their on-disk (mixed-endian) byte order.
var (
	vhdxMetadataRegion = guid(0x8B7CA206, 0x4790, 0x4B9A, [8]byte{0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E})
	vhdxVirtualSize    = guid(0x2FA54224, 0xCD1B, 0x4876, [8]byte{0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8})
	vhdxParentLocator  = guid(0xA8D35F2D, 0xB30B, 0x454D, [8]byte{0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C})
	vhdxFileParameters = guid(0xCAA16737, 0xFA36, 0x4D43, [8]byte{0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B})
	vhdxLogicalSector  = guid(0x8141BF1D, 0xA96F, 0x4709, [8]byte{0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F})
	vhdxBATRegion      = guid(0x2DC27766, 0xF623, 0x4200, [8]byte{0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08})
)

func guid(a uint32, b, c uint16, d [8]byte) []byte {
	g := make([]byte, 16)
	le.PutUint32(g, a)
	le.PutUint16(g[4:], b)
	le.PutUint16(g[6:], c)
	copy(g[8:], d[:])
	return g
}

func probeVHDX(r io.ReaderAt, size int64) (Info, bool, error) {
	sig := make([]byte, 8)
	if !readAt(r, size, 0, sig) || string(sig) != vhdxSignature {
		return Info{}, false, nil
	}
	metaOffset, metaLen, err := vhdxRegion(r, size, vhdxMetadataRegion, "metadata")
	if err != nil {
		return Info{}, true, err
	}
	head := make([]byte, 32)
	if !readAt(r, size, metaOffset, head) || string(head[:8]) != "metadata" {
		return Info{}, true, invalid(VHDX, "the metadata table is missing (truncated?)")
	}
	count := int(le.Uint16(head[10:]))
	if count > vhdxMaxMetaEntries || int64(32+count*32) > metaLen {
		return Info{}, true, invalid(VHDX, "the metadata table has %d entries", count)
	}
	entries := make([]byte, count*32)
	if !readAt(r, size, metaOffset+32, entries) {
		return Info{}, true, invalid(VHDX, "the metadata table is truncated")
	}
	info := Info{VirtualSize: -1}
	var blockSize, sectorSize int64
	for e := entries; len(e) >= 32; e = e[32:] {
		id, off, length := e[:16], int64(le.Uint32(e[16:])), int64(le.Uint32(e[20:]))
		item := func(what string) (uint64, error) {
			v := make([]byte, 8)
			if length < 4 || off+8 > metaLen || !readAt(r, size, metaOffset+off, v) {
				return 0, invalid(VHDX, "the %s lies outside the metadata region", what)
			}
			if length < 8 {
				return uint64(le.Uint32(v)), nil
			}
			return le.Uint64(v), nil
		}
		var v uint64
		switch {
		case bytes.Equal(id, vhdxParentLocator):
			return info, true, unsafe(VHDX, "a differencing disk reads its parent, another file")
		case bytes.Equal(id, vhdxVirtualSize):
			v, err = item("virtual size")
			info.VirtualSize = int64(v)
		case bytes.Equal(id, vhdxFileParameters):
			v, err = item("file parameters")
			blockSize = int64(uint32(v))
		case bytes.Equal(id, vhdxLogicalSector):
			v, err = item("logical sector size")
			sectorSize = int64(uint32(v))
		}
		if err != nil {
			return info, true, err
		}
	}
	if info.VirtualSize < 0 {
		return info, true, invalid(VHDX, "the virtual size is missing or absurd")
	}
	return info, true, checkVHDXBlocks(r, size, info.VirtualSize, blockSize, sectorSize, metaOffset, metaLen)
}

// vhdxMaxMiB bounds the block walk's bitset: one bit per MiB of the file.
const vhdxMaxMiB = 1 << 28

// checkVHDXBlocks walks the block allocation table as qemu's vhdx driver
// reads it (payload entries, skipping the sector bitmap entry after every
// chunk of them): each present payload block must lie in the file and be
// used once, apart from the headers, the metadata, the table and each
// other. qemu-img check does not look: a VHDX whose table points every
// entry at one block maps a disk of data.
func checkVHDXBlocks(r io.ReaderAt, size, virtual, blockSize, sectorSize, metaOffset, metaLen int64) error {
	const mib = 1 << 20
	switch {
	case blockSize < mib || blockSize > 256*mib || blockSize&(blockSize-1) != 0:
		return invalid(VHDX, "the block size %d is not a power of two from 1 MiB to 256 MiB", blockSize)
	case sectorSize != 512 && sectorSize != 4096:
		return invalid(VHDX, "the logical sector size %d is not 512 or 4096", sectorSize)
	case size/mib > vhdxMaxMiB:
		return &Error{Kind: ErrUnsupported, Format: VHDX, Reason: fmt.Sprintf("the file is over %d MiB, more than this importer checks", vhdxMaxMiB)}
	}
	batOffset, batLen, err := vhdxRegion(r, size, vhdxBATRegion, "block allocation table")
	if err != nil {
		return err
	}
	chunkRatio := (1 << 23) * sectorSize / blockSize
	blocks := (virtual + blockSize - 1) / blockSize
	total := blocks + max(blocks-1, 0)/chunkRatio
	if total*8 > batLen {
		return invalid(VHDX, "the block allocation table is too small for the virtual size")
	}
	used := newClusterSet((size + mib - 1) / mib)
	used.addRange(0, 1) // the headers and region tables
	used.addRange(batOffset/mib, (batOffset%mib+batLen+mib-1)/mib)
	if !used.addRange(metaOffset/mib, (metaOffset%mib+metaLen+mib-1)/mib) {
		return invalid(VHDX, "the metadata region overlaps the block allocation table or the headers")
	}
	bat := make([]byte, min(total*8, 64<<10))
	for i := int64(0); i < total; i++ {
		if i*8%int64(len(bat)) == 0 && !readAt(r, size, batOffset+i*8, bat[:min(int64(len(bat)), (total-i)*8)]) {
			return invalid(VHDX, "the block allocation table is truncated")
		}
		entry := le.Uint64(bat[i*8%int64(len(bat)):])
		if i%(chunkRatio+1) == chunkRatio || entry&7 != vhdxBlockFullyPresent && entry&7 != vhdxBlockPartiallyPresent {
			continue // a sector bitmap entry, or a block with no data in the file
		}
		off := int64(entry >> 20)
		switch {
		case off > size/mib || off*mib+blockSize > size:
			return invalid(VHDX, "a payload block lies outside the file (truncated?)")
		case !used.addRange(off, blockSize/mib):
			return unsafe(VHDX, "a payload block is used twice or overlaps the metadata (table entry %d), which makes a small file expand to a large disk", i)
		}
	}
	return nil
}

// vhdxRegion finds a region (metadata, block allocation table) in the
// region table.
func vhdxRegion(r io.ReaderAt, size int64, id []byte, what string) (int64, int64, error) {
	head := make([]byte, 16)
	if !readAt(r, size, vhdxRegionTable, head) || string(head[:4]) != "regi" {
		return 0, 0, invalid(VHDX, "the region table is missing (truncated?)")
	}
	count := le.Uint32(head[8:])
	if count > vhdxMaxRegions {
		return 0, 0, invalid(VHDX, "the region table has %d entries", count)
	}
	entries := make([]byte, count*32)
	if !readAt(r, size, vhdxRegionTable+16, entries) {
		return 0, 0, invalid(VHDX, "the region table is truncated")
	}
	for e := entries; len(e) >= 32; e = e[32:] {
		if bytes.Equal(e[:16], id) {
			off, length := le.Uint64(e[16:]), uint64(le.Uint32(e[24:]))
			if off+length < off || off+length > uint64(size) {
				return 0, 0, invalid(VHDX, "the %s region lies outside the file (truncated?)", what)
			}
			return int64(off), int64(length), nil
		}
	}
	return 0, 0, invalid(VHDX, "the %s region is missing", what)
}
