// Command importer imports one disk image: fetch, inspect, convert, store.
// It is the program of every import Job, and runs on its own as well.
//
// Every flag can also be set through the environment: --source-format is
// IMPORTER_SOURCE_FORMAT. Exit codes: 0 success, 2 permanent failure, 1
// transient failure. The JSON result goes to --result-file.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/imageimport/image-import-operator/internal/importer"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/sandbox"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

func main() {
	sandbox.Main() // when started as the launcher of a sandboxed qemu-img

	// An import, or `importer remove` (remove.go).
	os.Exit(dispatch(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("importer", flag.ContinueOnError)
	var (
		cfg                          importer.Config
		resultFile                   string
		md5sum, sha256sum, sha512sum string
		timeout                      time.Duration
		progressTask                 string
		volume                       importer.VolumeTarget
	)
	fs.StringVar(&cfg.Source, "source", "", "URL of the image (http or https).")
	fs.StringVar(&cfg.SourceFormat, "source-format", "", "Declared format of the source: raw, qcow2, vmdk, vhd, vhdx, vdi or iso.")
	fs.StringVar(&cfg.TargetFormat, "target-format", "", "Format to store the image in.")
	fs.StringVar(&cfg.ContainerFormat, "container-format", "bare", "Glance container format of the source: ova when it is an OVA (a tar holding an OVF descriptor and one disk); any other (bare, ovf, ...) when the source is the disk.")
	fs.StringVar(&cfg.Dest, "dest", "", "The image store: the image lands in DEST/IMAGE_ID.")
	fs.StringVar(&volume.File, "dest-file", "", "Name the image takes in DEST once stored (disk.img, on a Filesystem volume of its own), after checking that its virtual size, with the filesystem overhead, fits the volume.")
	fs.StringVar(&volume.Device, "dest-device", "", "Block device the stored image is written onto (and then removed from DEST), after checking that its virtual size fits the device.")
	fs.Int64Var(&volume.Capacity, "dest-capacity", 0, "Requested size of the volume in bytes (with --dest-file or --dest-device); the filesystem's or device's own size also bounds it.")
	fs.StringVar(&cfg.ScratchDir, "scratch-dir", os.TempDir(), "Where a source to convert is staged.")
	fs.StringVar(&cfg.ImageID, "image-id", "", "Id, and file name, of the image.")
	fs.StringVar(&resultFile, "result-file", "/dev/termination-log", "Where the JSON result is written.")
	fs.StringVar(&md5sum, "expected-md5", "", "Expected md5 of the source.")
	fs.StringVar(&sha256sum, "expected-sha256", "", "Expected sha256 of the source.")
	fs.StringVar(&sha512sum, "expected-sha512", "", "Expected sha512 of the source.")
	fs.StringVar(&cfg.CABundle, "ca-bundle", "", "PEM file of the CAs that verify an https source; the system's when empty.")
	fs.StringVar(&cfg.CredentialsDir, "credentials-dir", "", "Directory with 'username' and 'password', or 'token', for the source.")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 30*time.Second, "Bound on connecting (TCP and TLS).")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 60*time.Second, "Fail when the source sends nothing for this long.")
	fs.Int64Var(&cfg.MinTransferRate, "min-transfer-rate", 1<<10, "Fail, as a timeout, when the source averages fewer bytes/s than this over --min-transfer-rate-window; 0 for no minimum.")
	fs.DurationVar(&cfg.TransferRateWindow, "min-transfer-rate-window", 60*time.Second, "The window over which --min-transfer-rate is averaged.")
	fs.DurationVar(&timeout, "timeout", 0, "Bound on the whole import; 0 for none.")
	fs.StringVar(&progressTask, "progress-task", "", "NAMESPACE/NAME of the ImageImportTask whose status shows the progress, with the pod's service account; stderr only when empty.")
	cfg.Policy = urlpolicy.Default()
	cfg.Policy.BindFlags(fs)
	fs.Int64Var(&cfg.MaxImageSize, "max-image-size", 64<<30, "Refuse sources of more bytes, as downloaded and as unpacked (decompressed; of an OVA, its whole tar and its disk); 0 for no limit.")
	fs.Int64Var(&cfg.MaxDecompressionRatio, "max-decompression-ratio", 1000, "Refuse a compressed source that unpacks to more than this many bytes per byte downloaded (a decompression bomb), once it unpacked 64 MiB; 0 for no limit.")
	fs.Int64Var(&cfg.MaxVirtualSize, "max-virtual-size", 4<<40, "Refuse images of a larger virtual disk, in bytes.")
	fs.StringVar(&cfg.QemuImg, "qemu-img", "qemu-img", "The qemu-img binary.")
	fs.Int64Var(&cfg.QemuMemoryLimit, "qemu-memory-limit", 2<<30, "Limit of qemu-img's private writable memory (heap, thread stacks; RLIMIT_DATA), in bytes; 0 for none.")
	fs.StringVar(&cfg.Sandbox, "sandbox", importer.SandboxAuto, "auto: confine qemu-img with Landlock where the kernel has it, and refuse vmdk and vhdx sources where it has not; required: refuse every import on a kernel without Landlock.")
	fs.DurationVar(&cfg.QemuCPULimit, "qemu-cpu-limit", time.Hour, "CPU-time limit of qemu-img; 0 for none.")

	if err := fs.Parse(args); err != nil {
		return importresult.ExitPermanent
	}
	if err := fromEnvironment(fs); err != nil {
		return fail(resultFile, &importer.Failure{Reason: importresult.ReasonInternal, Permanent: true, Message: err.Error()})
	}
	if err := checkRequired(cfg); err != nil {
		return fail(resultFile, &importer.Failure{Reason: importresult.ReasonInternal, Permanent: true, Message: err.Error()})
	}
	cfg.ExpectedChecksums = map[string]string{}
	for alg, v := range map[string]string{"md5": md5sum, "sha256": sha256sum, "sha512": sha512sum} {
		if v != "" {
			cfg.ExpectedChecksums[alg] = strings.ToLower(v)
		}
	}
	cfg.Progress = &importer.JSONLines{W: os.Stderr}
	cfg.Trace = os.Stderr
	var task *taskStatus
	if progressTask != "" {
		if task = toTaskStatus(progressTask, cfg.Progress); task != nil {
			cfg.Progress = task
		}
	}
	if task.begin() {
		fmt.Fprintln(os.Stderr, "nothing to do: the task's import has ended (an earlier attempt stored the image, or the task is final)")
		return importresult.ExitSuccess
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	// Where qemu-img runs: Landlock's ABI (0: none) and the mode.
	fmt.Fprintf(os.Stderr, "{\"sandbox\":{\"landlock_abi\":%d,\"mode\":%q}}\n", sandbox.ABI(), cfg.Sandbox)
	res, err := importer.Run(ctx, cfg)
	if err == nil {
		res, err = importer.Deliver(cfg.Dest, res, volume)
	}
	reportPeakRSS()
	if err != nil {
		return fail(resultFile, importer.AsFailure(err))
	}
	if err := writeResult(resultFile, res); err != nil {
		fmt.Fprintln(os.Stderr, "writing the result:", err)
		return importresult.ExitTransient
	}
	task.finish(res)
	return importresult.ExitSuccess
}

// fromEnvironment sets each flag not given on the command line from
// IMPORTER_<NAME>, if set.
func fromEnvironment(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "IMPORTER_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !given[f.Name] && err == nil {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %v", env, v, e)
			}
		}
	})
	return err
}

