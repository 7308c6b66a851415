// Command volcheck writes and reads volumes in the local cluster's storage tests, the way dd
// would: `volcheck write PATH BYTES` writes BYTES of a fixed pseudo-random pattern to PATH (a
// file it creates, or a block device) and syncs it; `volcheck read PATH BYTES` reads the first
// BYTES of PATH. Both print the SHA-256 of those bytes, which the test compares with the
// pattern's. The images hold no shell and no dd: this is their dd.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) != 4 || (os.Args[1] != "write" && os.Args[1] != "read") {
		fmt.Fprintln(os.Stderr, "usage: volcheck write|read PATH BYTES")
		os.Exit(2)
	}
	n, err := strconv.ParseInt(os.Args[3], 10, 64)
	if err == nil {
		err = run(os.Args[1], os.Args[2], n)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "volcheck:", err)
		os.Exit(1)
	}
}

func run(op, path string, n int64) error {
	h := sha256.New()
	if op == "write" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(Pattern(), n)); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	} else {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if m, err := io.Copy(h, io.LimitReader(f, n)); err != nil || m != n {
			return fmt.Errorf("read %d of %d bytes: %v", m, n, err)
		}
	}
	fmt.Printf("%s %s %d sha256=%s\n", op, path, n, hex.EncodeToString(h.Sum(nil)))
	return nil
}

// Pattern is an endless stream of SHA-256 blocks of a counter: not zeros, which a sparse file
// or a fresh device would also read back.
func Pattern() io.Reader { return &pattern{} }

type pattern struct {
	i   uint64
	buf []byte
}

func (p *pattern) Read(b []byte) (int, error) {
	if len(p.buf) == 0 {
		s := sha256.Sum256([]byte(strconv.FormatUint(p.i, 10)))
		p.buf, p.i = s[:], p.i+1
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}
