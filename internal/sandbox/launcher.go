package sandbox

import (
	"flag"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// Main is the launcher. A program that uses Sandbox calls it first thing in
// main (and in TestMain): when the program was started as a launcher, Main
// confines itself and execs the sandboxed program, and never returns.
func Main() {
	if len(os.Args) < 2 || os.Args[1] != Marker {
		entered.Store(true)
		return
	}
	fs := flag.NewFlagSet(Marker, flag.ContinueOnError)
	var (
		requireLandlock   bool
		cpu, memory, size int64
		parent            int
		read, write, pass fdList
	)
	fs.BoolVar(&requireLandlock, "landlock", true, "")
	fs.Int64Var(&cpu, "cpu", 0, "")
	fs.Int64Var(&memory, "memory", 0, "")
	fs.Int64Var(&size, "fsize", 0, "")
	fs.IntVar(&parent, "parent", 0, "")
	fs.Var(&read, "read", "")
	fs.Var(&write, "write", "")
	fs.Var(&pass, "pass", "") // a socket: no file rule
	if err := fs.Parse(os.Args[2:]); err != nil || fs.NArg() == 0 {
		fail("usage: %s [flags] -- PROGRAM [ARG...]", Marker)
	}
	argv := fs.Args()

	// Every restriction below applies to this thread, which then execs.
	runtime.LockOSThread()
	// The parent-death signal is this thread's too, and the exec keeps
	// only its own: the runtime may have moved us off the thread that was
	// forked with it (Command's Pdeathsig).
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		fail("setting the parent-death signal: %v", err)
	}
	if parent != 0 && os.Getppid() != parent {
		fail("the importer (pid %d) ended before the program started", parent)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fail("setting no_new_privs: %v", err)
	}
	if ABI() > 0 {
		if err := restrictThread(rules(argv[0], read, write)); err != nil {
			fail("enforcing the Landlock rules: %v", err)
		}
	} else if requireLandlock {
		fail("%v", ErrNoLandlock)
	}
	if err := denySockets(); err != nil {
		fail("installing the seccomp filter: %v", err)
	}
	// The limits come last: they bind this launcher too, whose own
	// runtime must not run out of memory on its way to exec.
	for _, l := range []struct {
		resource   int
		value, max int64
	}{
		// A hard CPU limit above the soft one: the program gets SIGXCPU,
		// which says why, before SIGKILL.
		{unix.RLIMIT_CPU, cpu, cpu + 5},
		{unix.RLIMIT_DATA, memory, memory},
		{unix.RLIMIT_FSIZE, size, size},
		// No core dumps: they would hold image data, written wherever
		// the node sends them.
		{unix.RLIMIT_CORE, 0, 0},
	} {
		if l.value > 0 || l.resource == unix.RLIMIT_CORE {
			if err := unix.Setrlimit(l.resource, &unix.Rlimit{Cur: uint64(l.value), Max: uint64(l.max)}); err != nil {
				fail("setting resource limit %d: %v", l.resource, err)
			}
		}
	}
	// Only the descriptors handed over pass to the program: not those the
	// importer itself inherited.
	last := 2 + len(read) + len(write) + len(pass)
	if err := unix.CloseRange(uint(last+1), ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fail("closing inherited descriptors: %v", err)
	}
	err := syscall.Exec(argv[0], argv, os.Environ())
	fail("executing %s: %v", argv[0], err)
}

// restrictThread enforces the strictest Landlock ruleset the kernel knows on
// this thread (the one that execs), with the denials of the program logged.
func restrictThread(rs []landlock.Rule) error {
	fd, flags, err := landlock.V11.BestEffort().EnableLoggingForSubprocesses().NewRulesetFD(rs...)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return ll.LandlockRestrictSelf(fd, flags)
}

// rules are the only files the program may open: its inputs (read), its
// outputs (read, write, truncate), and what the dynamic loader maps (the
// program, the shared libraries and the loader's cache).
func rules(program string, read, write fdList) []landlock.Rule {
	const (
		readFile = landlock.AccessFSSet(unix.LANDLOCK_ACCESS_FS_READ_FILE)
		execute  = landlock.AccessFSSet(unix.LANDLOCK_ACCESS_FS_EXECUTE)
		// Write, and truncate, which opening for writing often implies.
		readWrite = landlock.AccessFSSet(unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE)
	)
	interpreter, libraries := loaderFiles(program)
	rs := []landlock.Rule{
		landlock.PathAccess(readFile|execute, program),
		landlock.PathAccess(readFile, libraries...),
		// qemu opens /dev/null to probe for OFD locks; it is empty and
		// a sink.
		landlock.PathAccess(readWrite, "/dev/null"),
	}
	if interpreter != "" {
		rs = append(rs, landlock.PathAccess(readFile|execute, interpreter))
	}
	// /proc/self/fd/N resolves to the open file itself: the rule is bound to
	// that inode, not to its directory.
	for _, fd := range read {
		rs = append(rs, landlock.PathAccess(readFile, "/proc/self/fd/"+strconv.Itoa(fd)))
	}
	for _, fd := range write {
		rs = append(rs, landlock.PathAccess(readWrite, "/proc/self/fd/"+strconv.Itoa(fd)))
	}
	return rs
}

// denySockets installs a seccomp filter under which socket(2) and
// io_uring_setup(2) fail with EACCES: qemu-img opening local files needs
// neither, and an image that names a network block device (nbd, http,
// ssh, ...) then cannot reach anything, whatever the Landlock ABI covers.
// Calls through another architecture's system-call table are refused too.
func denySockets() error {
	arch, ok := auditArch[runtime.GOARCH]
	if !ok {
		return nil // no filter for an architecture we do not know
	}
	const (
		offNr   = 0
		offArch = 4
		deny    = unix.SECCOMP_RET_ERRNO | uint32(unix.EACCES)
		allow   = unix.SECCOMP_RET_ALLOW
		kill    = unix.SECCOMP_RET_KILL_PROCESS
	)
	ld := func(off uint32) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off}
	}
	ret := func(v uint32) unix.SockFilter { return unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: v} }
	// jeq jumps over `skip` instructions when equal, else falls through.
	jeq := func(v uint32, skip uint8) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: v, Jt: skip}
	}
	filter := []unix.SockFilter{
		ld(offArch),
		jeq(arch, 1),
		ret(kill),
		ld(offNr),
		{Code: unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K, K: x32SyscallBit, Jt: 3}, // x32 ABI: refuse all
		jeq(unix.SYS_SOCKET, 2),
		jeq(unix.SYS_IO_URING_SETUP, 1),
		ret(allow),
		ret(deny),
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	_, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return errno
	}
	return nil
}

// x32SyscallBit marks x86-64's x32 system calls, which share the x86-64
// audit architecture.
const x32SyscallBit = 0x40000000

var auditArch = map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}

// fdList is a repeatable flag of file descriptor numbers.
type fdList []int

func (l *fdList) String() string { return "" }

func (l *fdList) Set(s string) error {
	fd, err := strconv.Atoi(s)
	if err != nil {
		return err
	}
	*l = append(*l, fd)
	return nil
}
