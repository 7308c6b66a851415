package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/nbdexport"
	"github.com/imageimport/image-import-operator/internal/sandbox"
	"golang.org/x/sys/unix"
)

// qemu-img runs only on images the inspector accepted, always with an
// explicit -f (never probing), and always in the sandbox: the kernel lets it
// read its source and write its destination, nothing else, with no network
// and under CPU, memory and file-size limits (internal/sandbox). Before it
// converts, `qemu-img info` must see exactly what the inspector saw.

// Sandbox modes.
const (
	// SandboxRequired fails every import when the kernel has no Landlock.
	SandboxRequired = "required"
	// SandboxAuto confines qemu-img with Landlock where the kernel has it;
	// elsewhere qemu-img runs with the seccomp filter and the limits only,
	// and the formats whose files can name other files through a text
	// descriptor qemu parses differently from us (VMDK, VHDX) are refused.
	SandboxAuto = "auto"
)

// landlockABI is the kernel's Landlock ABI; a variable so that tests can
// play a kernel without it.
var landlockABI = sandbox.ABI

// multiFile are the formats refused when qemu-img cannot be confined.
var multiFile = map[string]bool{diskformat.VMDK: true, diskformat.VHDX: true}

// checkSandbox refuses, before any byte is downloaded, an import that the
// sandbox mode does not allow on this kernel.
func (c *Config) checkSandbox() error {
	if c.Sandbox != "" && c.Sandbox != SandboxAuto && c.Sandbox != SandboxRequired {
		return permanent(importresult.ReasonInternal, nil, "The sandbox mode %q is not %s or %s.", c.Sandbox, SandboxAuto, SandboxRequired)
	}
	if landlockABI() > 0 {
		return nil
	}
	switch {
	case c.Sandbox == SandboxRequired:
		return permanent(importresult.ReasonSandboxUnavailable, nil,
			"The node's kernel has no Landlock, and the importer runs qemu-img only when the kernel confines it to its input and output (--sandbox=required).")
	case multiFile[c.SourceFormat]:
		return permanent(importresult.ReasonSandboxUnavailable, nil,
			"The node's kernel has no Landlock, so qemu-img cannot be confined to its input; %s images, which can name other files, are refused on such nodes.", c.SourceFormat)
	}
	return nil
}

// sandbox returns a sandbox with the configured limits.
func (c *Config) sandbox() *sandbox.Sandbox {
	return &sandbox.Sandbox{
		Launcher: c.Launcher,
		Landlock: landlockABI() > 0 || c.Sandbox == SandboxRequired,
		Limits:   sandbox.Limits{CPU: c.QemuCPULimit, Memory: c.QemuMemoryLimit},
	}
}

