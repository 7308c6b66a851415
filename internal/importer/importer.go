// Package importer is the pipeline each import Job runs:
// fetch -> inspect -> convert -> store.
//
// The source streams into a staging file while md5, sha256 and sha512 are
// computed on the way (one pass). The pure-Go inspector then checks that the
// bytes are the declared format and safe; qemu-img converts only when the
// formats differ. A same-format import streams straight into the store's
// staging file, with no scratch copy. The image appears in the store whole,
// atomically, or not at all.
package importer

import (
	"context"
	"errors"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
	"golang.org/x/sys/unix"
)

// Config is one import.
type Config struct {
	Source       string // http(s) URL
	SourceFormat string // declared format of the source (Glance import_from_format)
	TargetFormat string // format to store (Glance disk_format)
	// ContainerFormat is Glance's container_format: ova means the source is
	// a tar holding the disk; every other value means the source is the disk.
	ContainerFormat string
	Dest            string // the image store directory
	ScratchDir      string // where a source to convert is staged
	ImageID         string

	ExpectedChecksums map[string]string // md5, sha256 or sha512 -> lower-case hex
	CABundle          string            // PEM file; system roots when empty
	CredentialsDir    string            // mounted Secret: username+password, or token

	ConnectTimeout time.Duration
	IdleTimeout    time.Duration
	// A download that averages fewer than MinTransferRate bytes/s over any
	// TransferRateWindow fails as a timeout; 0: no minimum (see ratewatch.go).
	MinTransferRate    int64
	TransferRateWindow time.Duration

	Policy       urlpolicy.Policy
	MaxImageSize int64 // bytes of source, and of the image unpacked from it; 0: no limit
	// MaxDecompressionRatio bounds the bytes of image unpacked per byte of
	// source (past unpack.RatioGrace); 0: no limit.
	MaxDecompressionRatio int64
	MaxVirtualSize        int64 // bytes of disk; 0: no limit

	QemuImg         string        // qemu-img binary
	QemuMemoryLimit int64         // private writable memory of qemu-img (RLIMIT_DATA), bytes
	QemuCPULimit    time.Duration // CPU-time limit of qemu-img
	Sandbox         string        // SandboxAuto or SandboxRequired
	Launcher        string        // the program that enters sandbox.Main; this one when empty

	Progress Reporter
	Trace    io.Writer // where step timings go (trace.go); nil: nowhere
}

// inspectImage is the first fence, our own inspector; a variable so that
// tests can show the other two hold without it.
var inspectImage = diskformat.Inspect

// ContainerOVA is the container format of a source that is an OVA: a tar
// holding an OVF descriptor and the disk.
const ContainerOVA = "ova"

// containerFormats are Glance's; all but ova mean the source is the disk.
var containerFormats = []string{"bare", "ovf", ContainerOVA, "aki", "ari", "ami", "docker", "compressed"}

// Formats the importer reads and writes.
var supported = []string{diskformat.Raw, diskformat.Qcow2, diskformat.VMDK, diskformat.VHD, diskformat.VHDX, diskformat.VDI, diskformat.ISO}

// Run imports one image. The error is a *Failure.
func Run(ctx context.Context, cfg Config) (importresult.Result, error) {
	start := time.Now()
	track := startTracker(cfg.Progress)
	defer track.close()
	res, err := run(ctx, &cfg, track)
	if err != nil {
		return importresult.Result{}, AsFailure(err)
	}
	res.DurationSeconds = time.Since(start).Seconds()
	track.setPhase(PhaseDone, res.Size)
	return res, nil
}

