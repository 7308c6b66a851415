// Package sandbox runs a helper program (qemu-img) so that the kernel, not
// our parsers, decides what it may touch.
//
// The importer cannot trust its format inspector to agree with qemu's
// parsers forever: a disk image that names another file (a VMDK extent, a
// backing file) is read by qemu wherever the two disagree. So qemu-img never
// runs directly. The importer re-executes itself as a small launcher
// (Main, entered through the argument Marker) that, in the child:
//
//   - restricts file access with Landlock: read the source, read and write
//     the destination, execute the program and its loader, read the shared
//     libraries it needs, and nothing else; where the ABI allows, no TCP
//     bind or connect, no signals or abstract sockets outside the sandbox;
//   - installs a seccomp filter that refuses to create sockets at all, so
//     that no network is reachable whatever the Landlock ABI;
//   - passes on no descriptor but those handed over, and (Command) no
//     environment but PATH, LANG and MALLOC_ARENA_MAX;
//   - sets resource limits: CPU time, the largest file it may write, no core
//     dumps, and its private writable memory (RLIMIT_DATA: heap and thread
//     stacks count, the address space malloc arenas reserve does not);
//   - then execs the program.
//
// Files are handed over as open descriptors (fds 3, 4, ...) and named by
// the program as /dev/fd/N; the Landlock rules are attached to exactly those
// inodes, so nothing else in the same directories is readable.
package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Marker is the first argument that makes a program enter Main.
const Marker = "__sandbox-exec"

// Limits bound the program's resources; zero means no limit.
type Limits struct {
	CPU      time.Duration // CPU time (RLIMIT_CPU)
	Memory   int64         // private writable memory, bytes (RLIMIT_DATA)
	FileSize int64         // largest file offset it may write, bytes (RLIMIT_FSIZE)
}

// Sandbox describes one run of a program: the files it may use and its limits.
type Sandbox struct {
	// Launcher is the program that enters Main; os.Executable when empty.
	Launcher string
	// Landlock is whether the file and network rules must be enforced: the
	// launcher fails, rather than runs the program unconfined, when the
	// kernel cannot.
	Landlock bool
	Limits   Limits

	files  []*os.File
	flags  []string   // the launcher's flag of each file: how it is handed over
	reopen []*os.File // read-only descriptors of our own, closed by Close
	err    error      // of Read
}

// Read hands f to the program for reading only, and returns the path it
// opens it by. The program gets a descriptor of its own, opened read-only:
// Landlock checks opens, not descriptors, so f's own (read-write, as a
// staging file's is) must not be handed over. A failure to reopen is
// returned by Command.
func (s *Sandbox) Read(f *os.File) string {
	ro, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		s.err = errors.Join(s.err, fmt.Errorf("reopening %s read-only: %w", f.Name(), err))
		ro = f // never handed over: Command fails
	} else {
		s.reopen = append(s.reopen, ro)
	}
	return "/dev/fd/" + strconv.Itoa(s.add(ro, "-read="))
}

// Write hands f to the program for reading, writing and truncating, and
// returns the path it opens it by.
func (s *Sandbox) Write(f *os.File) string { return "/dev/fd/" + strconv.Itoa(s.add(f, "-write=")) }

// Pass hands over f, a socket the importer connected (the program may
// create none), as the program's descriptor whose number it returns. No
// Landlock rule names it: the program uses the descriptor as it is, and
// opens nothing through it.
func (s *Sandbox) Pass(f *os.File) int { return s.add(f, "-pass=") }

func (s *Sandbox) add(f *os.File, flag string) int {
	s.files, s.flags = append(s.files, f), append(s.flags, flag)
	return 3 + len(s.files) - 1
}

// Close closes the descriptors Read opened; call it once the program ended.
func (s *Sandbox) Close() {
	for _, f := range s.reopen {
		f.Close()
	}
	s.reopen = nil
}