// qemuImg runs qemu-img in sb and returns its standard output.
func (c *Config) qemuImg(ctx context.Context, sb *sandbox.Sandbox, args ...string) ([]byte, error) {
	cmd, err := sb.Command(ctx, c.QemuImg, args...)
	if err != nil {
		return nil, transient(importresult.ReasonInternal, err, "qemu-img cannot be started: %v.", err)
	}
	defer sb.Close()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	c.timed(stepName(args), start, cmd.ProcessState())
	if err != nil {
		return out, &qemuError{err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return out, nil
}

// stepName names a qemu-img run for the step timings: its command and the
// format it reads.
func stepName(args []string) string {
	if len(args) > 2 && args[1] == "-f" {
		return "qemu-img " + args[0] + " " + args[2]
	}
	return "qemu-img " + args[0]
}

// qemuError is a failed qemu-img run.
type qemuError struct {
	err    error
	stderr string
}

func (e *qemuError) Error() string { return fmt.Sprintf("%v: %s", e.err, lastLine(e.stderr)) }
func (e *qemuError) Unwrap() error { return e.err }

// said is what qemu-img said last, without its program and path prefixes.
func (e *qemuError) said() string {
	msg := lastLine(e.stderr)
	if loc := fdPrefix.FindAllStringIndex(msg, -1); loc != nil {
		msg = msg[loc[len(loc)-1][1]:]
	}
	return strings.TrimSuffix(strings.TrimPrefix(msg, "qemu-img: "), ".")
}

// own is qemu-img's last line without what it quotes: file names come from
// the image, and must not decide how a failure is classified.
func (e *qemuError) own() string { return quoted.ReplaceAllString(lastLine(e.stderr), "''") }

// launcherCrashed reports whether the launcher, not qemu-img, failed: a Go
// runtime that could not start (no memory, no threads) before the exec.
func (e *qemuError) launcherCrashed() bool {
	return strings.Contains(e.stderr, "\ngoroutine ") || strings.HasPrefix(e.stderr, "fatal error: ") || strings.HasPrefix(e.stderr, "runtime: ")
}

var (
	fdPrefix   = regexp.MustCompile(`/dev/fd/\d+'?: `)
	quoted     = regexp.MustCompile(`'[^']*'`)
	deniedOpen = regexp.MustCompile(`Could not open '([^']*)': Permission denied`)
)

// classify turns a failed qemu-img run into a Failure. What the image
// causes is permanent; what the node lacks (memory, threads, space) is
// transient.
func (c *Config) classify(ctx context.Context, err error, what string) *Failure {
	var qe *qemuError
	if !errors.As(err, &qe) {
		return AsFailure(err)
	}
	var exit *exec.ExitError
	signal := syscall.Signal(-1)
	if errors.As(qe.err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			signal = ws.Signal()
		}
	}
	own := qe.own()
	denied := deniedOpen.FindStringSubmatch(qe.stderr)
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return transient(importresult.ReasonTimeout, err, "The import did not finish within its time limit.")
	case ctx.Err() != nil:
		return transient(importresult.ReasonInternal, err, "The import was stopped before it finished.")
	case qe.launcherCrashed():
		return transient(importresult.ReasonInsufficientResources, err, "The sandbox launcher of qemu-img could not start (%s); the import will be retried.", firstLine(qe.stderr))
	case sandbox.IsSetupFailure(qe.err):
		return transient(importresult.ReasonSandboxUnavailable, err, "qemu-img could not be sandboxed: %s.", strings.TrimPrefix(lastLine(qe.stderr), "sandbox: "))
	case signal == syscall.SIGXFSZ || strings.Contains(own, "File too large"):
		return permanent(importresult.ReasonLimitExceeded, err, "%s wrote more than the image's virtual size allows; the image is refused.", what)
	case signal == syscall.SIGXCPU:
		return permanent(importresult.ReasonLimitExceeded, err, "%s used more than its CPU-time limit of %s.", what, c.QemuCPULimit)
	case strings.Contains(own, "No space left on device"):
		return transient(importresult.ReasonInsufficientStorage, err, "%s ran out of space in the destination; the import will be retried.", what)
	case outOfResources(own) || signal == syscall.SIGKILL || signal == syscall.SIGABRT && strings.Contains(own, "qemu_thread_create"):
		return transient(importresult.ReasonInsufficientResources, err, "%s ran out of memory or threads on the node (%s); the import will be retried.", what, qe.said())
	case denied != nil && !strings.HasPrefix(denied[1], "/dev/fd/"):
		return permanent(importresult.ReasonUnsafeImage, err, "%s was denied %q, a file other than the image: the image names another file.", what, denied[1])
	}
	return permanent(importresult.ReasonUnsupported, err, "%s failed: %s.", what, qe.said())
}

// outOfResources reports whether qemu-img failed for want of memory or
// threads, which says nothing about the image.
func outOfResources(stderr string) bool {
	for _, s := range []string{"Resource temporarily unavailable", "Cannot allocate memory", "Failed to allocate", "Out of memory"} {
		if strings.Contains(stderr, s) {
			return true
		}
	}
	return false
}

// qemuInfo is what `qemu-img info --output=json` reports of an image.
type qemuInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
	raw         map[string]any
}

// qemuLook asks qemu-img what it sees in image, read as format, and refuses
// an image that, to qemu, names any file but itself: a backing file, an
// external data file, a VMDK extent. This is the second fence: it holds
// where our inspector and qemu's parsers disagree.
func (c *Config) qemuLook(ctx context.Context, image *os.File, format string) (qemuInfo, error) {
	sb := c.sandbox()
	path := sb.Read(image)
	out, err := c.qemuImg(ctx, sb, "info", "-f", diskformat.QemuFormat(format), "--output=json", path)
	if err != nil {
		return qemuInfo{}, c.classify(ctx, err, "Reading the "+format+" image with qemu-img")
	}
	var info qemuInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return info, transient(importresult.ReasonInternal, err, "qemu-img info printed what is not JSON: %v.", err)
	}
	if err := json.Unmarshal(out, &info.raw); err != nil {
		return info, transient(importresult.ReasonInternal, err, "qemu-img info printed what is not JSON: %v.", err)
	}
	if info.Format != diskformat.QemuFormat(format) {
		return info, permanent(importresult.ReasonFormatMismatch, nil, "qemu-img reads the image as %s, not %s.", info.Format, format)
	}
	if other := otherFiles(info.raw, path); len(other) > 0 {
		return info, permanent(importresult.ReasonUnsafeImage, nil,
			"Refused an unsafe %s image: qemu-img sees it name another file (%s).", format, strings.Join(other, ", "))
	}
	return info, nil
}