func run(ctx context.Context, cfg *Config, track *tracker) (importresult.Result, error) {
	policy, u, err := cfg.validate()
	if err != nil {
		return importresult.Result{}, err
	}
	fetcher, err := newFetcher(cfg, policy)
	if err != nil {
		return importresult.Result{}, err
	}
	if err := removeStaleStaging(cfg.Dest, cfg.ImageID); err != nil {
		return importresult.Result{}, transient(importresult.ReasonInternal, err, "The image store cannot be cleaned: %v.", err)
	}
	sameFormat := cfg.SourceFormat == cfg.TargetFormat
	stageDir := cfg.ScratchDir
	if sameFormat {
		stageDir = cfg.Dest // no scratch copy: the download is the image
	}
	src, err := createStaging(stageDir, cfg.ImageID)
	if err != nil {
		return importresult.Result{}, transient(importresult.ReasonInternal, err, "The image store is not writable: %v.", err)
	}
	defer src.discard()

	track.setPhase(PhaseFetching, 0)
	start := time.Now()
	// The download is hashed as it arrives (the source's checksums) and
	// unpacked (internal/unpack: decompressed, taken out of an OVA, or
	// passed on as it is) into the staging file, hashed again when it is
	// the image itself: its md5, sha256 and sha512 are the stored image's.
	file := &sparseWriter{f: src.File, writeback: sameFormat}
	if sameFormat {
		file.useDirectIO()
	}
	imageSums := newDigests()
	imageSinks := []io.Writer{file}
	download := &headRecorder{}
	imageSHA256 := &unlessSame{h: imageSums.sha256, download: download} // see samebytes.go
	if sameFormat {
		imageSinks = append(imageSinks, imageSums.md5, imageSHA256, imageSums.sha512)
	}
	image := newFanout(nil, imageSinks...)
	unpacker := startUnpacker(cfg, image)
	download.w = unpacker
	sums := newDigests()
	sink := newFanout(func(n int) { track.done.Add(int64(n)) }, append(cfg.sourceHashes(sums), download)...)
	got, fetchErr := fetcher.fetch(ctx, u, sink, track)
	sinkErr := sink.Close()
	rep, unpackErr := unpacker.finish(errors.Join(fetchErr, sinkErr))
	imageErr := errors.Join(image.Close(), file.finish())
	if f := cfg.refusal(unpackErr); f != nil {
		return importresult.Result{}, f // the bytes are refused, whatever else failed after
	}
	if fetchErr != nil && !errors.As(fetchErr, new(*sinkError)) {
		return importresult.Result{}, fetchErr
	}
	if err := errors.Join(fetchErr, sinkErr, unpackErr, imageErr); err != nil {
		return importresult.Result{}, transient(importresult.ReasonInternal, err, "Writing the image failed: %v.", err)
	}
	cfg.timed("fetch", start, nil)
	if err := cfg.verifyChecksums(sums); err != nil {
		return importresult.Result{}, err
	}

	track.setPhase(PhaseInspecting, rep.Size)
	start = time.Now()
	var synced <-chan error
	if sameFormat { // the download is the image: on to the disk while it is inspected
		synced = src.startSync()
	}
	info, measured, err := cfg.inspectAndMeasure(ctx, src, rep.Size, cfg.SourceFormat, !sameFormat)
	if err != nil {
		return importresult.Result{}, err
	}
	cfg.timed("inspect", start, nil)
	res := importresult.Result{
		ImageID:          cfg.ImageID,
		SourceFormat:     info.Format,
		DiskFormat:       cfg.TargetFormat,
		SourceSHA256:     sums.hex("sha256"),
		BytesTransferred: got.size,
		OSHashAlgo:       "sha512",
		Unpacked:         unpacked(rep),
	}
	if sameFormat {
		track.setPhase(PhaseStoring, rep.Size)
		switch {
		case imageSHA256.skipped && res.Unpacked == nil: // the image is the download
			imageSums.sha256 = sums.sha256
		case imageSHA256.skipped: // it was not, whatever its first bytes
			if err := sha256Of(src, imageSums); err != nil {
				return res, transient(importresult.ReasonInternal, err, "Reading the image failed: %v.", err)
			}
		}
		start = time.Now()
		if err := errors.Join(<-synced, src.commit(cfg.ImageID)); err != nil {
			return res, transient(importresult.ReasonInternal, err, "Storing the image failed: %v.", err)
		}
		cfg.timed("commit", start, nil)
		res.Size, res.VirtualSize = rep.Size, info.VirtualSize
		res.Checksum, res.SHA256, res.OSHashValue = imageSums.hex("md5"), imageSums.hex("sha256"), imageSums.hex("sha512")
		return res, nil
	}
	return cfg.convertAndStore(ctx, src, info, measured, res, track)
}

