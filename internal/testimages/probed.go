package testimages

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// QemuOnlyImages writes one small image of each format that qemu-img
// recognises by its first bytes but that an importer of Glance formats does
// not take, and returns their paths by qemu's format name: qed, luks and
// parallels made by qemu-img itself, bochs and cloop by hand (qemu-img
// cannot create them; `qemu-img info` opens both). Declared raw, each one
// would turn into that format for anything that later guesses formats.
func QemuOnlyImages(t testing.TB, dir string) map[string]string {
	t.Helper()
	mk := func(name string) string { return filepath.Join(dir, name) }
	images := map[string]string{"qed": mk("image.qed"), "luks": mk("image.luks"), "parallels": mk("image.parallels")}
	QemuImg(t, "create", "-f", "qed", images["qed"], "1M")
	QemuImg(t, "create", "-f", "parallels", images["parallels"], "1M")
	write(t, images["luks"], luksImage(t))

	le := binary.LittleEndian
	bochs := make([]byte, 4096)
	copy(bochs, "Bochs Virtual HD Image")
	copy(bochs[32:], "Redolog")
	copy(bochs[48:], "Growing")
	le.PutUint32(bochs[64:], 0x00020000) // version 2
	le.PutUint32(bochs[68:], 512)        // header size
	le.PutUint32(bochs[72:], 1)          // catalog entries
	le.PutUint32(bochs[76:], 512)        // bitmap size
	le.PutUint32(bochs[80:], 4096)       // extent size
	le.PutUint64(bochs[88:], 4096)       // disk size
	images["bochs"] = write(t, mk("image.bochs"), bochs)

	cloop := make([]byte, 4096)
	copy(cloop, "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n")
	binary.BigEndian.PutUint32(cloop[128:], 4096) // block size
	binary.BigEndian.PutUint32(cloop[132:], 1)    // blocks
	images["cloop"] = write(t, mk("image.cloop"), cloop)
	return images
}

var luks struct {
	once sync.Once
	data []byte
	err  error
}

// luksImage is a 1 MiB LUKS volume made by qemu-img, once per process:
// its key derivation takes seconds on a busy machine.
func luksImage(t testing.TB) []byte {
	t.Helper()
	luks.once.Do(func() {
		dir, err := os.MkdirTemp("", "testimages-luks-")
		if err != nil {
			luks.err = err
			return
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "image.luks")
		if luks.err = createLUKS(path); luks.err == nil {
			luks.data, luks.err = os.ReadFile(path)
		}
	})
	if luks.err != nil {
		t.Fatal(luks.err)
	}
	return luks.data
}

// createLUKS has qemu-img create a LUKS volume at path. qemu times a first
// round of its key derivation in the thread's CPU time and gives up when
// that reads 0 ms ("Unable to get accurate CPU usage"), which a fast CPU
// makes as likely as not: that failure is tried again, up to 30 times.
func createLUKS(path string) error {
	var err error
	for range 30 {
		var out []byte
		out, err = exec.Command("qemu-img", "create", "-f", "luks", "--object", "secret,id=k,data=passphrase",
			"-o", "key-secret=k,iter-time=10", path, "1M").CombinedOutput()
		if err == nil {
			return nil
		}
		err = fmt.Errorf("qemu-img create -f luks: %w: %s", err, out)
		if !bytes.Contains(out, []byte("Unable to get accurate CPU usage")) {
			return err
		}
	}
	return err
}
