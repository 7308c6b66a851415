package unpack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/imageimport/image-import-operator/internal/sandbox"
)

// xz's own decompressor decodes about 1.5 times faster per CPU second than
// the Go ones, and decodes the blocks of a multi-block stream (xz -T's) on
// several threads: that is what lets decompressing while downloading beat
// `curl | xz -d`. (For zstd, gzip and bzip2 the Go decoders cost about
// what zstd -d, pigz -d and bzip2 -d cost, or the format is rare: they stay
// in process; bench/unpack.sh measures all of them.) It is C parsing
// hostile input, so it runs only as a child in the kernel sandbox
// (internal/sandbox): no file but its program and libraries (Landlock), no
// socket (seccomp), a memory limit, no environment, and nothing but two
// pipes, the compressed stream in and the decompressed one out, which also
// keeps it out of the importer's address space. Everything that makes a
// stream safe to take stays here, on our side of the pipe: the magic
// numbers, the one level of nesting, --max-image-size and the ratio limit
// count the bytes as they come out.
//
// A decompressor runs only where the sandbox can confine it: the process
// entered sandbox.Main (so that it can launch), the kernel has Landlock and
// the program is installed. Elsewhere the Go decoder of the format runs, in
// process.

// tool is a decompressor program: it reads the compressed stream on its
// standard input and writes the decompressed one on its standard output.
type tool struct {
	program string
	args    func() []string
	// outOfMemory tells from what the program said last whether it failed
	// for want of memory: the node's problem, not the stream's.
	outOfMemory func(said string) bool
	// truncated tells whether it said that the stream ended too soon.
	truncated func(said string) bool
	// demanding tells from all it said whether the stream needs more
	// memory than its limit lets it use.
	demanding func(said string) bool
}

// childMemory is the RLIMIT_DATA of a decompressor: a few threads, with
// their stacks, windows and buffers, well inside the importer pod's 1 GiB
// limit, which qemu-img shares.
const childMemory = 512 << 20

// maxThreads bounds the threads of a decompressor, as each holds a window
// and its buffers.
const maxThreads = 4

func threads() int { return min(runtime.GOMAXPROCS(0), maxThreads) }

// tools are the decompressors run as children, by format.
var tools = map[string]tool{
	// -T: a stream of several blocks (xz -T's) is decoded on several
	// threads. The memory limits refuse dictionaries over maxWindow, as
	// the Go decoder does, and make xz use fewer threads (xz -9's blocks:
	// one) rather than more memory. -Q: a notice is not a failure.
	"xz": {program: "xz", args: func() []string {
		return []string{"-d", "-c", "-Q", fmt.Sprintf("-T%d", threads()),
			fmt.Sprintf("--memlimit-decompress=%d", maxWindow+16<<20),
			fmt.Sprintf("--memlimit-mt-decompress=%d", childMemory/2)}
	}, outOfMemory: saysOutOfMemory, truncated: says("unexpected end of input"), demanding: says("memory usage limit reached")},
}

var saysOutOfMemory = says("cannot allocate memory", "out of memory", "not enough memory")

// says returns whether a message holds one of the phrases.
func says(phrases ...string) func(string) bool {
	return func(said string) bool {
		s := strings.ToLower(said)
		for _, p := range phrases {
			if strings.Contains(s, p) {
				return true
			}
		}
		return false
	}
}

// inProcess forces the Go decoders; tests set it to run both.
var inProcess atomic.Bool

// canLaunch is whether decompressors can run in the sandbox here; a
// variable so that tests can play a machine where they cannot.
var canLaunch = func() bool { return sandbox.CanLaunch() && sandbox.ABI() > 0 }

// child returns the decompressor of the format when one can run here.
func child(format string) (tool, string, bool) {
	t, ok := tools[format]
	if !ok || inProcess.Load() || !canLaunch() {
		return tool{}, "", false
	}
	path, err := exec.LookPath(t.program)
	if err != nil {
		return tool{}, "", false
	}
	return t, path, true
}

// startChild starts the decompressor t on the compressed stream r, which a
// goroutine of its own reads.
func startChild(t tool, path string, r io.Reader) (*childReader, error) {
	sb := &sandbox.Sandbox{Landlock: true, Limits: sandbox.Limits{Memory: childMemory}}
	cmd, err := sb.Command(context.Background(), path, t.args()...)
	if err != nil {
		return nil, &ChildError{Program: t.program, Err: err}
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, &ChildError{Program: t.program, Err: err}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, &ChildError{Program: t.program, Err: err}
	}
	// A larger pipe out: fewer switches between us and the child. Best
	// effort (fs.pipe-max-size may be lower). The pipe in keeps its size:
	// what waits in it is read but not yet decoded (pending).
	unix.FcntlInt(outR.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	c := &childReader{tool: t, cmd: cmd, out: outR, in: inW, fed: make(chan struct{})}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, &c.stderr
	err = cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, &ChildError{Program: t.program, Err: err}
	}
	go c.feed(inW, r)
	return c, nil
}