// sourceHashes are the digests of the download to compute: sha256, which
// the result reports, and those the source's checksums name.
func (cfg *Config) sourceHashes(sums *digests) []io.Writer {
	hashes := []io.Writer{sums.sha256}
	if _, ok := cfg.ExpectedChecksums["md5"]; ok {
		hashes = append(hashes, sums.md5)
	}
	if _, ok := cfg.ExpectedChecksums["sha512"]; ok {
		hashes = append(hashes, sums.sha512)
	}
	return hashes
}

// convertAndStore converts the staged source into the store.
func (cfg *Config) convertAndStore(ctx context.Context, src *staging, info diskformat.Info, measured measurement, res importresult.Result, track *tracker) (importresult.Result, error) {
	track.setPhase(PhaseConverting, info.VirtualSize)
	maxSize, err := cfg.checkSpace(info, measured)
	if err != nil {
		return res, err
	}
	out, err := createStaging(cfg.Dest, cfg.ImageID)
	if err != nil {
		return res, transient(importresult.ReasonInternal, err, "The image store is not writable: %v.", err)
	}
	defer out.discard()
	if cfg.TargetFormat == diskformat.Raw {
		return cfg.convertToRaw(ctx, src, info, out, res, track)
	}
	if err := cfg.qemuConvert(ctx, src.File, info.Format, out.File, cfg.TargetFormat, maxSize); err != nil {
		return res, err
	}
	src.discard() // free the scratch space before hashing the output

	// Inspect what qemu-img wrote, as if it came from outside.
	st, err := out.Stat()
	if err != nil {
		return res, transient(importresult.ReasonInternal, err, "Reading the converted image failed: %v.", err)
	}
	outInfo, err := cfg.inspect(ctx, out, st.Size(), cfg.TargetFormat)
	if err != nil {
		return res, permanent(importresult.ReasonInternal, err, "The converted image failed inspection: %v.", err)
	}
	if outInfo.VirtualSize != info.VirtualSize {
		return res, permanent(importresult.ReasonInternal, nil,
			"The converted image has a virtual size of %d bytes, the source %d.", outInfo.VirtualSize, info.VirtualSize)
	}
	track.setPhase(PhaseStoring, st.Size())
	// Write the image back to disk while hashing it from the page cache.
	synced := make(chan error, 1)
	go func() { synced <- out.Sync() }()
	sums := newDigests()
	hasher := newFanout(func(n int) { track.done.Add(int64(n)) }, sums.md5, sums.sha256, sums.sha512)
	if _, err := out.Seek(0, 0); err != nil {
		return res, transient(importresult.ReasonInternal, err, "Reading the converted image failed: %v.", err)
	}
	_, readErr := hasher.ReadFrom(out.File)
	if err := errors.Join(readErr, hasher.Close(), <-synced); err != nil {
		return res, transient(importresult.ReasonInternal, err, "Reading the converted image failed: %v.", err)
	}
	if err := out.commit(cfg.ImageID); err != nil {
		return res, transient(importresult.ReasonInternal, err, "Storing the image failed: %v.", err)
	}
	res.Size, res.VirtualSize = st.Size(), outInfo.VirtualSize
	res.Checksum, res.SHA256, res.OSHashValue = sums.hex("md5"), sums.hex("sha256"), sums.hex("sha512")
	return res, nil
}

