package nbdexport

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// socketPair returns the two ends of a connected stream socket.
func socketPair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "export"), os.NewFile(uintptr(fds[1]), "client")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestQemuImgConvertsIntoTheStream converts a qcow2 of data, holes and
// zeros written out into the export, and reads the raw disk back exactly,
// with Read and with ReadChunk.
func TestQemuImgConvertsIntoTheStream(t *testing.T) {
	dir := t.TempDir()
	const size = 9<<20 + 4096 // not a multiple of qcow2's clusters
	disk := make([]byte, size)
	rand.Read(disk[:3<<20])               // data
	rand.Read(disk[5<<20+512 : 6<<20+17]) // data that starts and ends mid-block
	rand.Read(disk[size-100:])            // data in the last block
	// [3 MiB, 5 MiB): a hole; [6 MiB, 9 MiB): zeros written out in the raw
	raw := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(raw, disk, 0o600); err != nil {
		t.Fatal(err)
	}
	qcow2 := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	for _, tc := range []struct {
		name string
		read func(*Export) ([]byte, error)
	}{
		{"Read", func(e *Export) ([]byte, error) { return io.ReadAll(e) }},
		{"ReadChunk", readChunks},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ours, theirs := socketPair(t)
			cmd := exec.Command("qemu-img", "convert", "-n", "-f", "qcow2", qcow2,
				"--target-image-opts", "driver=nbd,server.type=fd,server.str=3")
			cmd.ExtraFiles = []*os.File{theirs}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			theirs.Close()
			e := New(ours, size)
			got, readErr := tc.read(e)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("qemu-img convert into the export: %v: %s", err, stderr.String())
			}
			if readErr != nil {
				t.Fatalf("reading the export: %v", readErr)
			}
			if !bytes.Equal(got, disk) {
				t.Fatalf("the stream (%d bytes) differs from the disk (%d bytes)", len(got), len(disk))
			}
			if e.Writes == 0 {
				t.Errorf("qemu-img sent no write")
			}
			t.Logf("%d writes, %d write-zeroes, %d flushes", e.Writes, e.WriteZeroes, e.Flushes)
		})
	}
}

// readChunks reads e to its end with ReadChunk, in 1 MiB chunks, and
// fails when a run of zeros was written into the buffer or none came.
func readChunks(e *Export) ([]byte, error) {
	var all []byte
	runs := 0
	buf := make([]byte, 1<<20)
	for {
		for i := range buf {
			buf[i] = 0xff
		}
		n, zeros, err := e.ReadChunk(buf)
		if zeros {
			if bytes.Count(buf, []byte{0xff}) != len(buf) {
				return all, errors.New("a run of zeros was written into the buffer")
			}
			all = append(all, make([]byte, n)...)
			runs++
		} else {
			all = append(all, buf[:n]...)
		}
		if err == io.EOF {
			if runs == 0 {
				return all, errors.New("no run of zeros")
			}
			return all, nil
		}
		if err != nil {
			return all, err
		}
	}
}

// client is a minimal NBD client, to send what qemu-img would not.
type client struct {
	t    *testing.T
	conn *os.File
}

func newClient(t *testing.T, conn *os.File) *client {
	c := &client{t: t, conn: conn}
	var greeting [18]byte
	c.read(greeting[:])
	c.write(binary.BigEndian.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes))
	opt := binary.BigEndian.AppendUint64(nil, optMagic)
	opt = binary.BigEndian.AppendUint32(opt, optExportName)
	opt = binary.BigEndian.AppendUint32(opt, 0)
	c.write(opt)
	var export [10]byte
	c.read(export[:])
	return c
}

func (c *client) read(b []byte) {
	if _, err := io.ReadFull(c.conn, b); err != nil {
		c.t.Errorf("client: %v", err)
	}
}

func (c *client) write(b []byte) {
	if _, err := c.conn.Write(b); err != nil {
		c.t.Errorf("client: %v", err)
	}
}

// send sends one request and returns the error number of its reply.
func (c *client) send(typ uint16, offset uint64, data []byte, length uint32) uint32 {
	h := binary.BigEndian.AppendUint32(nil, requestMagic)
	h = binary.BigEndian.AppendUint16(h, 0)
	h = binary.BigEndian.AppendUint16(h, typ)
	h = binary.BigEndian.AppendUint64(h, 7)
	h = binary.BigEndian.AppendUint64(h, offset)
	h = binary.BigEndian.AppendUint32(h, length)
	c.write(append(h, data...))
	if typ == cmdDisc {
		return 0
	}
	var r [16]byte
	c.read(r[:])
	return binary.BigEndian.Uint32(r[4:])
}

