package importer

import (
	"sync"
	"testing"
)

type recordedReports struct {
	mu  sync.Mutex
	all []Progress
}

func (r *recordedReports) Report(p Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, p)
}

// TestDoneReportsEveryByte: the last report of a finished import says all
// of its bytes are done, so that the task's status reads 100%.
func TestDoneReportsEveryByte(t *testing.T) {
	rec := &recordedReports{}
	track := startTracker(rec)
	track.setPhase(PhaseStoring, 1000)
	track.done.Store(590)
	track.setPhase(PhaseDone, 1000)
	track.close()

	rec.mu.Lock()
	defer rec.mu.Unlock()
	last := rec.all[len(rec.all)-1]
	if want := (Progress{Phase: PhaseDone, BytesDone: 1000, BytesTotal: 1000}); last != want {
		t.Fatalf("last report = %+v, want %+v", last, want)
	}
}
