package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"
)

// A Block volume is a sparse file NAME.img (space is taken as the pod writes) behind a loop
// device, and NAME.dev, a device node of that loop device, which the PersistentVolume names.
// The PersistentVolume's path cannot change, but a loop device's number can (make stop detaches
// them; a reboot loses them): reattach makes NAME.dev point at the new one.

const loopControl = "/dev/loop-control"

// errNoLoop is what a Block claim gets, as an event, on a kernel without loop devices.
var errNoLoop = errors.New("Block volumes need a loop device, and this kernel has none (" + loopControl + " is missing: load the loop module, modprobe loop); Filesystem volumes work")

func loopSupported() bool {
	_, err := os.Stat(loopControl)
	return err == nil
}

// loopBlockSize rounds a Block volume up: a loop device's size is whole sectors, and a claim
// must get at least what it asked for.
const loopBlockSize = 1 << 20

func (p *provisioner) createBlock(name string, size int64) (string, error) {
	if !loopSupported() {
		return "", errNoLoop
	}
	f, err := os.OpenFile(p.imagePath(name), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", err
	}
	// Truncate makes a sparse file: nothing is written until the pod writes.
	err = f.Truncate((size + loopBlockSize - 1) / loopBlockSize * loopBlockSize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return p.attach(name)
}

// attach gives NAME.img a loop device (the one it has, if any) and makes NAME.dev its node.
func (p *provisioner) attach(name string) (string, error) {
	img := p.imagePath(name)
	devs, err := loopsOf(img)
	if err != nil {
		return "", err
	}
	var dev string
	if len(devs) > 0 {
		dev = devs[0]
	} else if dev, err = losetup("--find", "--show", img); err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return "", err
	}
	// A new node beside, then renamed over the old one: NAME.dev never names nothing.
	path, tmp := p.devicePath(name), p.devicePath(name)+".new"
	os.Remove(tmp)
	if err := unix.Mknod(tmp, unix.S_IFBLK|0o660, int(st.Rdev)); err != nil {
		return "", fmt.Errorf("mknod %s for %s: %w", tmp, dev, err)
	}
	return path, os.Rename(tmp, path)
}

func (p *provisioner) deleteBlock(name string) error {
	img := p.imagePath(name)
	devs, err := loopsOf(img)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, dev := range devs {
		if _, err := losetup("--detach", dev); err != nil {
			return err
		}
	}
	if err := os.Remove(p.devicePath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Remove(img); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// loopsOf lists the loop devices backed by file. losetup matches by device and inode, so the
// answer holds whatever path the file had when it was attached.
func loopsOf(file string) ([]string, error) {
	if _, err := os.Stat(file); err != nil {
		return nil, err
	}
	out, err := losetup("--noheadings", "--output", "NAME", "--associated", file)
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

func losetup(args ...string) (string, error) {
	out, err := exec.Command("losetup", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("losetup %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}
