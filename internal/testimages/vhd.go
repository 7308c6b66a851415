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
