package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/imageimport/image-import-operator/internal/importresult"
)

// store makes a store directory holding the named files, each with its
// name as content.
func store(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func listStore(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

func TestRemoveTakesTheImageAndItsStagingOnly(t *testing.T) {
	const id = "0b5c7a48-4a4e-4c1d-9a0e-1f2e3d4c5b6a"
	dir := store(t, id, "."+id+".partial-1a2b", "."+id+".partial-3c4d",
		id+"0", "."+id+"0.partial-1a2b", "other", ".other.partial-9f")
	outside := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(outside, []byte("keep"), 0o640); err != nil {
		t.Fatal(err)
	}

	if code := runRemove([]string{"--dest=" + dir, "--image-id=" + id}); code != importresult.ExitSuccess {
		t.Fatalf("exit code %d, want 0", code)
	}
	want := []string{"." + id + "0.partial-1a2b", ".other.partial-9f", id + "0", "other"}
	if got := listStore(t, dir); !slices.Equal(got, want) {
		t.Errorf("store holds %q, want %q", got, want)
	}
	// Run again: the image is gone already, which is success.
	if code := runRemove([]string{"--dest=" + dir, "--image-id=" + id}); code != importresult.ExitSuccess {
		t.Errorf("second run: exit code %d, want 0", code)
	}
}

func TestRemoveRemovesALinkNotItsTarget(t *testing.T) {
	dir := store(t)
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, []byte("keep"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "linked")); err != nil {
		t.Fatal(err)
	}
	if code := runRemove([]string{"--dest=" + dir, "--image-id=linked"}); code != importresult.ExitSuccess {
		t.Fatalf("exit code %d, want 0", code)
	}
	if got := listStore(t, dir); len(got) != 0 {
		t.Errorf("store holds %q, want nothing", got)
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("the link's target went too: %v", err)
	}
}

func TestRemoveRefusesUnsafeIDs(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"victim", ".hidden", filepath.Join("store", "x")} {
		if err := os.WriteFile(filepath.Join(parent, n), []byte(n), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, ".hidden"), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "../victim", "sub/x", ".hidden", ".", "..", "/etc/passwd", "a b"} {
		if code := runRemove([]string{"--dest=" + dir, "--image-id=" + id}); code != importresult.ExitPermanent {
			t.Errorf("--image-id=%q: exit code %d, want %d", id, code, importresult.ExitPermanent)
		}
	}
	if got := listStore(t, parent); !slices.Equal(got, []string{".hidden", "store", "victim"}) {
		t.Errorf("parent holds %q: a refused id removed something", got)
	}
	if got := listStore(t, dir); !slices.Equal(got, []string{".hidden", "x"}) {
		t.Errorf("store holds %q: a refused id removed something", got)
	}
}

func TestRemoveFailsOnAMissingStore(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "not-mounted")
	if code := runRemove([]string{"--dest=" + missing, "--image-id=abc"}); code != importresult.ExitTransient {
		t.Errorf("exit code %d, want %d: a store that is not there is not an image removed", code, importresult.ExitTransient)
	}
}

func TestRemoveSubcommandIsWired(t *testing.T) {
	// main dispatches on the first argument: `importer remove ...`.
	dir := store(t, "img")
	if code := dispatch([]string{"remove", "--dest=" + dir, "--image-id=img"}); code != importresult.ExitSuccess {
		t.Fatalf("exit code %d", code)
	}
	if got := listStore(t, dir); len(got) != 0 {
		t.Errorf("store holds %q", got)
	}
}

// TestRemoveLeavesTheStagingOfAnImageWhoseIDExtendsIt: image "a" and image
// "a.partial-b" are both valid ids. The staging files of "a.partial-b"
// start with ".a.partial-", the staging prefix of "a"; removing "a" must
// leave them, or it deletes an import in flight. The staging files are
// made as internal/importer makes them: os.CreateTemp with the pattern
// ".<id>.partial-*" (decimal), and its own 12 hex digits when it links a
// finished image aside.
func TestRemoveLeavesTheStagingOfAnImageWhoseIDExtendsIt(t *testing.T) {
	dir := store(t, "a", ".a.partial-0123456789ab", "a.partial-b", ".a.partial-b.partial-0123456789ab")
	staging := func(id string) string {
		f, err := os.CreateTemp(dir, "."+id+".partial-*")
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		return filepath.Base(f.Name())
	}
	ofA, ofAB := staging("a"), staging("a.partial-b")

	if code := runRemove([]string{"--dest=" + dir, "--image-id=a"}); code != importresult.ExitSuccess {
		t.Fatalf("exit code %d, want 0", code)
	}
	want := []string{".a.partial-b.partial-0123456789ab", ofAB, "a.partial-b"}
	slices.Sort(want)
	if got := listStore(t, dir); !slices.Equal(got, want) {
		t.Errorf("store holds %q, want %q (%s was a's staging file)", got, want, ofA)
	}
}
