// Package unpack is the importer's stage between the download and the
// staging file: it takes the source as it streams in, decompresses it
// (gzip, xz, zstd, bzip2, told apart by their magic numbers, never by a
// file name) and, for an OVA, takes the one disk out of the tar, and writes
// the disk image's bytes out, with no compressed copy and nothing but that
// disk ever written.
//
// What comes out is inspected exactly as an uncompressed download is: the
// unpacker only moves bytes and refuses what it cannot move safely. It
// unpacks one level of compression, bounds the bytes it writes (MaxSize)
// and how many it writes per byte read (MaxRatio), and tells a corrupt or
// truncated stream (permanent) from a download that failed under it (the
// download's own error).
//
// One file per format: gzip.go, xz.go, zstd.go, bzip2.go and ova.go.
package unpack

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
)

// Options bound one unpacking.
type Options struct {
	// OVA says the source (once decompressed) is an OVA: a tar whose first
	// entry is the OVF descriptor, holding the one disk it references.
	OVA bool
	// MaxSize is the most bytes of disk image written; 0: no limit.
	MaxSize int64
	// MaxRatio is the most bytes of disk image written per byte read, once
	// RatioGrace bytes were written; 0: no limit.
	MaxRatio int64
}

// RatioGrace is what may be written before MaxRatio applies: enough for
// the runs of zeros at the start of a disk (partition alignment, an empty
// EFI or boot partition) that compress far better than the rest, little
// enough that a bomb is stopped before it costs anything.
const RatioGrace = 64 << 20

// Report says what was unpacked.
type Report struct {
	Compression      string // gzip, xz, zstd or bzip2; "" when nothing was decompressed
	CompressedSize   int64  // bytes of the compressed stream
	UncompressedSize int64  // bytes it decompressed to
	SourceSize       int64  // bytes read: the whole source
	Size             int64  // bytes of disk image written
	Decoder          string // what decompressed: "sandboxed xz", "Go", ...
	OVA              *OVA   // the OVA's disk and descriptor, for an OVA
}

// Kind classifies a refusal.
type Kind int

const (
	// Corrupt: a compressed stream or a tar that is corrupt or truncated.
	Corrupt Kind = iota
	// TooLarge: the disk image is larger than MaxSize.
	TooLarge
	// Bomb: the disk image is more than MaxRatio times the bytes read.
	Bomb
	// Nested: compression inside compression.
	Nested
	// Unsafe: an OVA entry that could write or read outside of it (a path
	// with .. or an absolute one, a link, a device).
	Unsafe
	// Invalid: not an OVA as the specification defines it, or one that
	// holds other than exactly one disk.
	Invalid
	// Demanding: a stream whose decoder needs a window (a dictionary)
	// over maxWindow.
	Demanding
)

// Error is a refusal of the source's bytes: trying again cannot help.
type Error struct {
	Kind   Kind
	Reason string // one sentence, without its final period
	Err    error
}

func (e *Error) Error() string { return e.Reason }
func (e *Error) Unwrap() error { return e.Err }

func refuse(kind Kind, err error, format string, args ...any) *Error {
	return &Error{Kind: kind, Reason: fmt.Sprintf(format, args...), Err: err}
}

// codec is one compression format.
type codec struct {
	name  string
	magic func(b []byte) bool // whether a stream starting with b is this format
	// open returns a reader of the decompressed stream. Its errors are
	// the source's own or mean that the stream is corrupt.
	open func(r io.Reader) (io.ReadCloser, error)
	// demanding are the errors of open's reader for a stream whose
	// window is over maxWindow.
	demanding []error
}

// codecs are the formats, each registered by its own file.
var codecs []codec

// magicLen is how many bytes detection looks at.
const magicLen = 16

// detect returns the codec whose magic number b starts with, or nil.
func detect(b []byte) *codec {
	for i := range codecs {
		if codecs[i].magic(b) {
			return &codecs[i]
		}
	}
	return nil
}

