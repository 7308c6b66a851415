package importer

import (
	"bytes"
	"crypto/sha256"
	"hash"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// witness records the thread a sink is written on, that thread's nice
// value and GOMAXPROCS at the time.
type witness struct{ tid, nice, procs int }

func (w *witness) see() error {
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0) // the kernel's 20 - nice
	w.tid, w.nice, w.procs = unix.Gettid(), 20-prio, runtime.GOMAXPROCS(0)
	return err
}

// hashWitness is a hash, to the fanout; fileWitness a plain sink, as the
// staging file is.
type (
	hashWitness struct {
		hash.Hash
		witness
	}
	fileWitness struct{ witness }
)

func (w *hashWitness) Write(p []byte) (int, error) {
	if err := w.see(); err != nil {
		return 0, err
	}
	return w.Hash.Write(p)
}

func (w *fileWitness) Write(p []byte) (int, error) { return len(p), w.see() }

// TestYieldingHashesRunAtTheLowestPriority: the hashes of a yielding fanout
// (the one qemu-img writes into) run at nice 19 on threads of their own,
// each with a processor added while it runs, and no thread stays at that
// priority after the fanout (it goes back, or ends); the file's sink,
// and every sink of a plain fanout, keep the process's priority.
func TestYieldingHashesRunAtTheLowestPriority(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	ours := processNice(t)
	data := bytes.Repeat([]byte("disk"), 3*chunkSize/4+1)
	for _, tc := range []struct {
		name   string
		start  func(func(int), ...io.Writer) *fanout
		nice   int
		procs  int
		leaves bool
	}{
		{"yielding", newYieldingFanout, 19, base + 2, true},
		{"plain", newFanout, ours, base, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, file := &hashWitness{Hash: sha256.New()}, &hashWitness{Hash: sha256.New()}, &fileWitness{}
			f := tc.start(nil, a, file, b)
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			want := sha256.Sum256(data)
			for _, w := range []*hashWitness{a, b} {
				if !bytes.Equal(w.Sum(nil), want[:]) {
					t.Errorf("a hash got other bytes than were written")
				}
				if w.nice != tc.nice || w.procs != tc.procs {
					t.Errorf("a hash ran at nice %d with GOMAXPROCS %d, want %d and %d", w.nice, w.procs, tc.nice, tc.procs)
				}
			}
			if file.nice != ours {
				t.Errorf("the file's sink ran at nice %d, want the process's %d", file.nice, ours)
			}
			if got := runtime.GOMAXPROCS(0); got != base {
				t.Errorf("GOMAXPROCS is %d after Close, was %d", got, base)
			}
			if !tc.leaves {
				return
			}
			for _, w := range []*hashWitness{a, b} {
				if !leftLowPriority(w.tid) {
					t.Errorf("the hash's thread %d is still at nice 19 after its fanout", w.tid)
				}
			}
		})
	}
}

// TestNoThreadKeepsTheHashesPriority: however the runtime places the
// yielding hashes, no thread of the process is left at their priority once
// their fanouts closed. The main thread is the one to watch: the runtime
// never ends it, and a hash goroutine may run on it.
func TestNoThreadKeepsTheHashesPriority(t *testing.T) {
	if processNice(t) == 19 {
		t.Skip("the process itself runs at nice 19")
	}
	data := bytes.Repeat([]byte{1}, chunkSize)
	for range 40 {
		f := newYieldingFanout(nil, sha256.New(), sha256.New(), sha256.New())
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var left []string
	for range 300 {
		if left = threadsAtNice(t, 19); len(left) == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("threads %v of process %d are still at nice 19", left, os.Getpid())
}

// processNice is the nice value of the thread that calls it: the
// process's, for a thread the tests did not change.
func processNice(t *testing.T) int {
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	return 20 - prio
}

// threadsAtNice lists the threads of this process at the given nice value.
func threadsAtNice(t *testing.T, nice int) []string {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var at []string
	for _, task := range tasks {
		if n, ok := threadNice(task.Name()); ok && n == nice {
			at = append(at, task.Name())
		}
	}
	return at
}

// leftLowPriority reports whether the thread tid of this process, within a
// few seconds, ended (the runtime ends a thread locked to a goroutine that
// exits) or is back from nice 19.
func leftLowPriority(tid int) bool {
	for range 300 {
		if n, ok := threadNice(strconv.Itoa(tid)); !ok || n != 19 {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// threadNice is the nice value of the thread tid of this process; false
// when it has ended.
func threadNice(tid string) (int, bool) {
	stat, err := os.ReadFile("/proc/self/task/" + tid + "/stat")
	if err != nil {
		return 0, false
	}
	// After the command's ")": the state is field 3, the nice field 19.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 17 {
		return 0, false
	}
	n, err := strconv.Atoi(fields[16])
	return n, err == nil
}
