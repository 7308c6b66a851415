package testimages

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"testing"
)

// SharedClusterQcow2 writes shared-cluster.qcow2: six 64 KiB clusters
// (384 KiB) describing a disk of virtual bytes (a multiple of 512 MiB) in
// which every L1 entry points at the one L2 table and every L2 entry at the
// one data cluster, full of non-zero bytes. The refcounts match the
// references (32-bit refcounts), so `qemu-img check` finds nothing wrong,
// and qemu-img convert writes virtual bytes of data: 64 GiB from 384 KiB.
func SharedClusterQcow2(t testing.TB, dir string, virtual int64) string {
	t.Helper()
	const clusterBits = 16
	perL2 := int64(1) << (clusterBits - 3)
	tables := virtual >> clusterBits / perL2
	if tables == 0 || tables*perL2<<clusterBits != virtual {
		t.Fatalf("SharedClusterQcow2: %d is not a multiple of 512 MiB", virtual)
	}
	l1 := make([]int64, tables)
	for i := range l1 {
		l1[i] = 4
	}
	l2 := make([]int64, perL2)
	for i := range l2 {
		l2[i] = 5
	}
	return write(t, filepath.Join(dir, "shared-cluster.qcow2"),
		handQcow2(t, clusterBits, virtual, l1, map[int64][]int64{4: l2}))
}

// SharedL2Qcow2 writes shared-l2.qcow2, a qcow2 of 512-byte clusters whose
// two L1 entries point at the same L2 table; that table's 64 entries point
// at 64 distinct data clusters. Refcounts match the references, so
// `qemu-img check` passes, and the disk (64 KiB) holds the same 32 KiB twice.
func SharedL2Qcow2(t testing.TB, dir string) string {
	t.Helper()
	l2 := make([]int64, 64)
	for i := range l2 {
		l2[i] = 5 + int64(i)
	}
	return write(t, filepath.Join(dir, "shared-l2.qcow2"),
		handQcow2(t, 9, 2*64*512, []int64{4, 4}, map[int64][]int64{4: l2}))
}

// handQcow2 lays out a qcow2 v3 with 32-bit refcounts: cluster 0 the
// header, 1 the L1 table, 2 the refcount table, 3 its one refcount block;
// l1 and l2s give, by cluster index, where each L1 and L2 entry points
// (0: unallocated). Every other cluster an entry names holds data. The
// refcounts are the number of references; the COPIED flag is set where a
// refcount is 1, as qemu-img check wants.
func handQcow2(t testing.TB, clusterBits uint32, virtual int64, l1 []int64, l2s map[int64][]int64) []byte {
	t.Helper()
	cs := int64(1) << clusterBits
	refs := map[int64]uint32{0: 1, 1: 1, 2: 1, 3: 1}
	last := int64(3)
	for _, t := range l1 {
		if t == 0 {
			continue
		}
		refs[t]++
		last = max(last, t)
		for _, c := range l2s[t] { // each reference to a table references its clusters again
			if c != 0 {
				refs[c]++
				last = max(last, c)
			}
		}
	}
	if last >= cs/4 || int64(len(l1))*8 > cs {
		t.Fatal("handQcow2: the layout does not fit one refcount block or one L1 cluster")
	}
	img := make([]byte, (last+1)*cs)
	be := binary.BigEndian
	copy(img, "QFI\xfb")
	be.PutUint32(img[4:], 3)
	be.PutUint32(img[20:], clusterBits)
	be.PutUint64(img[24:], uint64(virtual))
	be.PutUint32(img[36:], uint32(len(l1)))
	be.PutUint64(img[40:], uint64(cs))   // L1 table
	be.PutUint64(img[48:], uint64(2*cs)) // refcount table
	be.PutUint32(img[56:], 1)
	be.PutUint32(img[96:], 5) // refcount order: 32 bits
	be.PutUint32(img[100:], 104)
	be.PutUint64(img[2*cs:], uint64(3*cs))
	const copied = 1 << 63
	entry := func(c int64) uint64 {
		if c == 0 {
			return 0
		}
		if refs[c] == 1 {
			return uint64(c*cs) | copied
		}
		return uint64(c * cs)
	}
	for i, c := range l1 {
		be.PutUint64(img[cs+int64(i)*8:], entry(c))
	}
	tables := map[int64]bool{0: true, 1: true, 2: true, 3: true}
	for at, entries := range l2s {
		tables[at] = true
		for i, c := range entries {
			be.PutUint64(img[at*cs+int64(i)*8:], entry(c))
		}
	}
	for c, n := range refs {
		be.PutUint32(img[3*cs+c*4:], n)
		if !tables[c] {
			copy(img[c*cs:(c+1)*cs], bytes.Repeat([]byte{byte(c) | 0x80}, int(cs)))
		}
	}
	return img
}