// Stream reads the source from r and writes the disk image to w, until r
// ends. Errors are an *Error (the bytes are refused), the error r returned
// (the download failed) or w's (the disk failed).
func Stream(r io.Reader, w io.Writer, opt Options) (Report, error) {
	src := &source{r: r}
	s := &stream{opt: opt, src: src}
	err := s.run(w)
	for _, c := range s.closers { // a decoder's goroutines end, whatever happened
		if e := c(); err == nil {
			err = s.blame(e)
		}
	}
	s.rep.SourceSize = src.n.Load()
	return s.rep, err
}

type stream struct {
	opt     Options
	src     *source
	rep     Report
	codec   *codec         // of the compressed stream; nil: none
	out     int64          // disk image bytes written
	tar     int64          // bytes of an OVA's tar read, the disk's among them
	closers []func() error // of the decoders
	// pending are the bytes read from the source that the decoder has not
	// taken yet; nil: none.
	pending func() int64
}

// read is how many bytes of the source the decoder took, for the ratio.
func (s *stream) read() int64 {
	n := s.src.n.Load()
	if s.pending != nil {
		n -= s.pending()
	}
	return n
}

func (s *stream) run(w io.Writer) error {
	in := bufio.NewReaderSize(s.src, 64<<10)
	body, err := s.decompress(in, in, "source")
	if err != nil {
		return err
	}
	if !s.opt.OVA {
		err = s.copyDisk(w, body, s.blame)
	} else {
		// Every byte of the tar counts, not only the disk's: an entry
		// the OVA reader skips is decompressed all the same.
		body = &bounded{r: body, s: s, n: &s.tar, classify: func(err error) error { return err }}
		err = s.ova(w, body)
	}
	if err != nil {
		return s.blame(err)
	}
	// Read what is left: the end of a compressed stream, whose checksum
	// its decoder checks only there (a tar ends before), then the rest of
	// the source, so that the download is whole and its checksums are of
	// every byte. In that order: a decoder's goroutines may read the
	// source until the stream ends.
	for _, rest := range []io.Reader{body, in} {
		if _, err := io.Copy(io.Discard, rest); err != nil {
			return s.blame(err)
		}
	}
	return nil
}

// decompress returns the stream r decompressed when peek shows that it is
// compressed, and r itself otherwise. Only one level is decompressed: what
// was already decompressed may not be compressed again.
func (s *stream) decompress(peek *bufio.Reader, r io.Reader, what string) (io.Reader, error) {
	head, err := peek.Peek(magicLen)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, s.blame(err)
	}
	c := detect(head)
	if c == nil {
		return r, nil
	}
	if s.rep.Compression != "" {
		return nil, refuse(Nested, nil, "The %s stream holds %s compressed data: only one level of compression is unpacked", s.rep.Compression, c.name)
	}
	s.rep.Compression, s.codec = c.name, c
	compressed := &counter{r: r}
	dec, err := s.open(c, compressed)
	if err != nil {
		return nil, s.corrupt(err)
	}
	out := &counter{r: &decoded{r: dec, s: s}}
	s.closers = append(s.closers, func() error {
		s.rep.CompressedSize, s.rep.UncompressedSize = compressed.n.Load(), out.n.Load()
		return dec.Close()
	})
	dr := bufio.NewReaderSize(out, 64<<10)
	next, err := dr.Peek(magicLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, s.blame(err)
	}
	if inner := detect(next); inner != nil {
		return nil, refuse(Nested, nil, "The %s %s holds %s compressed data: only one level of compression is unpacked", c.name, what, inner.name)
	}
	return dr, nil
}

// open returns the decoder of c reading r: the system's decompressor in
// the sandbox where it can run (child.go), the Go one otherwise.
func (s *stream) open(c *codec, r io.Reader) (io.ReadCloser, error) {
	if t, path, ok := child(c.name); ok {
		s.rep.Decoder = "sandboxed " + t.program
		dec, err := startChild(t, path, r)
		if err == nil {
			s.pending = dec.pending
		}
		return dec, err
	}
	s.rep.Decoder = "Go"
	return c.open(r)
}

// copyDisk writes the disk image r to w, within the limits. classify
// turns r's errors into what they mean; w's are returned as they are.
func (s *stream) copyDisk(w io.Writer, r io.Reader, classify func(error) error) error {
	_, err := io.Copy(w, &bounded{r: r, s: s, n: &s.out, classify: classify})
	s.rep.Size = s.out
	return err
}

