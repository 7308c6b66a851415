package importer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/imageimport/image-import-operator/internal/importresult"
)

// storedImage writes an image of 3 MiB into dir as the store would, with
// data, a 1 MiB hole, and data, and returns its bytes.
func storedImage(t *testing.T, dir, id string) []byte {
	t.Helper()
	want := make([]byte, 3<<20)
	for i := range 1 << 20 {
		want[i], want[2<<20+i] = byte(i), byte(i*7+1)
	}
	f, err := os.Create(filepath.Join(dir, id))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	(&sparseWriter{f: f}).Write(want) // the hole stays a hole
	if err := f.Truncate(int64(len(want))); err != nil {
		t.Fatal(err)
	}
	return want
}

func TestDeliverToDiskImg(t *testing.T) {
	dir := t.TempDir()
	want := storedImage(t, dir, "img-1")
	res := importresult.Result{ImageID: "img-1", Size: int64(len(want)), VirtualSize: int64(len(want))}
	if _, err := Deliver(dir, res, VolumeTarget{File: "disk.img", Capacity: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "disk.img"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("disk.img does not hold the image (err %v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "img-1")); !os.IsNotExist(err) {
		t.Errorf("the image is still under its id: %v", err)
	}
}

func TestDeliverRefusesAVolumeTooSmall(t *testing.T) {
	dir := t.TempDir()
	want := storedImage(t, dir, "img-2")
	// 3 MiB / 0.945 is more than 3 MiB: the filesystem overhead counts.
	res := importresult.Result{ImageID: "img-2", VirtualSize: int64(len(want))}
	_, err := Deliver(dir, res, VolumeTarget{File: "disk.img", Capacity: 3 << 20})
	var f *Failure
	if !errors.As(err, &f) || !f.Permanent || f.Reason != importresult.ReasonInsufficientStorage {
		t.Fatalf("want a permanent InsufficientStorage failure, got %v", err)
	}
	t.Log(f.Message)
	if _, err := os.Stat(filepath.Join(dir, "disk.img")); !os.IsNotExist(err) {
		t.Error("disk.img exists after a refusal")
	}
	dev := filepath.Join(t.TempDir(), "dev")
	os.WriteFile(dev, nil, 0o600)
	storedImage(t, dir, "img-2")
	_, err = Deliver(dir, res, VolumeTarget{Device: dev, Capacity: 2 << 20})
	if !errors.As(err, &f) || !f.Permanent || f.Reason != importresult.ReasonInsufficientStorage {
		t.Fatalf("want a permanent InsufficientStorage failure for the device, got %v", err)
	}
}

// TestDeliverToDevice writes onto a regular file standing in for the
// device, full of old bytes: the image's hole must read as zeros.
func TestDeliverToDevice(t *testing.T) {
	dir := t.TempDir()
	want := storedImage(t, dir, "img-3")
	dev := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(dev, bytes.Repeat([]byte{0xff}, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	res := importresult.Result{ImageID: "img-3", Size: int64(len(want)), VirtualSize: int64(len(want))}
	if _, err := Deliver(dir, res, VolumeTarget{Device: dev, Capacity: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(want)], want) {
		t.Fatal("the device does not hold the image (old bytes where the image has a hole?)")
	}
	if _, err := os.Stat(filepath.Join(dir, "img-3")); !os.IsNotExist(err) {
		t.Errorf("the staged copy was not removed: %v", err)
	}
}
