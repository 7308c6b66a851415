package diskformat

import (
	"slices"
	"strings"
	"testing"
)

func TestVMDKExtentLines(t *testing.T) {
	for desc, want := range map[string][]string{
		"RW 8 SPARSE \"a\"\n":                     {"RW 8 SPARSE \"a\""},
		"  \tRW 8 SPARSE \"a\"\r\n":               {"RW 8 SPARSE \"a\"\r"},
		"\n\n\nRW 8 SPARSE \"a\"":                 {"RW 8 SPARSE \"a\""}, // once, though three line starts reach it
		"RW\n+8\nFLAT\n\"/x\"\n0\n":               {"RW"},
		"rdonly 8 FLAT \"/x\" 0\nNOACCESS 8 ZERO": {"rdonly 8 FLAT \"/x\" 0", "NOACCESS 8 ZERO"},
		"# RW 8 FLAT \"/x\" 0\nRWX 8\nxRW 8\n":    nil,
		"ddb.x = \"RW\"\n":                        nil,
	} {
		if got := vmdkExtentLines(desc); !slices.Equal(got, want) {
			t.Errorf("vmdkExtentLines(%q) = %q, want %q", desc, got, want)
		}
	}
}

// BenchmarkVMDKExtentLinesBlank: a descriptor of blank lines costs one
// pass, not one pass per line (the first version took 2.5 s for 64 KiB).
func BenchmarkVMDKExtentLinesBlank(b *testing.B) {
	desc := strings.Repeat(" \n", vmdkMaxDescriptor/2) + "RW 8 SPARSE \"a\"\n"
	for b.Loop() {
		if got := vmdkExtentLines(desc); len(got) != 1 {
			b.Fatalf("got %q", got)
		}
	}
}

func TestVMDKTextProbe(t *testing.T) {
	for text, want := range map[string]bool{
		"version=1\n":                        true,
		"# Disk DescriptorFile\nversion=1\n": true,
		"#\n   \n \r\nversion=3\r\n":         true,
		"\nversion=1\n":                      false, // qemu skips only lines of spaces
		"\tversion=1\n":                      false,
		"version=4\n":                        false,
		"version=1":                          false,
	} {
		if got := vmdkTextProbe([]byte(text)); got != want {
			t.Errorf("vmdkTextProbe(%q) = %v, want %v", text, got, want)
		}
	}
}

func TestClusterSetAddRange(t *testing.T) {
	s := newClusterSet(300)
	for _, tc := range []struct {
		from, n int64
		want    bool
	}{
		{0, 1, true}, {0, 1, false}, {1, 200, true}, {150, 10, false}, {201, 63, true},
		{264, 36, true}, {299, 1, false}, {300, 1, false}, {-1, 1, false},
	} {
		if got := s.addRange(tc.from, tc.n); got != tc.want {
			t.Errorf("addRange(%d, %d) = %v, want %v", tc.from, tc.n, got, tc.want)
		}
	}
}
