package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	Main() // this test binary is also the launcher
	os.Exit(m.Run())
}

func requireLandlock(t *testing.T) {
	t.Helper()
	if ABI() == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the kernel has no Landlock; CI machines must have it")
		}
		t.Skip("the kernel has no Landlock")
	}
}

// run runs program in s and returns its combined output.
func run(t *testing.T, s *Sandbox, program string, args ...string) (string, error) {
	t.Helper()
	cmd, err := s.Command(context.Background(), program, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeFile(t *testing.T, path, content string) *os.File {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestReadsItsInputAndNothingElse(t *testing.T) {
	requireLandlock(t)
	dir := t.TempDir()
	input := writeFile(t, filepath.Join(dir, "input"), "the input\n")
	writeFile(t, filepath.Join(dir, "secret"), "a secret beside the input\n")

	s := &Sandbox{Landlock: true}
	out, err := run(t, s, "cat", s.Read(input))
	if err != nil || out != "the input\n" {
		t.Fatalf("reading the input: %q, %v", out, err)
	}
	for _, other := range []string{filepath.Join(dir, "secret"), "/etc/passwd", "/proc/self/environ", "/usr/lib/os-release"} {
		s := &Sandbox{Landlock: true}
		out, err := run(t, s, "cat", s.Read(input), other)
		if err == nil || !strings.Contains(out, "Permission denied") || strings.Contains(out, "a secret") {
			t.Errorf("cat %s in the sandbox: %q, %v; want permission denied", other, out, err)
		}
	}
}

func TestWritesOnlyItsOutput(t *testing.T) {
	requireLandlock(t)
	dir := t.TempDir()
	input := writeFile(t, filepath.Join(dir, "input"), "copied\n")
	output := writeFile(t, filepath.Join(dir, "output"), "")

	s := &Sandbox{Landlock: true}
	if out, err := run(t, s, "cp", s.Read(input), s.Write(output)); err != nil {
		t.Fatalf("cp into the output: %s %v", out, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "output")); string(b) != "copied\n" {
		t.Fatalf("output holds %q", b)
	}
	s = &Sandbox{Landlock: true}
	out, err := run(t, s, "cp", s.Read(input), filepath.Join(dir, "created"))
	if err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("creating another file: %q, %v; want permission denied", out, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "created")); !os.IsNotExist(err) {
		t.Fatalf("the sandbox created a file: %v", err)
	}
}

func TestHasNoNetwork(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
			accepted <- struct{}{}
		}
	}()
	addr := ln.Addr().(*net.TCPAddr)
	s := &Sandbox{}
	out, err := run(t, s, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+strconv.Itoa(addr.Port)+" && echo connected")
	if err == nil || strings.Contains(out, "connected") {
		t.Fatalf("connected from the sandbox: %q, %v", out, err)
	}
	if !strings.Contains(out, "Permission denied") {
		t.Errorf("want permission denied from socket(2), got %q", out)
	}
	select {
	case <-accepted:
		t.Fatal("the listener accepted a connection from the sandbox")
	case <-time.After(100 * time.Millisecond):
	}
}

func TestLimitsTheFileSize(t *testing.T) {
	dir := t.TempDir()
	output := writeFile(t, filepath.Join(dir, "output"), "")
	s := &Sandbox{Limits: Limits{FileSize: 4096}}
	out, err := run(t, s, "dd", "if=/dev/zero", "of="+s.Write(output), "bs=1024", "count=8")
	if err == nil {
		t.Fatalf("dd wrote past the limit: %s", out)
	}
	if st, _ := os.Stat(filepath.Join(dir, "output")); st.Size() > 4096 {
		t.Fatalf("the output grew to %d bytes", st.Size())
	}
}

func TestQemuImgRunsConfined(t *testing.T) {
	requireLandlock(t)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("no qemu-img")
	}
	dir := t.TempDir()
	raw := writeFile(t, filepath.Join(dir, "in.raw"), strings.Repeat("disk", 1<<14))
	qcow := writeFile(t, filepath.Join(dir, "out.qcow2"), "")
	s := &Sandbox{Landlock: true, Limits: Limits{CPU: time.Minute, Memory: 1 << 30, FileSize: 1 << 30}}
	if out, err := run(t, s, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", s.Read(raw), s.Write(qcow)); err != nil {
		t.Fatalf("qemu-img convert in the sandbox: %s %v", out, err)
	}
	s = &Sandbox{Landlock: true}
	out, err := run(t, s, "qemu-img", "info", "-f", "qcow2", "--output=json", s.Read(qcow))
	if err != nil || !strings.Contains(out, `"virtual-size": 65536`) {
		t.Fatalf("qemu-img info in the sandbox: %s %v", out, err)
	}
}

func TestRefusesToRunUnconfinedWhenLandlockIsRequired(t *testing.T) {
	if ABI() > 0 {
		t.Skip("the kernel has Landlock")
	}
	out, err := run(t, &Sandbox{Landlock: true}, "true")
	if !IsSetupFailure(err) || !bytes.Contains([]byte(out), []byte("no Landlock")) {
		t.Fatalf("got %q, %v; want a refusal", out, err)
	}
}

