// Package importresult is the contract between the importer and the
// reconciler: the JSON document the importer writes to its termination
// message (/dev/termination-log, at most 4096 bytes) when it exits.
package importresult

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// MaxSize is the kubelet's limit on a termination message.
const MaxSize = 4096

// Exit codes of the importer. The Job's podFailurePolicy fails the Job at
// once on ExitPermanent and retries any other non-zero code.
const (
	ExitSuccess   = 0
	ExitTransient = 1
	ExitPermanent = 2
)

// Failure reasons: stable, CamelCase, used as metric labels.
const (
	ReasonURLRefused       = "URLRefused"
	ReasonFormatMismatch   = "FormatMismatch"
	ReasonUnsafeImage      = "UnsafeImage"
	ReasonChecksumMismatch = "ChecksumMismatch"
	ReasonSourceError      = "SourceError"  // HTTP 4xx
	ReasonNetworkError     = "NetworkError" // connection errors, HTTP 5xx
	ReasonTimeout          = "Timeout"
	ReasonUnsupported      = "Unsupported"
	ReasonInternal         = "InternalError"

	ReasonSandboxUnavailable    = "SandboxUnavailable"    // the node cannot confine qemu-img as required
	ReasonLimitExceeded         = "LimitExceeded"         // the image needs more than a bound allows (file size, CPU time)
	ReasonInsufficientStorage   = "InsufficientStorage"   // the converted image cannot fit the destination
	ReasonInsufficientResources = "InsufficientResources" // the node ran out of memory or threads: transient
	ReasonCorruptSource         = "CorruptSource"         // a compressed stream or an OVA that is corrupt or truncated
)

// Result is what one importer run reports. On success Error is empty; on
// failure Error is one sentence a user understands and Reason classifies it.
type Result struct {
	ImageID          string  `json:"image_id,omitempty"`
	Size             int64   `json:"size,omitempty"`
	VirtualSize      int64   `json:"virtual_size,omitempty"`
	SourceFormat     string  `json:"source_format,omitempty"`
	DiskFormat       string  `json:"disk_format,omitempty"`
	Checksum         string  `json:"checksum,omitempty"` // md5 of the stored image, Glance's legacy checksum
	OSHashAlgo       string  `json:"os_hash_algo,omitempty"`
	OSHashValue      string  `json:"os_hash_value,omitempty"`
	SHA256           string  `json:"sha256,omitempty"` // sha256 of the stored image
	SourceSHA256     string  `json:"source_sha256,omitempty"`
	BytesTransferred int64   `json:"bytes_transferred,omitempty"`
	DurationSeconds  float64 `json:"duration_seconds,omitempty"`
	// Unpacked says what was unpacked from the source: nil when the source
	// was the disk image itself.
	Unpacked *Unpacked `json:"unpacked,omitempty"`

	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Unpacked is what the importer took out of a compressed source or an OVA.
// The source's checksums (and bytes_transferred) are of the bytes as
// downloaded; checksum and os_hash_value are of the stored image.
type Unpacked struct {
	Compression      string `json:"compression,omitempty"`       // gzip, xz, zstd or bzip2
	CompressedSize   int64  `json:"compressed_size,omitempty"`   // bytes of the compressed stream
	UncompressedSize int64  `json:"uncompressed_size,omitempty"` // bytes it decompressed to
	DiskSize         int64  `json:"disk_size"`                   // bytes of the disk image unpacked, as inspected
	OVAEntry         string `json:"ova_entry,omitempty"`         // the disk's entry in the OVA
	OVFName          string `json:"ovf_name,omitempty"`          // the OVF's virtual system
	OVFProduct       string `json:"ovf_product,omitempty"`       // the OVF's ProductSection
	OVFVendor        string `json:"ovf_vendor,omitempty"`
	OVFVersion       string `json:"ovf_version,omitempty"`
}

// Failed reports whether r describes a failure.
func (r *Result) Failed() bool { return r.Error != "" }

// Parse reads a termination message. It fails on anything that is not a
// Result, such as the log tail the kubelet substitutes when the importer
// crashed before writing one.
func Parse(message string) (*Result, error) {
	var r Result
	if err := json.Unmarshal([]byte(message), &r); err != nil {
		return nil, fmt.Errorf("termination message is not an import result: %w", err)
	}
	if r.Error == "" && r.ImageID == "" {
		return nil, fmt.Errorf("termination message is neither a success nor a failure")
	}
	return &r, nil
}

// Marshal encodes r for a termination message, shortening Error so that
// the document fits in MaxSize.
func Marshal(r Result) ([]byte, error) {
	for {
		b, err := json.Marshal(r)
		if err != nil || len(b) <= MaxSize {
			return b, err
		}
		over := len(b) - MaxSize + len("…")
		if over >= len(r.Error) {
			return nil, fmt.Errorf("import result does not fit in %d bytes", MaxSize)
		}
		cut := len(r.Error) - over
		for cut > 0 && !utf8.RuneStart(r.Error[cut]) { // never split a character
			cut--
		}
		r.Error = r.Error[:cut] + "…"
	}
}