// convertToRaw converts the staged source into a raw image in out in one
// pass: qemu-img writes the disk, in order, into an NBD export the
// importer serves (qemuConvertStream), and the importer hashes it and
// writes it, sparse, as it arrives, instead of reading back a file
// qemu-img wrote. Zeros cost no disk space and are never copied but to be
// hashed.
func (cfg *Config) convertToRaw(ctx context.Context, src *staging, info diskformat.Info, out *staging, res importresult.Result, track *tracker) (importresult.Result, error) {
	file := &sparseWriter{f: out.File, writeback: true}
	file.useDirectIO()
	sums := newDigests()
	sink := newYieldingFanout(func(n int) { track.done.Add(int64(n)) }, file, sums.md5, sums.sha256, sums.sha512)
	convertErr := cfg.qemuConvertStream(ctx, src.File, info.Format, info.VirtualSize, sink)
	start := time.Now()
	err := errors.Join(sink.Close(), file.finish())
	cfg.timed("hash and write the tail", start, nil)
	if err != nil && convertErr == nil {
		convertErr = transient(importresult.ReasonInternal, err, "Writing the image failed: %v.", err)
	}
	if convertErr != nil {
		return res, convertErr
	}
	src.discard() // free the scratch space

	track.setPhase(PhaseStoring, info.VirtualSize)
	// Inspect what qemu-img wrote, as if it came from outside.
	start = time.Now()
	synced := out.startSync() // most was written on the way
	outInfo, err := cfg.inspect(ctx, out, file.off, diskformat.Raw)
	if err != nil {
		<-synced
		return res, permanent(importresult.ReasonInternal, err, "The converted image failed inspection: %v.", err)
	}
	cfg.timed("inspect output", start, nil)
	if outInfo.VirtualSize != info.VirtualSize {
		<-synced
		return res, permanent(importresult.ReasonInternal, nil,
			"The converted image has a virtual size of %d bytes, the source %d.", outInfo.VirtualSize, info.VirtualSize)
	}
	start = time.Now()
	if err := errors.Join(<-synced, out.commit(cfg.ImageID)); err != nil {
		return res, transient(importresult.ReasonInternal, err, "Storing the image failed: %v.", err)
	}
	cfg.timed("commit", start, nil)
	res.Size, res.VirtualSize = file.off, outInfo.VirtualSize
	res.Checksum, res.SHA256, res.OSHashValue = sums.hex("md5"), sums.hex("sha256"), sums.hex("sha512")
	return res, nil
}