// bounded fails, rather than stops, when what it counts in n (the disk
// image's bytes, or all of an OVA's tar) outgrows a limit, and keeps
// failing: io.ReadFull drops the error of a read that fills its buffer,
// so the next read must fail too.
type bounded struct {
	r        io.Reader
	s        *stream
	n        *int64
	classify func(error) error
	refusal  error
}

func (b *bounded) Read(p []byte) (int, error) {
	if b.refusal != nil {
		return 0, b.refusal
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = b.classify(err)
	}
	*b.n += int64(n)
	if b.refusal = b.s.limit(*b.n); b.refusal != nil {
		return n, b.refusal
	}
	return n, err
}

// limit refuses out bytes unpacked when they are over a limit.
func (s *stream) limit(out int64) error {
	switch {
	case s.opt.MaxSize > 0 && out > s.opt.MaxSize:
		return refuse(TooLarge, nil, "The source unpacks to more than the limit of %d bytes (--max-image-size)", s.opt.MaxSize)
	case s.opt.MaxRatio > 0 && out > RatioGrace && out > s.opt.MaxRatio*s.read():
		return refuse(Bomb, nil, "The source unpacks to more than %d times its size (%d bytes from %d downloaded), over the limit of --max-decompression-ratio: a decompression bomb, or a disk of almost nothing but zeros, which imports with a higher limit (0 disables it)",
			s.opt.MaxRatio, out, s.read())
	}
	return nil
}

// blame returns err as it is when it is a refusal, the source's error when
// the source failed, and a corrupt stream otherwise.
func (s *stream) blame(err error) error {
	var refusal *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &refusal):
		return refusal
	case s.src.failed() != nil:
		return s.src.failed()
	}
	return err
}

// corrupt is the refusal of a stream that its decoder could not read.
func (s *stream) corrupt(err error) error {
	if err := s.src.failed(); err != nil {
		return err // the download failed: the decoder only saw it end
	}
	var (
		refusal *Error
		failed  *ChildError
	)
	switch {
	case errors.As(err, &refusal):
		return refusal
	case errors.As(err, &failed):
		return failed // not the stream's fault
	}
	var said *streamError
	if errors.As(err, &said) && said.demanding || s.codec != nil && slices.ContainsFunc(s.codec.demanding, func(d error) bool { return errors.Is(err, d) }) {
		return refuse(Demanding, err, "The %s stream needs a window of more than %d MiB to be decoded, the importer's limit (as %s -d's without a larger memory limit)",
			s.rep.Compression, maxWindow>>20, s.rep.Compression)
	}
	what := "corrupt"
	switch {
	case errors.As(err, &said): // a decompressor read all it was given
		if said.truncated {
			what = "truncated"
		}
	case errors.Is(err, io.ErrUnexpectedEOF) || s.src.ended():
		what = "truncated or corrupt"
	}
	return refuse(Corrupt, err, "The %s stream is %s (%s)", s.rep.Compression, what, err)
}

// decoded turns a decoder's errors, but the end of the stream, into
// refusals of a corrupt stream, unless the source itself failed.
type decoded struct {
	r io.Reader
	s *stream
}

func (d *decoded) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		return n, d.s.corrupt(err)
	}
	return n, err
}

// source is the download: it remembers how many bytes it gave, whether it
// ended, and its error, which is the download's and not the stream's. A
// decompressor's goroutine may still read it while a refusal is told apart
// from a failed download.
type source struct {
	r   io.Reader
	n   atomic.Int64
	mu  sync.Mutex
	eof bool
	err error
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n.Add(int64(n))
	if err != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err == io.EOF {
			s.eof = true
		} else {
			s.err = err
		}
	}
	return n, err
}

// failed is the download's error; nil while it has not failed.
func (s *source) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// ended reports whether the download ended whole.
func (s *source) ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eof
}

// counter counts the bytes read through it (by a decompressor's feeder,
// too).
type counter struct {
	r io.Reader
	n atomic.Int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