func TestUnwrittenRangesReadAsZeros(t *testing.T) {
	ours, theirs := socketPair(t)
	e := New(ours, 64)
	go func() {
		c := newClient(t, theirs)
		c.send(cmdWrite, 8, []byte("abcd"), 4)
		c.send(cmdWriteZeroes, 20, nil, 10)
		c.send(cmdFlush, 0, nil, 0)
		c.send(cmdWrite, 40, []byte("xy"), 2)
		c.send(cmdDisc, 0, nil, 0)
	}()
	got, err := io.ReadAll(e)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 64)
	copy(want[8:], "abcd")
	copy(want[40:], "xy")
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestRefuses: a write out of order, past the disk, a read or a trim fail
// the stream, and the client is told.
func TestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		typ    uint16
		offset uint64
		length uint32
		errno  uint32
	}{
		{"a write before the stream's position", cmdWrite, 0, 4, errPerm},
		{"a write past the disk", cmdWrite, 62, 4, errNoSpc},
		{"write-zeroes that overflow", cmdWriteZeroes, 1<<64 - 2, 4, errNoSpc},
		{"a read", cmdRead, 0, 4, errNotSup},
		{"a trim", 4, 16, 4, errNotSup},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ours, theirs := socketPair(t)
			e := New(ours, 64)
			errno := make(chan uint32, 1)
			go func() {
				c := newClient(t, theirs)
				c.send(cmdWrite, 8, []byte("abcd"), 4)
				var data []byte
				if tc.typ == cmdWrite && tc.offset < 64 {
					data = make([]byte, tc.length)
				}
				errno <- c.send(tc.typ, tc.offset, data, tc.length)
			}()
			_, err := io.ReadAll(e)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("reading: %v, want an NBD client error", err)
			}
			if got := <-errno; got != tc.errno {
				t.Errorf("the client was told %d, want %d", got, tc.errno)
			}
			t.Log(err)
		})
	}
}

func TestClientGoneIsAnError(t *testing.T) {
	ours, theirs := socketPair(t)
	e := New(ours, 64)
	go func() {
		c := newClient(t, theirs)
		h := binary.BigEndian.AppendUint32(nil, requestMagic)
		h = binary.BigEndian.AppendUint16(h, 0)
		h = binary.BigEndian.AppendUint16(h, cmdWrite)
		h = binary.BigEndian.AppendUint64(h, 1)
		h = binary.BigEndian.AppendUint64(h, 0)
		h = binary.BigEndian.AppendUint32(h, 32)
		c.write(append(h, "only part of it"...))
		theirs.Close()
	}()
	_, err := io.ReadAll(e)
	if err == nil || errors.Is(err, ErrProtocol) {
		t.Fatalf("reading: %v, want the connection's end", err)
	}
	t.Log(err)
}

// TestReadChunkTellsZerosApart: ReadChunk returns data up to a run of
// zeros, and the run (a gap, write-zeroes, the unwritten end) as a count
// that leaves the buffer untouched; the chunks make up the disk exactly.
func TestReadChunkTellsZerosApart(t *testing.T) {
	ours, theirs := socketPair(t)
	e := New(ours, 64)
	go func() {
		c := newClient(t, theirs)
		c.send(cmdWrite, 0, []byte("head"), 4)
		c.send(cmdWrite, 8, []byte("abcd"), 4)    // a gap of 4 before it
		c.send(cmdWriteZeroes, 12, nil, 18)       // zeros right after data
		c.send(cmdWrite, 30, []byte("efghij"), 6) // data right after zeros
		c.send(cmdWrite, 36, []byte("kl"), 2)     // more data: the same chunk
		c.send(cmdDisc, 0, nil, 0)                // [38, 64) never written
	}()
	type piece struct {
		data  string
		zeros int
	}
	var got []piece
	for {
		buf := bytes.Repeat([]byte{0xff}, 16)
		n, zeros, err := e.ReadChunk(buf)
		switch {
		case zeros && !bytes.Equal(buf, bytes.Repeat([]byte{0xff}, 16)):
			t.Fatalf("a run of zeros was written into the buffer: %q", buf)
		case zeros:
			got = append(got, piece{zeros: n})
		case n > 0:
			got = append(got, piece{data: string(buf[:n])})
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []piece{{data: "head"}, {zeros: 4}, {data: "abcd"}, {zeros: 16}, {zeros: 2}, {data: "efghijkl"}, {zeros: 16}, {zeros: 10}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("chunks %v, want %v", got, want)
	}
}