// Command returns the command that runs program with args in the sandbox.
func (s *Sandbox) Command(ctx context.Context, program string, args ...string) (*Cmd, error) {
	if s.err != nil {
		return nil, s.err
	}
	path, err := exec.LookPath(program)
	if err != nil {
		return nil, err
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, err
	}
	launcher := s.Launcher
	if launcher == "" {
		if launcher, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	argv := []string{Marker,
		"-landlock=" + strconv.FormatBool(s.Landlock),
		"-cpu=" + strconv.FormatInt(int64(s.Limits.CPU/time.Second), 10),
		"-memory=" + strconv.FormatInt(s.Limits.Memory, 10),
		"-fsize=" + strconv.FormatInt(s.Limits.FileSize, 10),
		"-parent=" + strconv.Itoa(os.Getpid()),
	}
	for i, flag := range s.flags {
		argv = append(argv, flag+strconv.Itoa(3+i))
	}
	argv = append(append(argv, "--", path), args...)
	cmd := exec.CommandContext(ctx, launcher, argv...)
	cmd.ExtraFiles = s.files
	// Nothing of the importer's environment: no credentials, no QEMU_*
	// variables. Few malloc arenas, so that qemu's thread pools do not
	// multiply the heap it reserves.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "MALLOC_ARENA_MAX=2"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return &Cmd{cmd: cmd}, nil
}

// Cmd is a sandboxed program, run as exec.Cmd runs one, but for where it
// is started from. The launcher gets SIGKILL when its parent dies
// (Pdeathsig), so that no confined program outlives the importer; but the
// kernel sends that signal when the thread that started it ends, not the
// process, and the Go runtime ends a thread whenever a goroutine exits
// locked to it (as the importer's low-priority hashes do). So the program
// is started, and waited for, by a goroutine locked to its thread for the
// program's life: no other goroutine can run there, let alone end it.
//
// The exec.Cmd is not exposed: its Start would start the program from any
// thread, and its pipes would be closed by the waiting goroutine as soon as
// the program ends, unread.
type Cmd struct {
	// Stdin, Stdout and Stderr are exec.Cmd's, set before Start.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer

	cmd  *exec.Cmd
	done chan struct{} // closed when the program ended
	err  error         // of exec.Cmd.Wait, once done is closed
}

// Start starts the program and returns once it runs, or failed to start.
func (c *Cmd) Start() error {
	if c.done != nil {
		return errors.New("sandbox: already started")
	}
	c.cmd.Stdin, c.cmd.Stdout, c.cmd.Stderr = c.Stdin, c.Stdout, c.Stderr
	c.done = make(chan struct{})
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread() // the program has ended: no signal is tied to the thread now
		defer close(c.done)
		if c.err = c.cmd.Start(); c.err != nil {
			started <- c.err
			return
		}
		started <- nil
		c.err = c.cmd.Wait()
	}()
	return <-started
}

// Wait waits for the program to end and returns what exec.Cmd.Wait did;
// unlike it, Wait may be called again, and from any goroutine.
func (c *Cmd) Wait() error {
	if c.done == nil {
		return errors.New("sandbox: not started")
	}
	<-c.done
	return c.err
}

// Run starts the program and waits for it.
func (c *Cmd) Run() error {
	if err := c.Start(); err != nil {
		return err
	}
	return c.Wait()
}

// Output runs the program and returns its standard output. As
// exec.Cmd.Output, when Stderr is not set, the program's standard error
// (its first 64 KiB) is in the *exec.ExitError of a failure.
func (c *Cmd) Output() ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("sandbox: Stdout already set")
	}
	var out bytes.Buffer
	c.Stdout = &out
	var stderr *headBuffer
	if c.Stderr == nil {
		stderr = &headBuffer{max: 64 << 10}
		c.Stderr = stderr
	}
	err := c.Run()
	if exit := (*exec.ExitError)(nil); stderr != nil && errors.As(err, &exit) {
		exit.Stderr = stderr.Bytes()
	}
	return out.Bytes(), err
}

// CombinedOutput runs the program and returns its standard output and
// standard error together.
func (c *Cmd) CombinedOutput() ([]byte, error) {
	if c.Stdout != nil || c.Stderr != nil {
		return nil, errors.New("sandbox: Stdout or Stderr already set")
	}
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	return out.Bytes(), err
}

// Kill kills the program, if it was started.
func (c *Cmd) Kill() error {
	if c.done == nil || c.cmd.Process == nil {
		return errors.New("sandbox: not started")
	}
	return c.cmd.Process.Kill()
}

// ProcessState is how the program ended, once Wait returned; nil before.
func (c *Cmd) ProcessState() *os.ProcessState {
	if c.done == nil {
		return nil
	}
	select {
	case <-c.done:
		return c.cmd.ProcessState
	default:
		return nil
	}
}

// headBuffer keeps the first max bytes written to it and drops the rest.
type headBuffer struct {
	bytes.Buffer
	max int
}

func (b *headBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// entered is whether this process called Main (and is not a launcher).
var entered atomic.Bool

// CanLaunch reports whether this process can be its own launcher: it called
// Main first thing, so that the Sandbox's default Launcher, this program,
// enters the launcher when re-executed.
func CanLaunch() bool { return entered.Load() }

// ABI is the Landlock ABI version of the running kernel; 0 when it has none
// (too old, or Landlock not enabled at boot).
func ABI() int {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0
	}
	return int(v)
}

// ErrNoLandlock is why the launcher refused to run a program.
var ErrNoLandlock = errors.New("the kernel has no Landlock: qemu-img cannot be confined to its input and output")

// exitSetup is the launcher's exit code when it could not confine the
// program; the program never ran.
const exitSetup = 125

// IsSetupFailure reports whether err is the launcher's refusal to run the
// program unconfined.
func IsSetupFailure(err error) bool {
	var exit *exec.ExitError
	return errors.As(err, &exit) && exit.ExitCode() == exitSetup
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "sandbox: "+format+"\n", args...)
	os.Exit(exitSetup)
}
