package importer

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// An import of image "a" removes what a killed attempt at "a" left, and
// never the staging file of a running import of "a.partial-b", whose name
// starts the same.
func TestRemoveStaleStagingKeepsOtherImagesStaging(t *testing.T) {
	dir := t.TempDir()
	mine, err := os.CreateTemp(dir, stagingPrefix("a")+"*")
	if err != nil {
		t.Fatal(err)
	}
	mine.Close()
	theirs, err := os.CreateTemp(dir, stagingPrefix("a.partial-b")+"*")
	if err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	aside := filepath.Join(dir, stagingPrefix("a")+randomSuffix())
	for _, f := range []string{aside, filepath.Join(dir, "a"), filepath.Join(dir, "a.partial-b")} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeStaleStaging(dir, "a"); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	want := []string{filepath.Base(theirs.Name()), "a", "a.partial-b"}
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Fatalf("left %q, want %q", left, want)
	}
}
