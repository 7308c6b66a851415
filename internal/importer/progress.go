package importer

import (
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Phases of an import.
const (
	PhaseFetching   = "Fetching"
	PhaseInspecting = "Inspecting"
	PhaseConverting = "Converting"
	PhaseStoring    = "Storing"
	PhaseDone       = "Done"
)

// Progress is a snapshot of an import.
type Progress struct {
	Phase      string `json:"phase"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total,omitempty"` // 0 when the source does not tell
}

// Reporter receives progress, at least every ReportInterval while an
// import runs and at every phase change.
type Reporter interface {
	Report(Progress)
}

// ReportInterval is how often progress is reported.
const ReportInterval = 2 * time.Second

// JSONLines reports progress as one JSON object per line, on stderr in the
// importer pod.
type JSONLines struct {
	mu sync.Mutex
	W  io.Writer
}

func (j *JSONLines) Report(p Progress) {
	j.mu.Lock()
	defer j.mu.Unlock()
	b, _ := json.Marshal(struct {
		Progress Progress `json:"progress"`
	}{p})
	j.W.Write(append(b, '\n'))
}

// tracker holds the current progress and reports it on a ticker.
type tracker struct {
	reporter Reporter
	phase    atomic.Value // string
	done     atomic.Int64
	total    atomic.Int64
	stop     chan struct{}
	stopped  sync.WaitGroup
}

func startTracker(r Reporter) *tracker {
	t := &tracker{reporter: r, stop: make(chan struct{})}
	t.phase.Store(PhaseFetching)
	if r == nil {
		return t
	}
	t.stopped.Add(1)
	go func() {
		defer t.stopped.Done()
		tick := time.NewTicker(ReportInterval)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
				r.Report(t.snapshot())
			}
		}
	}()
	return t
}

func (t *tracker) snapshot() Progress {
	return Progress{Phase: t.phase.Load().(string), BytesDone: t.done.Load(), BytesTotal: t.total.Load()}
}

// setPhase starts a phase and reports it at once. Done is the end of the
// import: all of its bytes are done, so that the last report reads 100%.
func (t *tracker) setPhase(phase string, total int64) {
	t.phase.Store(phase)
	done := int64(0)
	if phase == PhaseDone {
		done = total
	}
	t.done.Store(done)
	t.total.Store(total)
	if t.reporter != nil {
		t.reporter.Report(t.snapshot())
	}
}

func (t *tracker) close() {
	close(t.stop)
	t.stopped.Wait()
}
