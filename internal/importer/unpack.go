package importer

import (
	"errors"
	"io"

	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/unpack"
)

// unpacker is the stage between the download and the staging file
// (internal/unpack): the download is written into it as it arrives, and it
// writes the disk image, decompressed and taken out of an OVA, into the
// staging file's fanout, on a goroutine of its own.
type unpacker struct {
	pw     *io.PipeWriter
	done   chan struct{}
	report unpack.Report
	err    error
}

// startUnpacker starts unpacking into image.
func startUnpacker(cfg *Config, image io.Writer) *unpacker {
	pr, pw := io.Pipe()
	u := &unpacker{pw: pw, done: make(chan struct{})}
	opt := unpack.Options{OVA: cfg.ContainerFormat == ContainerOVA, MaxSize: cfg.MaxImageSize, MaxRatio: cfg.MaxDecompressionRatio}
	go func() {
		defer close(u.done)
		u.report, u.err = unpack.Stream(pr, image, opt)
		// A refusal stops the download: its next write fails.
		pr.CloseWithError(cmpErr(u.err, io.ErrClosedPipe))
	}()
	return u
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// Write is the download's sink.
func (u *unpacker) Write(p []byte) (int, error) { return u.pw.Write(p) }

// finish ends the stream, with the download's error (nil: it is complete),
// and returns what was unpacked.
func (u *unpacker) finish(downloadErr error) (unpack.Report, error) {
	u.pw.CloseWithError(downloadErr)
	<-u.done
	return u.report, u.err
}

// refusal is the Failure of a source the unpacker refused, or nil.
func (cfg *Config) refusal(err error) *Failure {
	var r *unpack.Error
	if !errors.As(err, &r) {
		return nil
	}
	switch r.Kind {
	case unpack.Corrupt:
		return permanent(importresult.ReasonCorruptSource, err, "%s.", r.Reason)
	case unpack.TooLarge, unpack.Bomb, unpack.Demanding:
		return permanent(importresult.ReasonLimitExceeded, err, "%s.", r.Reason)
	case unpack.Unsafe:
		return permanent(importresult.ReasonUnsafeImage, err, "Refused an unsafe source: %s.", lowerFirst(r.Reason))
	case unpack.Nested:
		return permanent(importresult.ReasonUnsupported, err, "%s.", r.Reason)
	}
	return permanent(importresult.ReasonFormatMismatch, err, "%s.", r.Reason)
}

func lowerFirst(s string) string {
	if s != "" && s[0] >= 'A' && s[0] <= 'Z' && (len(s) < 2 || s[1] < 'A' || s[1] > 'Z') {
		return string(s[0]+'a'-'A') + s[1:]
	}
	return s
}

// unpacked describes, for the result, what was unpacked; nil when the
// source was the disk image itself.
func unpacked(rep unpack.Report) *importresult.Unpacked {
	if rep.Compression == "" && rep.OVA == nil {
		return nil
	}
	u := &importresult.Unpacked{
		Compression:      rep.Compression,
		CompressedSize:   rep.CompressedSize,
		UncompressedSize: rep.UncompressedSize,
		DiskSize:         rep.Size,
	}
	if o := rep.OVA; o != nil {
		u.OVAEntry, u.OVFName, u.OVFProduct, u.OVFVendor, u.OVFVersion = o.Entry, o.Name, o.Product, o.Vendor, o.Version
	}
	return u
}
