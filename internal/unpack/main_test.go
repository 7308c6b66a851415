package unpack

import (
	"os"
	"testing"

	"github.com/imageimport/image-import-operator/internal/sandbox"
)

func TestMain(m *testing.M) {
	sandbox.Main() // this test binary launches the sandboxed decompressors
	os.Exit(m.Run())
}
