// Package nbdexport serves a disk of a given size as an NBD export (the
// Network Block Device protocol: fixed newstyle handshake, simple replies)
// to one client that writes it from its first byte to its last, and hands
// the bytes on as a stream, in order, as they arrive.
//
// qemu-img convert, without -W, writes its output in order of offset, one
// request at a time. Pointed at such an export over a socket the importer
// created (the sandbox lets qemu-img create none), it converts straight
// into the importer, which hashes and stores the disk while qemu-img
// decodes it: the bytes are read once, instead of written by qemu-img and
// read back. Ranges the client never writes, and write-zeroes requests,
// read as zeros, as they would from the new, sparse file they become.
//
// Anything else the client asks is refused: a write before the stream's
// position (out of order), past the disk's size, a read, a trim. The
// stream then fails and the client is cut off.
package nbdexport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Protocol constants (the NBD protocol's doc/proto.md).
const (
	nbdMagic     = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic     = 0x49484156454f5054 // "IHAVEOPT"
	replyMagic   = 0x0003e889045565a9 // option replies
	requestMagic = 0x25609513
	simpleReply  = 0x67446698

	flagFixedNewstyle = 1 << 0 // handshake flags
	flagNoZeroes      = 1 << 1

	flagHasFlags    = 1 << 0 // transmission flags
	flagSendFlush   = 1 << 2
	flagWriteZeroes = 1 << 6

	optExportName = 1
	optAbort      = 2
	optInfo       = 6
	optGo         = 7

	repAck      = 1
	repInfo     = 3
	repErrUnsup = 1<<31 | 1

	infoExport = 0

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdWriteZeroes = 6

	errPerm   = 1
	errInval  = 22
	errNoSpc  = 28
	errNotSup = 95

	// maxOption bounds an option's data: an export name and info requests.
	maxOption = 64 << 10
	// maxPayload is the largest write the protocol lets a client send
	// without asking (32 MiB); qemu-img sends 2 MiB.
	maxPayload = 32 << 20
)

// Export is the stream of one export's bytes: Read returns the disk in
// order, from the client's writes, until the client disconnects and the
// rest, if any, is read as zeros.
type Export struct {
	conn io.Writer
	r    *bufio.Reader
	size int64

	started bool
	pos     int64 // bytes of the stream returned so far
	gap     int64 // zeros to return before the current request's bytes
	left    int64 // bytes of the current request not yet returned
	cur     request
	closed  bool // the client disconnected
	err     error

	// Writes, WriteZeroes and Flushes count the requests served.
	Writes, WriteZeroes, Flushes int
}

type request struct {
	flags, typ uint16
	handle     uint64
	offset     uint64
	length     uint32
}

// New returns the export of a disk of size bytes served over conn, a
// connected stream socket. The handshake happens on the first Read.
func New(conn io.ReadWriter, size int64) *Export {
	return &Export{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), size: size}
}

// ErrProtocol is wrapped by every error of a client that broke the protocol
// or asked what the export refuses.
var ErrProtocol = errors.New("NBD client")