var safeImageID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

func checkRequired(cfg importer.Config) error {
	for name, v := range map[string]string{"--source": cfg.Source, "--source-format": cfg.SourceFormat,
		"--target-format": cfg.TargetFormat, "--dest": cfg.Dest, "--image-id": cfg.ImageID} {
		if v == "" {
			return fmt.Errorf("%s is required", name)
		}
	}
	if !safeImageID.MatchString(cfg.ImageID) {
		return fmt.Errorf("--image-id %q is not a safe file name", cfg.ImageID)
	}
	return nil
}

func fail(resultFile string, f *importer.Failure) int {
	if f.Err != nil {
		fmt.Fprintf(os.Stderr, "import failed: %s (%v)\n", f.Message, f.Err)
	} else {
		fmt.Fprintf(os.Stderr, "import failed: %s\n", f.Message)
	}
	if err := writeResult(resultFile, importresult.Result{Reason: f.Reason, Error: f.Message}); err != nil {
		fmt.Fprintln(os.Stderr, "writing the result:", err)
	}
	return f.ExitCode()
}

func writeResult(path string, r importresult.Result) error {
	b, err := importresult.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// reportPeakRSS logs the importer's own peak memory (qemu-img aside), which
// must stay flat whatever the image size.
func reportPeakRSS() {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		fmt.Fprintf(os.Stderr, "{\"peak_rss_bytes\":%d}\n", ru.Maxrss*1024)
	}
}
