package importer

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// fanout copies one stream to several sinks (the staging file and the
// hashes), each in its own goroutine, so that md5, sha256, sha512 and the
// disk write run on all cores while the next chunk arrives. Memory is a
// fixed ring of chunks, whatever the image size.
type fanout struct {
	sinks  []chan *chunk
	free   chan *chunk
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
	done   func(n int) // progress callback, may be nil
	yields int         // sinks that yield: see newYieldingFanout
}

const (
	chunkSize  = 1 << 20
	ringChunks = 8
	// yieldingRingChunks is the ring of a yielding fanout: room for the
	// hashes to fall 32 MiB behind qemu-img while it has the cores, and
	// catch up when it waits.
	yieldingRingChunks = 32
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
var spareChunks = make(chan *chunk, yieldingRingChunks)

func newFanout(done func(int), sinks ...io.Writer) *fanout {
	return startFanout(ringChunks, false, done, sinks)
}

// newYieldingFanout is a fanout fed by a producer that must not wait for
// a core: qemu-img, whose decoding is a chain of short steps handed between
// its threads (a read, an inflate, a write for each 64 KiB cluster), each
// of which waits for a core that a hash holds. Its hashes yield to it: each
// runs on a thread of its own at the lowest priority (nice 19), which gives
// way to the other threads of the process and to qemu-img's, and takes no
// processor from the goroutine that reads qemu-img's writes (the runtime
// gets one more per hash while they run). The hashes then use what qemu-img
// leaves of the cores, falling behind by up to a deeper ring (32 chunks,
// 32 MiB at most: a chunk ends where data meets zeros), and catch up when
// it is done: a qcow2 -> raw conversion of a cloud image here went from 4.8
// to about 4.2 s, the machine from 80 to 99 % busy while qemu-img decodes.
//
// Nice 19 is relative to the other threads that compete for the same
// cores: in a pod, those of the importer's container (qemu-img and the
// importer); run elsewhere on a busy machine, the hashes, and so the
// import, get little of the CPU that others want. A CPU limit below the
// node's cores is another matter: the limit, not the priority, then
// shares the CPU.
func newYieldingFanout(done func(int), sinks ...io.Writer) *fanout {
	return startFanout(yieldingRingChunks, true, done, sinks)
}

func startFanout(depth int, yield bool, done func(int), sinks []io.Writer) *fanout {
	f := &fanout{free: make(chan *chunk, depth), done: done}
	for range depth {
		select {
		case c := <-spareChunks:
			f.free <- c
		default:
			f.free <- &chunk{buf: make([]byte, chunkSize)}
		}
	}
	for _, w := range sinks {
		_, isHash := w.(hash.Hash)
		yields := yield && isHash
		if yields {
			f.yields++
		}
		ch := make(chan *chunk, depth)
		f.sinks = append(f.sinks, ch)
		f.wg.Add(1)
		go f.drain(w, ch, yields)
	}
	addProcs(f.yields)
	return f
}

func (f *fanout) drain(w io.Writer, ch chan *chunk, yields bool) {
	defer f.wg.Done()
	if yields && !lowPriorityThread() {
		// The main thread, which the runtime never ends: it would keep
		// nice 19 after the fanout. Another goroutine drains instead, on
		// another thread, since this one is ours until it has started.
		started := make(chan struct{})
		f.wg.Add(1)
		go func() {
			runtime.LockOSThread()
			close(started)
			f.drain(w, ch, true)
			runtime.UnlockOSThread() // this lock's; drain's own stays, and ends the thread
		}()
		<-started
		runtime.UnlockOSThread()
		return
	}
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
	addProcs(-f.yields)
	f.yields = 0
	for len(f.free) > 0 {
		select {
		case spareChunks <- <-f.free: // evaluated first: a chunk not kept is garbage
		default:
			return f.failed()
		}
	}
	return f.failed()
}

// lowPriorityThread locks the calling goroutine to its thread for good
// and puts the thread at nice 19: the thread ends with the goroutine, for
// giving its priority back would need CAP_SYS_NICE, which a pod has not.
// (Ending threads is safe: sandbox.Cmd keeps a thread of its own for each
// child, whose Pdeathsig follows the thread that started it.) On the main
// thread, which the runtime never ends, it changes nothing but the lock,
// and says false.
func lowPriorityThread() bool {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		return false
	}
	_ = unix.Setpriority(unix.PRIO_PROCESS, 0, 19) // advisory: the hash runs either way
	return true
}

// extraProcs are the processors added for the yielding hashes running now,
// over GOMAXPROCS as it was before the first: a yielding hash holds a
// processor while it runs, and the goroutines qemu-img waits for must
// never wait for one (the runtime preempts a goroutine only every 10 ms).
var extraProcs struct {
	sync.Mutex
	base, n int
}

func addProcs(n int) {
	if n == 0 {
		return
	}
	extraProcs.Lock()
	defer extraProcs.Unlock()
	if extraProcs.n == 0 {
		extraProcs.base = runtime.GOMAXPROCS(0)
	}
	extraProcs.n += n
	switch {
	case extraProcs.n > 0:
		runtime.GOMAXPROCS(extraProcs.base + extraProcs.n)
	case os.Getenv("GOMAXPROCS") == "":
		// Back to the runtime's default, which then follows the CPU
		// limit again: setting GOMAXPROCS stopped that.
		runtime.SetDefaultGOMAXPROCS()
	default:
		runtime.GOMAXPROCS(extraProcs.base)
	}
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