func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// Read returns the next bytes of the disk; io.EOF after its last byte, once
// the client disconnected.
func (e *Export) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.read(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

func (e *Export) read(p []byte) (int, error) {
	if err := e.advance(); err != nil {
		return 0, err
	}
	if z := e.zerosAhead(); z > 0 {
		n := int(min(int64(len(p)), z))
		clear(p[:n])
		return n, e.skip(n)
	}
	return e.readData(p)
}

// ReadChunk is Read for a reader that can use a run of zeros without its
// bytes: it fills p with the next bytes of the disk and stops where a run
// of zeros begins, or, at such a run, returns how many of its bytes (up to
// len(p)) it skipped, with zeros true and p untouched. Zeros are ranges the
// client never wrote and its write-zeroes requests: most of a sparse disk,
// which then costs no copy, clearing or comparing.
func (e *Export) ReadChunk(p []byte) (n int, zeros bool, err error) {
	if e.err != nil {
		return 0, false, e.err
	}
	for n < len(p) && err == nil {
		if err = e.advance(); err != nil {
			break
		}
		z := e.zerosAhead()
		switch {
		case z > 0 && n > 0 && !zeros, z == 0 && zeros:
			return n, zeros, nil // the run, or the data, ends the chunk
		case z > 0:
			m := int(min(int64(len(p)-n), z))
			err = e.skip(m)
			n, zeros = n+m, true
		default:
			var m int
			m, err = e.readData(p[n:])
			n += m
		}
	}
	if err != nil {
		e.err = err
		if err == io.EOF && n > 0 {
			err = nil // the end, next time
		}
	}
	return n, zeros, err
}

// advance makes the stream's next bytes those of a request or a gap:
// it reads requests until one has bytes left; io.EOF after the disk's end.
func (e *Export) advance() error {
	if !e.started {
		if err := e.handshake(); err != nil {
			return err
		}
		e.started = true
	}
	for e.gap == 0 && e.left == 0 {
		if e.closed {
			if e.pos == e.size {
				return io.EOF
			}
			e.gap = e.size - e.pos // never written: zeros
			return nil
		}
		if err := e.next(); err != nil {
			return err
		}
	}
	return nil
}

// zerosAhead is how many of the next bytes are zeros, up to the end of the
// current gap or write-zeroes request; 0 when they are written data.
func (e *Export) zerosAhead() int64 {
	switch {
	case e.gap > 0:
		return e.gap
	case e.cur.typ != cmdWrite:
		return e.left
	}
	return 0
}

// skip passes over n of the zeros ahead.
func (e *Export) skip(n int) error {
	e.pos += int64(n)
	if e.gap > 0 {
		e.gap -= int64(n)
		return nil
	}
	e.left -= int64(n)
	if e.left == 0 {
		return e.reply(e.cur.handle, 0)
	}
	return nil
}

// readData reads the current write request's next bytes into p.
func (e *Export) readData(p []byte) (int, error) {
	n, err := e.r.Read(p[:min(int64(len(p)), e.left)])
	e.left -= int64(n)
	e.pos += int64(n)
	if err != nil {
		return n, fmt.Errorf("reading a write of %d bytes at %d: %w", e.cur.length, e.cur.offset, noEOF(err))
	}
	if e.left == 0 {
		return n, e.reply(e.cur.handle, 0)
	}
	return n, nil
}

// next reads requests until one whose bytes are the stream's next ones.
func (e *Export) next() error {
	var h [28]byte
	if _, err := io.ReadFull(e.r, h[:]); err != nil {
		return fmt.Errorf("reading a request: %w", noEOF(err))
	}
	if m := binary.BigEndian.Uint32(h[0:]); m != requestMagic {
		return protocolError("sent a request with the magic %#x", m)
	}
	req := request{
		flags:  binary.BigEndian.Uint16(h[4:]),
		typ:    binary.BigEndian.Uint16(h[6:]),
		handle: binary.BigEndian.Uint64(h[8:]),
		offset: binary.BigEndian.Uint64(h[16:]),
		length: binary.BigEndian.Uint32(h[24:]),
	}
	switch req.typ {
	case cmdDisc:
		e.closed = true
		return nil
	case cmdFlush:
		// The importer syncs the image itself before it stores it: what
		// the client calls durable does not matter.
		e.Flushes++
		return e.reply(req.handle, 0)
	case cmdWrite, cmdWriteZeroes:
		return e.start(req)
	}
	e.reply(req.handle, errNotSup)
	return protocolError("sent a request of type %d, which the export does not serve", req.typ)
}

// start makes req, a write or write-zeroes, the current request.
func (e *Export) start(req request) error {
	end := req.offset + uint64(req.length)
	switch {
	case req.typ == cmdWrite && req.length > maxPayload:
		e.reply(req.handle, errInval)
		return protocolError("sent a write of %d bytes, more than %d", req.length, maxPayload)
	case end > uint64(e.size) || end < req.offset:
		e.reply(req.handle, errNoSpc)
		return protocolError("wrote %d bytes at %d, past the disk's %d bytes", req.length, req.offset, e.size)
	case req.offset < uint64(e.pos):
		e.reply(req.handle, errPerm)
		return protocolError("wrote at %d, before %d: out of order", req.offset, e.pos)
	}
	if req.typ == cmdWrite {
		e.Writes++
	} else {
		e.WriteZeroes++
	}
	e.cur, e.gap, e.left = req, int64(req.offset)-e.pos, int64(req.length)
	if req.length == 0 {
		return e.reply(req.handle, 0)
	}
	return nil
}

func (e *Export) reply(handle uint64, errno uint32) error {
	var b [16]byte
	binary.BigEndian.PutUint32(b[0:], simpleReply)
	binary.BigEndian.PutUint32(b[4:], errno)
	binary.BigEndian.PutUint64(b[8:], handle)
	if _, err := e.conn.Write(b[:]); err != nil {
		return fmt.Errorf("replying to the client: %w", err)
	}
	return nil
}

// transmissionFlags are what the export serves: writes, write-zeroes and
// flushes. No trim and no fast zero: qemu-img then writes every byte of
// the disk, data or zeros, in order, and never asks to zero it first.
const transmissionFlags = flagHasFlags | flagSendFlush | flagWriteZeroes

// handshake negotiates the export: fixed newstyle, the export's size and
// flags for any export name, no structured replies or meta contexts.
func (e *Export) handshake() error {
	var greeting [18]byte
	binary.BigEndian.PutUint64(greeting[0:], nbdMagic)
	binary.BigEndian.PutUint64(greeting[8:], optMagic)
	binary.BigEndian.PutUint16(greeting[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := e.conn.Write(greeting[:]); err != nil {
		return fmt.Errorf("greeting the client: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(e.r, cf[:]); err != nil {
		return fmt.Errorf("reading the client's flags: %w", noEOF(err))
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&flagFixedNewstyle == 0 || clientFlags&^(flagFixedNewstyle|flagNoZeroes) != 0 {
		return protocolError("sent the flags %#x; the export speaks fixed newstyle only", clientFlags)
	}
	for {
		var h [16]byte
		if _, err := io.ReadFull(e.r, h[:]); err != nil {
			return fmt.Errorf("reading an option: %w", noEOF(err))
		}
		if m := binary.BigEndian.Uint64(h[0:]); m != optMagic {
			return protocolError("sent an option with the magic %#x", m)
		}
		opt, length := binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:])
		if length > maxOption {
			return protocolError("sent an option of %d bytes", length)
		}
		if _, err := io.CopyN(io.Discard, e.r, int64(length)); err != nil { // the name: any is this export
			return fmt.Errorf("reading an option: %w", noEOF(err))
		}
		switch opt {
		case optExportName:
			var b [10]byte
			binary.BigEndian.PutUint64(b[0:], uint64(e.size))
			binary.BigEndian.PutUint16(b[8:], transmissionFlags)
			reply := b[:]
			if clientFlags&flagNoZeroes == 0 {
				reply = append(reply, make([]byte, 124)...)
			}
			_, err := e.conn.Write(reply)
			return err
		case optInfo, optGo:
			var info [12]byte
			binary.BigEndian.PutUint16(info[0:], infoExport)
			binary.BigEndian.PutUint64(info[2:], uint64(e.size))
			binary.BigEndian.PutUint16(info[10:], transmissionFlags)
			if err := e.optReply(opt, repInfo, info[:]); err != nil {
				return err
			}
			if err := e.optReply(opt, repAck, nil); err != nil || opt == optGo {
				return err
			}
		case optAbort:
			e.optReply(opt, repAck, nil)
			return protocolError("aborted the handshake")
		default: // structured replies, meta contexts, TLS, lists: not served
			if err := e.optReply(opt, repErrUnsup, nil); err != nil {
				return err
			}
		}
	}
}

func (e *Export) optReply(opt, typ uint32, data []byte) error {
	b := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint64(b[0:], replyMagic)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], typ)
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	if _, err := e.conn.Write(append(b, data...)); err != nil {
		return fmt.Errorf("answering an option: %w", err)
	}
	return nil
}

// noEOF turns an end of stream where more was due into an error that says so.
func noEOF(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("the client closed the connection")
	}
	return err
}
