package diskformat

import "io"

// qemuProbeLen is how much qemu reads to guess a format
// (BLOCK_PROBE_BUF_SIZE in block.c, find_image_format).
const qemuProbeLen = 512

// qemuProbeBuffer is what qemu's probes see: the first 512 bytes, with
// zeros past the end of a shorter file.
func qemuProbeBuffer(r io.ReaderAt, size int64) []byte {
	buf := make([]byte, qemuProbeLen)
	readPadded(r, size, 0, buf)
	return buf
}

// readPadded reads buf at off, leaving zeros where the file ends, as qemu's
// block layer does for reads past the end. It reports whether every byte
// that lies in the file was read.
func readPadded(r io.ReaderAt, size, off int64, buf []byte) bool {
	if off < 0 || off >= size {
		return off >= 0
	}
	return readAt(r, size, off, buf[:min(int64(len(buf)), size-off)])
}

// Formats qemu-img recognises by their first bytes that this importer does
// not take. They are recognised only to refuse them, above all when the
// bytes are declared raw: a raw image whose first sector qemu would probe
// as one of them (block.c, bdrv_probe_all) turns into that format for any
// later reader that guesses formats, with its headers naming other files.
const (
	QED       = "qed"
	LUKS      = "luks"
	Parallels = "parallels" // Glance's "ploop"
	Bochs     = "bochs"
	Cloop     = "cloop"
)

// qemuProbes mirror the probe functions of QEMU 7.2 on the 512-byte probe
// buffer, a little wider where that costs nothing: the magic alone decides
// even where qemu also checks a version.
var qemuProbes = []struct {
	format, what string
	match        func(buf []byte) bool
}{
	// block/qed.c qed_probe: the magic "QED\0".
	{QED, "a QED image", func(b []byte) bool { return string(b[:4]) == "QED\x00" }},
	// crypto/block-luks.c qcrypto_block_luks_has_format: "LUKS\xba\xbe" (and version 1).
	{LUKS, "a LUKS encrypted volume", func(b []byte) bool { return string(b[:6]) == "LUKS\xba\xbe" }},
	// block/parallels.c parallels_probe: either magic (and version 2).
	{Parallels, "a Parallels (ploop) image", func(b []byte) bool {
		return string(b[:16]) == "WithoutFreeSpace" || string(b[:16]) == "WithouFreSpacExt"
	}},
	// block/bochs.c bochs_probe: magic, type "Redolog", subtype "Growing" (and version 1 or 2).
	{Bochs, "a Bochs growing redolog image", func(b []byte) bool {
		return cString(b[:32]) == "Bochs Virtual HD Image" && cString(b[32:48]) == "Redolog" && cString(b[48:64]) == "Growing"
	}},
	// block/cloop.c cloop_probe: the V2.0 shell header (qemu compares all
	// three lines; the first two are enough here).
	{Cloop, "a cloop compressed loop image", func(b []byte) bool {
		return string(b[:len(cloopMagicHead)]) == cloopMagicHead
	}},
}

const cloopMagicHead = "#!/bin/sh\n#V2.0 Format\n"

// probeQemuOnly recognises the formats of qemuProbes and refuses them.
func probeQemuOnly(format string) func(io.ReaderAt, int64) (Info, bool, error) {
	for _, p := range qemuProbes {
		if p.format != format {
			continue
		}
		return func(r io.ReaderAt, size int64) (Info, bool, error) {
			if size == 0 || !p.match(qemuProbeBuffer(r, size)) { // qemu probes nothing in an empty file
				return Info{}, false, nil
			}
			return Info{}, true, &Error{Kind: ErrUnsupported, Format: p.format,
				Reason: "the bytes are " + p.what + ", which qemu-img would open as " + p.format + " rather than as raw bytes; " + p.format + " images are not supported"}
		}
	}
	panic("no qemu probe for " + format)
}