// childReader reads what a decompressor writes.
type childReader struct {
	tool   tool
	cmd    *sandbox.Cmd
	out    *os.File
	in     *os.File     // the pipe to the child, written by feed
	held   atomic.Int64 // bytes feed read and has not written yet
	stderr tail
	fed    chan struct{} // closed when feed returned
	once   sync.Once
	err    error // of the child, once it ended
}

// feed writes the compressed stream into the child until the stream ends,
// or the child stops reading (it failed, or was killed).
func (c *childReader) feed(w *os.File, r io.Reader) {
	defer close(c.fed)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			c.held.Store(int64(n))
			_, werr := w.Write(buf[:n])
			c.held.Store(0)
			if werr != nil {
				break // the child's end is closed: its exit says why
			}
		}
		if err != nil {
			break // the end, or the source failed: the caller knows which
		}
	}
	w.Close() // the end of the stream for the child
}

// pending is how many bytes of the stream were read from the source but
// not yet by the child: those in feed's hands and in the pipe. The ratio
// limit leaves them out, so that reading ahead does not let a bomb write
// more before it is refused. What xz itself read and has not decoded yet
// still counts: a few blocks, which a bomb makes small (64 MiB of zeros
// are 10 KiB), so a bomb writes at most MaxRatio times those more.
func (c *childReader) pending() int64 {
	n := c.held.Load()
	select {
	case <-c.fed: // the pipe is closed; the child has read it, or ended
		return n
	default:
	}
	rc, err := c.in.SyscallConn() // not Fd(), which would make the pipe blocking
	if err != nil {
		return n
	}
	rc.Control(func(fd uintptr) {
		if inPipe, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil { // FIONREAD
			n += int64(inPipe)
		}
	})
	return n
}

func (c *childReader) Read(p []byte) (int, error) {
	n, err := c.out.Read(p)
	if err == io.EOF {
		return n, c.end()
	}
	return n, err
}

// end waits for the child, after its output ended, and returns io.EOF when
// it decoded the whole stream. The feeder is waited for too: the stream's
// source may then be read again, and its state tells a failed download
// from a corrupt stream.
func (c *childReader) end() error {
	c.once.Do(func() {
		err := c.cmd.Wait()
		<-c.fed
		c.err = c.classify(err)
	})
	if c.err == nil {
		return io.EOF
	}
	return c.err
}

// classify turns the child's exit into an error: nil for success, a
// ChildError when the child could not do its work (it was killed, ran out
// of memory, or the sandbox could not start it), and a stream error
// otherwise: a decompressor that exits with an error on its input found
// the input corrupt or truncated.
func (c *childReader) classify(err error) error {
	if err == nil {
		return nil
	}
	said := c.stderr.last()
	var exit *exec.ExitError
	switch {
	case !errors.As(err, &exit), sandbox.IsSetupFailure(err), c.tool.outOfMemory(said):
		return &ChildError{Program: c.tool.program, Err: err, Said: said}
	case !exit.Exited():
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return &ChildError{Program: c.tool.program, Err: err, Said: said}
		}
	}
	if said == "" {
		said = err.Error()
	}
	return &streamError{program: c.tool.program, said: said,
		truncated: c.tool.truncated != nil && c.tool.truncated(said),
		demanding: c.tool.demanding != nil && c.tool.demanding(c.stderr.all())}
}

// Close kills the child if it still runs, and waits for it. The feeder may
// still wait for the source: it ends once the source is closed.
func (c *childReader) Close() error {
	c.cmd.Kill()
	c.once.Do(func() {
		c.cmd.Wait()
		c.err = errors.New("closed")
	})
	return c.out.Close()
}

// ChildError is a decompressor that could not do its work for a reason
// other than its input: it could not start, was killed or ran out of
// memory. Trying again may help.
type ChildError struct {
	Program string
	Err     error
	Said    string // the last line it wrote on its standard error
}

func (e *ChildError) Error() string {
	if e.Said != "" {
		return fmt.Sprintf("the sandboxed %s failed: %v: %s", e.Program, e.Err, e.Said)
	}
	return fmt.Sprintf("the sandboxed %s failed: %v", e.Program, e.Err)
}

func (e *ChildError) Unwrap() error { return e.Err }

// streamError is a decompressor's refusal of its input: it is corrupt, or
// it ended too soon.
type streamError struct {
	program, said        string
	truncated, demanding bool
}

func (e *streamError) Error() string { return e.program + ": " + e.said }

// tail keeps the end of what a child writes on its standard error.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

// all is what it kept.
func (t *tail) all() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// last is the last line written, without the program's name, cut to fit a
// reason.
func (t *tail) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(t.buf)), "\n")
	line := strings.TrimSpace(lines[len(lines)-1])
	// "/usr/bin/xz: (stdin): ...", "pigz: skipping: <stdin>: ...": what
	// names the program or the input says nothing.
	for _, field := range strings.SplitAfter(line, ": ") {
		if !isNoise(strings.TrimSuffix(field, ": ")) {
			break
		}
		line = strings.TrimPrefix(line, field)
	}
	return cut(line, 200)
}

func isNoise(field string) bool {
	if strings.Contains(field, "stdin") || field == "skipping" {
		return true
	}
	for _, t := range tools {
		if field == t.program || strings.HasSuffix(field, "/"+t.program) {
			return true
		}
	}
	return false
}