// fileKeys name a file in qemu-img info's JSON, at any depth.
var fileKeys = map[string]bool{
	"filename": true, "backing-filename": true, "full-backing-filename": true,
	"data-file": true,
}

// otherFiles lists every file qemu-img info names that is not self.
func otherFiles(v any, self string) []string {
	var found []string
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if s, ok := child.(string); ok && fileKeys[k] && s != self {
				found = append(found, fmt.Sprintf("%s %q", k, s))
				continue
			}
			found = append(found, otherFiles(child, self)...)
		}
	case []any:
		for _, child := range v {
			found = append(found, otherFiles(child, self)...)
		}
	}
	return found
}

// checkable formats are those `qemu-img check` can verify.
var checkable = map[string]bool{diskformat.Qcow2: true, diskformat.VMDK: true, diskformat.VHDX: true, diskformat.VDI: true}

// qemuCheck refuses an image whose metadata qemu-img finds corrupt. Leaked
// clusters (exit code 3) waste space but are harmless.
func (c *Config) qemuCheck(ctx context.Context, image *os.File, format string) error {
	if !checkable[format] {
		return nil
	}
	sb := c.sandbox()
	_, err := c.qemuImg(ctx, sb, "check", "-f", diskformat.QemuFormat(format), "--output=json", sb.Read(image))
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && (exit.ExitCode() == 3 || exit.ExitCode() == 63): // leaks; no check for this format
		return nil
	case errors.As(err, &exit) && exit.ExitCode() == 2 && !isLauncherCrash(err):
		return permanent(importresult.ReasonUnsafeImage, err, "The %s image is corrupt: qemu-img check found errors.", format)
	}
	return c.classify(ctx, err, "Checking the "+format+" image")
}

// qemuMeasure returns what the converted image will take on disk and the
// largest it can be, as qemu-img measures them for a qcow2 output: the
// allocated data plus little metadata, which is also what a sparse raw
// output allocates (qemu-img measures raw as fully allocated).
func (c *Config) qemuMeasure(ctx context.Context, src *os.File, srcFormat string) (required, full int64, err error) {
	sb := c.sandbox()
	out, err := c.qemuImg(ctx, sb, "measure", "-f", diskformat.QemuFormat(srcFormat), "-O", "qcow2", "--output=json", sb.Read(src))
	if err != nil {
		return 0, 0, c.classify(ctx, err, "Measuring the "+srcFormat+" image")
	}
	var m struct {
		Required       int64 `json:"required"`
		FullyAllocated int64 `json:"fully-allocated"`
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return 0, 0, transient(importresult.ReasonInternal, err, "qemu-img measure printed what is not JSON: %v.", err)
	}
	return m.Required, m.FullyAllocated, nil
}

// maxOutputSize bounds the file qemu-img may write for an image of the given
// virtual size: exactly the virtual size for raw; for the other formats the
// data plus 1/16 and 64 MiB for their tables and footers, and for qcow2 no
// more than its measured maximum.
func maxOutputSize(format string, virtual, fullyAllocated int64) int64 {
	switch format {
	case diskformat.Raw, diskformat.ISO:
		return virtual
	}
	tables := virtual + virtual/16 + 64<<20
	if format == diskformat.Qcow2 {
		// measured by a qemu-img that read the image: never above the
		// bound the inspector's virtual size sets
		return min(fullyAllocated, tables)
	}
	return tables
}

