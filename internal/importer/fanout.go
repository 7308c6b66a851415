package importer

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// fanout copies one stream to several sinks (the staging file and the
// hashes), each in its own goroutine, so that md5, sha256, sha512 and the
// disk write run on all cores while the next chunk arrives. Memory is a
// fixed ring of chunks, whatever the image size.
type fanout struct {
	sinks []chan *chunk
	free  chan *chunk
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error
	done  func(n int) // progress callback, may be nil
}

const (
	chunkSize  = 1 << 20
	ringChunks = 8
)

type chunk struct {
	buf     []byte
	n       int
	zeros   bool // n zeros, which buf does not hold: see chunkReader
	pending atomic.Int32
}

// chunkReader is a source that tells runs of zeros without their bytes
// (nbdexport.Export): fanout hands them to the hashes from zeroBuf, one
// shared buffer of zeros that stays in the cache, and to a zeroWriter as a
// count, never cleared into a chunk, copied or compared.
type chunkReader interface {
	ReadChunk(p []byte) (n int, zeros bool, err error)
}

// zeroWriter is a sink that takes a run of zeros as a count (sparseWriter:
// a hole).
type zeroWriter interface {
	WriteZeros(n int) error
}

// zeroBuf is never written: its pages are the kernel's one zero page.
var zeroBuf [chunkSize]byte

// spareChunks are the chunks of the fanouts that closed, for the next ones:
// an import runs its fanouts one after another (two at once while it
// downloads), and memory must stay flat, not wait for the collector.
var spareChunks = make(chan *chunk, 2*ringChunks)

func newFanout(done func(int), sinks ...io.Writer) *fanout {
	f := &fanout{free: make(chan *chunk, ringChunks), done: done}
	for range ringChunks {
		select {
		case c := <-spareChunks:
			f.free <- c
		default:
			f.free <- &chunk{buf: make([]byte, chunkSize)}
		}
	}
	for _, w := range sinks {
		ch := make(chan *chunk, ringChunks)
		f.sinks = append(f.sinks, ch)
		f.wg.Add(1)
		go f.drain(w, ch)
	}
	return f
}

func (f *fanout) drain(w io.Writer, ch chan *chunk) {
	defer f.wg.Done()
	for c := range ch {
		if f.failed() == nil {
			if err := write(w, c); err != nil {
				f.fail(err)
			}
		}
		if c.pending.Add(-1) == 0 {
			f.free <- c
		}
	}
}

// write hands c to w.
func write(w io.Writer, c *chunk) error {
	if !c.zeros {
		_, err := w.Write(c.buf[:c.n])
		return err
	}
	if zw, ok := w.(zeroWriter); ok {
		return zw.WriteZeros(c.n)
	}
	_, err := w.Write(zeroBuf[:c.n])
	return err
}

func (f *fanout) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *fanout) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// ReadFrom copies r to every sink until EOF or an error of r or a sink.
func (f *fanout) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if err := f.failed(); err != nil {
			return total, &sinkError{err}
		}
		c := <-f.free
		n, zeros, err := fill(r, c.buf)
		if n > 0 {
			c.n, c.zeros = n, zeros
			c.pending.Store(int32(len(f.sinks)))
			for _, ch := range f.sinks {
				ch <- c
			}
			total += int64(n)
			if f.done != nil {
				f.done(n)
			}
		} else {
			f.free <- c
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return total, nil
		default:
			return total, err
		}
	}
}

// fill reads the next chunk of r into buf: a full buffer but at the end,
// or, from a chunkReader, the data up to a run of zeros, or zeros alone.
func fill(r io.Reader, buf []byte) (int, bool, error) {
	cr, ok := r.(chunkReader)
	if !ok {
		n, err := io.ReadFull(r, buf)
		return n, false, err
	}
	return cr.ReadChunk(buf) // short, and no error, before a run of zeros
}

// Write copies p to every sink; ReadFrom, which io.Copy uses, saves a copy.
func (f *fanout) Write(p []byte) (int, error) {
	n, err := f.ReadFrom(bytes.NewReader(p))
	return int(n), err
}

// Close waits for the sinks to write everything and returns their error.
func (f *fanout) Close() error {
	for _, ch := range f.sinks {
		close(ch)
	}
	f.wg.Wait()
	for len(f.free) > 0 {
		select {
		case spareChunks <- <-f.free: // evaluated first: a chunk not kept is garbage
		default:
			return f.failed()
		}
	}
	return f.failed()
}

// sinkError is a failure to write, not to read: the disk, not the network.
type sinkError struct{ err error }

func (e *sinkError) Error() string { return e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }

// digests are the hashes of one stream.
type digests struct {
	md5, sha256, sha512 hash.Hash
}

func newDigests() *digests {
	return &digests{md5: md5.New(), sha256: sha256.New(), sha512: sha512.New()}
}

func (d *digests) writers() []io.Writer { return []io.Writer{d.md5, d.sha256, d.sha512} }

func (d *digests) hex(algorithm string) string {
	h := map[string]hash.Hash{"md5": d.md5, "sha256": d.sha256, "sha512": d.sha512}[algorithm]
	return hex.EncodeToString(h.Sum(nil))
}
