package testimages

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// SharedBlockVHD writes shared-block.vhd, a dynamic VHD made by qemu-img
// (1 GiB, one 2 MiB block of data, about 2 MiB of file) whose block
// allocation table points every entry at that one block: qemu-img reads a
// disk of 1 GiB of data from it (qemu-img check does not check VHD).
func SharedBlockVHD(t testing.TB, dir string) string {
	t.Helper()
	raw := filepath.Join(dir, "one-block.raw")
	write(t, raw, bytes.Repeat([]byte("one block "), 1<<20/10))
	if err := os.Truncate(raw, 1<<30); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "shared-block.vhd")
	QemuImg(t, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", raw, path)
	os.Remove(raw)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	dyn := data[be.Uint64(data[16:]):]
	table, entries := be.Uint64(dyn[16:]), uint64(be.Uint32(dyn[28:]))
	first := be.Uint32(data[table:])
	for i := range entries {
		be.PutUint32(data[table+i*4:], first)
	}
	return write(t, path, data)
}

// SharedBlockVHDX writes shared-block.vhdx, a VHDX made by qemu-img (1 GiB
// of 1 MiB blocks, one of them with data) whose block allocation table
// points every payload entry at that one block. `qemu-img check` finds
// nothing wrong and qemu-img reads a disk of 1 GiB of data from it.
func SharedBlockVHDX(t testing.TB, dir string) string {
	t.Helper()
	raw := filepath.Join(dir, "one-block.raw")
	write(t, raw, bytes.Repeat([]byte("one block "), 1<<20/10))
	if err := os.Truncate(raw, 1<<30); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "shared-block.vhdx")
	QemuImg(t, "convert", "-f", "raw", "-O", "vhdx", "-o", "block_size=1M", raw, path)
	os.Remove(raw)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The region table at 192 KiB; the BAT region's GUID in on-disk order.
	le := binary.LittleEndian
	batID := []byte{0x66, 0x77, 0xC2, 0x2D, 0x23, 0xF6, 0x00, 0x42, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08}
	var bat uint64
	for i := range le.Uint32(data[192<<10+8:]) {
		e := data[192<<10+16+32*int(i):]
		if bytes.Equal(e[:16], batID) {
			bat = le.Uint64(e[16:])
		}
	}
	if bat == 0 {
		t.Fatal("no block allocation table in the VHDX qemu-img made")
	}
	// 1 GiB of 1 MiB blocks: 1024 payload entries, before the first sector
	// bitmap entry (one per 4096 of 512-byte-sector blocks).
	first := le.Uint64(data[bat:])
	for i := range uint64(1024) {
		le.PutUint64(data[bat+i*8:], first)
	}
	return write(t, path, data)
}