// The program gets neither the importer's environment nor the descriptors
// it inherited, and cannot write through its input's descriptor.
func TestPassesNothingElse(t *testing.T) {
	requireLandlock(t)
	t.Setenv("IMPORTER_SECRET", "in the environment")
	dir := t.TempDir()
	input := writeFile(t, filepath.Join(dir, "input"), "input\n")
	leaked := writeFile(t, filepath.Join(dir, "leaked"), "a descriptor the importer holds\n")
	s := &Sandbox{Landlock: true}
	in := s.Read(input)
	cmd, err := s.Command(context.Background(), "bash", "-c",
		`echo "env: $IMPORTER_SECRET"; read -r line <&100; echo "fd: $line"; echo overwritten >&3; echo overwritten >`+in+`; echo overwritten 1<>`+in+`; true`)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A descriptor the importer inherited without close-on-exec (bash's
	// builtins read it: the sandbox lets it execute nothing else).
	if _, err := unix.FcntlInt(leaked.Fd(), unix.F_SETFD, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup2(int(leaked.Fd()), 100); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(100)
	out, _ := cmd.CombinedOutput()
	for _, leak := range []string{"in the environment", "a descriptor the importer holds"} {
		if strings.Contains(string(out), leak) {
			t.Errorf("the program saw %q:\n%s", leak, out)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "input")); string(b) != "input\n" {
		t.Errorf("the program wrote its input: %q", b)
	}
}

// TestPassesASocket: a socket handed over is the program's to use, though
// the program may create none.
func TestPassesASocket(t *testing.T) {
	requireLandlock(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs")
	defer ours.Close()
	s := &Sandbox{Landlock: true}
	fd := s.Pass(theirs)
	out, err := run(t, s, "sh", "-c", "echo through the socket >&"+strconv.Itoa(fd))
	theirs.Close()
	if err != nil {
		t.Fatalf("writing to the socket handed over: %q, %v", out, err)
	}
	got, err := io.ReadAll(ours)
	if err != nil || string(got) != "through the socket\n" {
		t.Fatalf("read %q, %v from our end", got, err)
	}
}

// TestAProgramOutlivesTheThreadThatStartedIt: the kernel sends the
// launcher's SIGKILL when the thread that started it ends, and a goroutine
// that exits locked to its thread ends it. Start keeps a thread of its own.
func TestAProgramOutlivesTheThreadThatStartedIt(t *testing.T) {
	cmd, err := (&Sandbox{}).Command(context.Background(), "sh", "-c", "read line; echo alive")
	if err != nil {
		t.Fatal(err)
	}
	in, out := newPipe(t), new(bytes.Buffer)
	cmd.Stdin, cmd.Stdout = in.r, out
	started := make(chan error)
	onAThreadThatEnds(func() { started <- cmd.Start() })
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	in.r.Close()
	time.Sleep(200 * time.Millisecond) // the thread has long ended
	in.w.Close()                       // the program's read ends
	if err := cmd.Wait(); err != nil || out.String() != "alive\n" {
		t.Fatalf("the program ended with %v (%q) once the thread that started it ended", err, out.String())
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("a second Wait: %v", err)
	}
}

type pipe struct{ r, w *os.File }

func newPipe(t *testing.T) pipe {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return pipe{r, w}
}

// onAThreadThatEnds runs f in a goroutine locked to a thread that ends
// with it: not the main thread, which the runtime never ends.
func onAThreadThatEnds(f func()) {
	go func() {
		runtime.LockOSThread() // never unlocked
		if unix.Gettid() != unix.Getpid() {
			f()
			return
		}
		done := make(chan struct{})
		onAThreadThatEnds(func() { f(); close(done) }) // on another thread: this one is locked
		<-done
	}()
}

// TestOutputKeepsWhatTheProgramSaidOnFailure, as exec.Cmd.Output does.
func TestOutputKeepsWhatTheProgramSaidOnFailure(t *testing.T) {
	cmd, err := (&Sandbox{}).Command(context.Background(), "sh", "-c", "echo out; echo oops >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("Output: %q, %v", out, err)
	}
	if exit.ExitCode() != 3 || string(exit.Stderr) != "oops\n" || string(out) != "out\n" {
		t.Fatalf("Output: %q, %v (stderr %q)", out, err, exit.Stderr)
	}
	if cmd.ProcessState() == nil || cmd.ProcessState().ExitCode() != 3 {
		t.Errorf("ProcessState: %v", cmd.ProcessState())
	}
}

// TestTheLauncherRunsNothingForAnImporterGone: the launcher sets its own
// parent-death signal (the exec keeps the signal of the thread that execs,
// which need not be the one forked with it), and then runs nothing if the
// importer has already ended.
func TestTheLauncherRunsNothingForAnImporterGone(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	gone := exec.Command("true") // a process that ended: certainly not the launcher's parent
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(self, Marker, "-landlock=false", "-parent="+strconv.Itoa(gone.Process.Pid), "--", "/bin/echo", "ran").CombinedOutput()
	if !IsSetupFailure(err) || !strings.Contains(string(out), "ended before the program started") {
		t.Fatalf("a launcher whose importer is gone: %q, %v", out, err)
	}
}
