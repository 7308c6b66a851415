package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/imageimport/image-import-operator/internal/importer"
	"github.com/imageimport/image-import-operator/internal/importresult"
)

// `importer remove --dest=DIR --image-id=ID` removes one image's data from
// the store: DIR/ID and the staging files an import of it left behind. It
// is the program of the cleanup Job that runs when an Image is deleted.
// An image that is not there is removed already: exit 0, so that a Job run
// twice, or for an image whose import never wrote, succeeds.

// errUnsafeID refuses an id that could name anything but a file of the
// store's own directory.
var errUnsafeID = errors.New("not an image id")

// runRemove is the remove subcommand. Exit codes: 0 removed (or absent),
// 2 refused (a bad id or flag), 1 a failure worth a retry.
func runRemove(args []string) int {
	fs := flag.NewFlagSet("importer remove", flag.ContinueOnError)
	dest := fs.String("dest", "", "The image store: the image is DEST/IMAGE_ID.")
	id := fs.String("image-id", "", "Id, and file name, of the image to remove.")
	if err := fs.Parse(args); err != nil {
		return importresult.ExitPermanent
	}
	if *dest == "" {
		fmt.Fprintln(os.Stderr, "remove: --dest is required")
		return importresult.ExitPermanent
	}
	removed, err := removeImage(*dest, *id)
	if err != nil {
		fmt.Fprintln(os.Stderr, "remove:", err)
		if errors.Is(err, errUnsafeID) {
			return importresult.ExitPermanent
		}
		return importresult.ExitTransient
	}
	fmt.Fprintf(os.Stderr, "{\"removed\":%q}\n", removed)
	return importresult.ExitSuccess
}

// removeImage removes dest/id and id's staging files, and returns the names
// it removed. It never follows a link (a link is removed, not its target)
// and never removes a directory with something in it.
func removeImage(dest, id string) ([]string, error) {
	if err := checkRemovableID(id); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(dest)
	if err != nil {
		return nil, fmt.Errorf("reading the store: %w", err)
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		if name != id && !importer.IsStaging(name, id) {
			continue
		}
		if err := os.Remove(filepath.Join(dest, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fmt.Errorf("removing %s: %w", name, err)
		}
		removed = append(removed, name)
	}
	if len(removed) > 0 {
		if err := syncDir(dest); err != nil {
			return removed, fmt.Errorf("syncing the store: %w", err)
		}
	}
	return removed, nil
}

// checkRemovableID refuses ids that are not a plain file name of the store.
func checkRemovableID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("--image-id is required: %w", errUnsafeID)
	case strings.Contains(id, "/"):
		return fmt.Errorf("--image-id %q contains '/': %w", id, errUnsafeID)
	case strings.HasPrefix(id, "."):
		return fmt.Errorf("--image-id %q starts with '.': %w", id, errUnsafeID)
	case !safeImageID.MatchString(id):
		return fmt.Errorf("--image-id %q is not a safe file name: %w", id, errUnsafeID)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// dispatch runs the subcommand the first argument names (remove, export), or else
// an import.
func dispatch(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "remove":
			return runRemove(args[1:])
		case "export":
			return export(args[1:]) // export.go
		}
	}
	return run(args)
}