// checkSpace refuses a conversion whose output cannot fit the free space of
// the destination, as qemu-img measured it, and returns the most qemu-img
// may write.
func (cfg *Config) checkSpace(info diskformat.Info, m measurement) (int64, error) {
	required, full, err := m.required, m.full, m.err
	if err != nil {
		return 0, err
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(cfg.Dest, &fs); err != nil {
		return 0, transient(importresult.ReasonInternal, err, "The image store cannot be read: %v.", err)
	}
	// The scratch copy is freed only after the conversion: when both share
	// a filesystem, its bytes are already counted as used.
	if free := int64(fs.Bavail) * fs.Bsize; required > free {
		return 0, permanent(importresult.ReasonInsufficientStorage, nil,
			"The converted image needs %d bytes and the destination has %d bytes free.", required, free)
	}
	return maxOutputSize(cfg.TargetFormat, info.VirtualSize, full), nil
}

// validate checks the configuration and the URL before any byte moves.
func (cfg *Config) validate() (*urlpolicy.Compiled, *url.URL, error) {
	for _, f := range []struct{ what, value string }{{"source", cfg.SourceFormat}, {"target", cfg.TargetFormat}} {
		if !slices.Contains(supported, f.value) {
			return nil, nil, permanent(importresult.ReasonUnsupported, nil,
				"The %s format %q is not supported; use one of %v.", f.what, f.value, supported)
		}
	}
	if cfg.ContainerFormat != "" && !slices.Contains(containerFormats, cfg.ContainerFormat) {
		return nil, nil, permanent(importresult.ReasonUnsupported, nil,
			"The container format %q is not supported; use one of %v.", cfg.ContainerFormat, containerFormats)
	}
	if cfg.TargetFormat == diskformat.ISO && cfg.SourceFormat != diskformat.ISO {
		return nil, nil, permanent(importresult.ReasonUnsupported, nil, "Only an iso source can be stored as iso.")
	}
	for alg := range cfg.ExpectedChecksums {
		if !slices.Contains([]string{"md5", "sha256", "sha512"}, alg) {
			return nil, nil, permanent(importresult.ReasonUnsupported, nil, "The checksum algorithm %q is not supported.", alg)
		}
	}
	if err := cfg.checkSandbox(); err != nil {
		return nil, nil, err
	}
	policy, err := urlpolicy.Compile(cfg.Policy)
	if err != nil {
		return nil, nil, permanent(importresult.ReasonInternal, err, "The import URL policy is invalid: %v.", err)
	}
	u, err := policy.CheckURL(cfg.Source)
	if err != nil {
		return nil, nil, permanent(importresult.ReasonURLRefused, err, "URI for import does not pass filtering: %s (%s).", redactRaw(cfg.Source), detail(err))
	}
	return policy, u, nil
}

// verifyChecksums compares the source's digests with the expected ones.
func (cfg *Config) verifyChecksums(sums *digests) error {
	for _, alg := range []string{"md5", "sha256", "sha512"} {
		want, ok := cfg.ExpectedChecksums[alg]
		if ok && sums.hex(alg) != want {
			return permanent(importresult.ReasonChecksumMismatch, nil,
				"The %s checksum of the source is %s, not the expected %s.", alg, sums.hex(alg), want)
		}
	}
	return nil
}

// inspect checks that the staged bytes are the declared format and safe.
func (cfg *Config) inspect(ctx context.Context, f *staging, size int64, declared string) (diskformat.Info, error) {
	info, _, err := cfg.inspectAndMeasure(ctx, f, size, declared, false)
	return info, err
}

// measurement is what qemu-img measure says of a source to convert.
type measurement struct {
	required, full int64
	err            error
}

// inspectAndMeasure is inspect, and, with measure, qemu-img measure too.
// Once our inspector accepted the image, qemu-img's runs (info, check,
// measure) are independent reads, each in its own sandbox: they run at
// once, each start-up and each read of the tables overlapping the others,
// and only what qemu-img info says decides, first, whether the others'
// answers count.
func (cfg *Config) inspectAndMeasure(ctx context.Context, f *staging, size int64, declared string, measure bool) (diskformat.Info, measurement, error) {
	info, err := cfg.inspectOurs(f, size, declared)
	if err != nil {
		return info, measurement{}, err
	}
	var (
		wg       sync.WaitGroup
		seen     qemuInfo
		lookErr  error
		checkErr error
		m        measurement
	)
	wg.Go(func() { seen, lookErr = cfg.qemuLook(ctx, f.File, info.Format) })
	if measure {
		wg.Go(func() { m.required, m.full, m.err = cfg.qemuMeasure(ctx, f.File, info.Format) })
	}
	checkErr = cfg.qemuCheck(ctx, f.File, info.Format)
	wg.Wait()
	if lookErr != nil {
		return info, m, lookErr
	}
	if seen.VirtualSize != info.VirtualSize {
		return info, m, permanent(importresult.ReasonUnsafeImage, nil,
			"Refused a %s image that qemu-img reads as %d bytes of virtual disk and the inspector as %d: the two parsers disagree.",
			info.Format, seen.VirtualSize, info.VirtualSize)
	}
	return info, m, checkErr
}

// inspectOurs is the first fence: our inspector.
func (cfg *Config) inspectOurs(f *staging, size int64, declared string) (diskformat.Info, error) {
	info, err := inspectImage(f, size, diskformat.Options{MaxVirtualSize: cfg.MaxVirtualSize})
	var refused *diskformat.Error
	if errors.As(err, &refused) {
		what := strings.TrimSpace(refused.Format + " image")
		switch refused.Kind {
		case diskformat.ErrUnsafe:
			return info, permanent(importresult.ReasonUnsafeImage, err, "Refused an unsafe %s: %s.", what, refused.Reason)
		case diskformat.ErrUnsupported:
			return info, permanent(importresult.ReasonUnsupported, err, "Refused a %s: %s.", what, refused.Reason)
		}
		return info, permanent(importresult.ReasonFormatMismatch, err, "Refused an invalid %s: %s.", what, refused.Reason)
	}
	switch {
	case err != nil:
		return info, permanent(importresult.ReasonInternal, err, "Inspecting the image failed: %v.", err)
	case info.Format != declared:
		return info, permanent(importresult.ReasonFormatMismatch, nil, "The image is %s, not %s as declared.", info.Format, declared)
	}
	return info, nil
}

func redactRaw(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(an invalid URL)"
	}
	return redact(u)
}
