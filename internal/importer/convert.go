package importer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// qemu-img runs only on images the inspector accepted, always with an
// explicit -f (never probing), under prlimit's address-space and CPU
// limits and the import's context.

// qemuImg runs qemu-img with the configured limits and returns its output.
func (c *Config) qemuImg(ctx context.Context, extra []*os.File, args ...string) ([]byte, error) {
	name, argv := c.QemuImg, args
	if c.QemuMemoryLimit > 0 || c.QemuCPULimit > 0 {
		limits := []string{}
		if c.QemuMemoryLimit > 0 {
			limits = append(limits, "--as="+strconv.FormatInt(c.QemuMemoryLimit, 10))
		}
		if c.QemuCPULimit > 0 {
			limits = append(limits, "--cpu="+strconv.Itoa(int(c.QemuCPULimit.Seconds())))
		}
		name, argv = "prlimit", append(append(limits, "--", c.QemuImg), args...)
	}
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.ExtraFiles = extra
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%w: %s", err, strings.TrimSpace(lastLine(stderr.String())))
	}
	return out, nil
}

// checkable formats are those `qemu-img check` can verify.
var checkable = map[string]bool{diskformat.Qcow2: true, diskformat.VMDK: true, diskformat.VHDX: true, diskformat.VDI: true}

// qemuCheck refuses an image whose metadata qemu-img finds corrupt. Leaked
// clusters (exit code 3) waste space but are harmless.
func (c *Config) qemuCheck(ctx context.Context, image *os.File, format string) error {
	if !checkable[format] {
		return nil
	}
	_, err := c.qemuImg(ctx, []*os.File{image}, "check", "-f", diskformat.QemuFormat(format), "--output=json", "/dev/fd/3")
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && exit.ExitCode() == 3:
		return nil
	case errors.As(err, &exit) && exit.ExitCode() == 63: // no check for this format
		return nil
	case errors.As(err, &exit) && exit.ExitCode() == 2:
		return permanent(importresult.ReasonUnsafeImage, err, "The %s image is corrupt: qemu-img check found errors.", format)
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return permanent(importresult.ReasonUnsafeImage, err, "The %s image cannot be read: %s.", format, strings.TrimSuffix(stripQemuPrefix(err), "."))
	case ctx.Err() != nil:
		return transient(importresult.ReasonTimeout, err, "The import did not finish within its time limit.")
	}
	return transient(importresult.ReasonInternal, err, "qemu-img check failed: %v.", err)
}

// qemuConvert converts src (detected as srcFormat) into dst as dstFormat.
func (c *Config) qemuConvert(ctx context.Context, src *os.File, srcFormat, dst, dstFormat string) error {
	args := []string{"convert", "-f", diskformat.QemuFormat(srcFormat), "-O", diskformat.QemuFormat(dstFormat),
		"-W", "-m", "8", // out-of-order writes, 8 coroutines: overlap reads and writes
	}
	if opts := targetOptions[dstFormat]; opts != "" {
		args = append(args, "-o", opts)
	}
	// The source is an anonymous file: qemu-img opens it as its fd 3.
	args = append(args, "/dev/fd/3", dst)
	if _, err := c.qemuImg(ctx, []*os.File{src}, args...); err != nil {
		if ctx.Err() != nil {
			return transient(importresult.ReasonTimeout, err, "The import did not finish within its time limit.")
		}
		return permanent(importresult.ReasonUnsupported, err, "Converting the %s image to %s failed: %v.", srcFormat, dstFormat, err)
	}
	return nil
}

// targetOptions are qemu-img creation options per target format.
var targetOptions = map[string]string{
	diskformat.VHD: "subformat=dynamic,force_size=on", // keep the exact virtual size
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// stripQemuPrefix keeps what qemu-img said, without its program and path prefixes.
func stripQemuPrefix(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "/dev/fd/3': "); i >= 0 {
		return msg[i+len("/dev/fd/3': "):]
	}
	return msg
}