// qemuConvert converts src (detected as srcFormat) into dst as dstFormat.
// qemu-img may not write past maxSize.
func (c *Config) qemuConvert(ctx context.Context, src *os.File, srcFormat string, dst *os.File, dstFormat string, maxSize int64) error {
	sb := c.sandbox()
	sb.Limits.FileSize = maxSize
	args := []string{"convert", "-f", diskformat.QemuFormat(srcFormat), "-O", diskformat.QemuFormat(dstFormat),
		"-W", "-m", "8", // out-of-order writes, 8 coroutines: overlap reads and writes
	}
	if opts := targetOptions[dstFormat]; opts != "" {
		args = append(args, "-o", opts)
	}
	args = append(args, sb.Read(src), sb.Write(dst))
	if _, err := c.qemuImg(ctx, sb, args...); err != nil {
		return c.classify(ctx, err, fmt.Sprintf("Converting the %s image to %s", srcFormat, dstFormat))
	}
	return nil
}

// qemuConvertStream converts src (detected as srcFormat) into a raw disk of
// virtualSize bytes, which sink reads as qemu-img writes it: into an NBD
// export (internal/nbdexport) on a socket the importer connected and hands
// over, since the sandbox lets qemu-img create none. Without -W qemu-img
// writes in order, one request at a time, so the export's bytes are a
// stream; -n: it creates nothing, and writes no file at all.
func (c *Config) qemuConvertStream(ctx context.Context, src *os.File, srcFormat string, virtualSize int64, sink io.ReaderFrom) error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return transient(importresult.ReasonInternal, err, "Connecting to qemu-img failed: %v.", err)
	}
	// Room for a whole 2 MiB write of qemu-img in the socket, so that it
	// crosses in one go rather than in the default 208 KiB, each a wake-up
	// of both sides. Advisory: the kernel caps it at net.core.wmem_max.
	for _, fd := range fds {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, socketBuffer)
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketBuffer)
	}
	// Our end non-blocking: os.NewFile then waits for it in the runtime's
	// poller, instead of a thread blocked in read(2) that the runtime's
	// monitor must notice and replace, about once for each of qemu-img's
	// 64 KiB writes (a compressed qcow2 cluster each).
	_ = unix.SetNonblock(fds[0], true)
	ours, theirs := os.NewFile(uintptr(fds[0]), "nbd-export"), os.NewFile(uintptr(fds[1]), "nbd-client")
	defer ours.Close()
	sb := c.sandbox()
	sb.Limits.FileSize = 1 // it writes no file: the disk goes through the socket
	target := "driver=nbd,server.type=fd,server.str=" + strconv.Itoa(sb.Pass(theirs))
	cmd, err := sb.Command(ctx, c.QemuImg, "convert", "-n", "-f", diskformat.QemuFormat(srcFormat), sb.Read(src), "--target-image-opts", target)
	if err != nil {
		theirs.Close()
		return transient(importresult.ReasonInternal, err, "qemu-img cannot be started: %v.", err)
	}
	defer sb.Close()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err = cmd.Start()
	theirs.Close() // qemu-img's now: its end closes when it exits
	if err != nil {
		return transient(importresult.ReasonInternal, err, "qemu-img cannot be started: %v.", err)
	}
	_, streamErr := sink.ReadFrom(nbdexport.New(ours, virtualSize))
	ours.Close() // a stream that failed cuts qemu-img off
	waitErr := cmd.Wait()
	c.timed("qemu-img convert "+diskformat.QemuFormat(srcFormat)+" (stream)", start, cmd.ProcessState())
	what := fmt.Sprintf("Converting the %s image to raw", srcFormat)
	var se *sinkError
	switch {
	case errors.As(streamErr, &se):
		return transient(importresult.ReasonInternal, se.err, "Writing the image failed: %v.", se.err)
	case errors.Is(streamErr, nbdexport.ErrProtocol):
		return permanent(importresult.ReasonInternal, streamErr, "%s failed: qemu-img wrote what the importer does not take (%v).", what, streamErr)
	case waitErr != nil: // qemu-img's own failure says more than the stream's end
		return c.classify(ctx, &qemuError{err: waitErr, stderr: strings.TrimSpace(stderr.String())}, what)
	case streamErr != nil:
		return transient(importresult.ReasonInternal, streamErr, "%s failed: %v.", what, streamErr)
	}
	return nil
}

const socketBuffer = 4 << 20

// targetOptions are qemu-img creation options per target format.
var targetOptions = map[string]string{
	diskformat.VHD: "subformat=dynamic,force_size=on", // keep the exact virtual size
}

// isLauncherCrash reports whether err is a launcher that crashed.
func isLauncherCrash(err error) bool {
	var qe *qemuError
	return errors.As(err, &qe) && qe.launcherCrashed()
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return first
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
