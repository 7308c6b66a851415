package importer

import (
	"bytes"
	"hash"
	"io"
	"sync/atomic"
)

// A source that is not compressed or in an OVA is its own image: the
// image's sha256 is the download's, which is computed anyway. Hashing the
// same bytes twice would cost a core a second per GiB. Whether the source
// is passed on as it is, the unpacker tells only at the end; so the image's
// sha256 guesses from the first bytes (the image's are the download's) and
// skips, and if the guess was wrong the stored file is hashed again
// (sha256Of): a guess can cost time, never a wrong digest.

// headLen is how many of the first bytes are compared.
const headLen = 64

// headRecorder passes the download on and keeps its first write's first
// bytes, published once.
type headRecorder struct {
	w    io.Writer
	head atomic.Pointer[[]byte]
}

func (r *headRecorder) Write(p []byte) (int, error) {
	if r.head.Load() == nil {
		head := bytes.Clone(p[:min(len(p), headLen)])
		r.head.Store(&head)
	}
	return r.w.Write(p)
}

// unlessSame is a hash of the image that skips it all when the image's
// first write starts with the download's first bytes: then it is taken to
// be the download, passed on as it is.
type unlessSame struct {
	h        hash.Hash
	download *headRecorder
	decided  bool
	skipped  bool
}

func (u *unlessSame) Write(p []byte) (int, error) {
	if !u.decided {
		// The download's first bytes were recorded before the unpacker
		// could write any image byte.
		head := u.download.head.Load()
		u.decided = true
		u.skipped = head != nil && len(*head) == headLen && bytes.HasPrefix(p, *head)
	}
	if u.skipped {
		return len(p), nil
	}
	return u.h.Write(p)
}

// sha256Of hashes the file anew, from its start.
func sha256Of(s *staging, sums *digests) error {
	if _, err := s.Seek(0, io.SeekStart); err != nil {
		return err
	}
	sums.sha256.Reset()
	_, err := io.Copy(sums.sha256, s.File)
	return err
}
