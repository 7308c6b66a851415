package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/imageimport/image-import-operator/internal/importer"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/progress"
)

// taskStatus pushes the import's progress into its task's status, and at
// the end its result. Progress is patched in the background, the latest
// only and at most every pushInterval, so that neither a slow API server
// slows the import nor a fast import floods the API server with a write
// per phase.
type taskStatus struct {
	status *progress.TaskStatus
	also   importer.Reporter
	latest chan importer.Progress
	stop   chan struct{} // closed by finish: no more progress pushes
	sent   chan struct{} // closed when the background pushes have ended

	mu    sync.Mutex // Report may be called from several goroutines
	last  importer.Progress
	begun bool // push runs
}

// pushInterval is the least time between two progress pushes: the
// importer's own report interval.
const pushInterval = importer.ReportInterval

// toTaskStatus adds the status of the task NAMESPACE/NAME to where progress
// goes; nil when the pod has no service account to push with.
func toTaskStatus(task string, also importer.Reporter) *taskStatus {
	ns, name, _ := strings.Cut(task, "/")
	status, err := progress.InCluster(ns, name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "progress stays on stderr:", err)
		return nil
	}
	return pushTo(status, also)
}

// pushTo returns a taskStatus that pushes to status once begun.
func pushTo(status *progress.TaskStatus, also importer.Reporter) *taskStatus {
	return &taskStatus{status: status, also: also, latest: make(chan importer.Progress, 1),
		stop: make(chan struct{}), sent: make(chan struct{})}
}

// push sends the latest progress, at most every pushInterval, from begin
// (which has just pushed) until finish.
func (t *taskStatus) push() {
	defer close(t.sent)
	for {
		select {
		case <-t.stop:
			return
		case <-time.After(pushInterval):
		}
		select {
		case <-t.stop:
			return
		case p := <-t.latest:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := t.status.Report(ctx, progressOf(p))
			cancel()
			if err != nil && !errors.Is(err, progress.ErrImportEnded) {
				fmt.Fprintln(os.Stderr, "reporting progress:", err)
			}
		}
	}
}

// begin pushes the import's start and waits for the answer. A task whose
// import has ended refuses it (an earlier attempt of the Job stored the
// image and pushed its result, then was evicted before it exited; or the
// task is final): this attempt must not import again. Any other failure
// leaves the import to run, as progress is not worth failing it for.
func (t *taskStatus) begin() (ended bool) {
	if t == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := t.status.Report(ctx, progressOf(importer.Progress{Phase: importer.PhaseFetching}))
	if errors.Is(err, progress.ErrImportEnded) {
		return true
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reporting progress:", err)
	}
	t.mu.Lock()
	t.begun = true
	t.mu.Unlock()
	go t.push()
	return false
}

func (t *taskStatus) Report(p importer.Progress) {
	t.also.Report(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.last = p
	select {
	case <-t.latest: // drop what was not sent yet: only the newest matters
	default:
	}
	t.latest <- p
}

// finish pushes the result of a stored image, after the last progress
// (which must not land after it and undo the reconciler's final word).
// Should the push fail, the termination message tells the same, later.
func (t *taskStatus) finish(res importresult.Result) {
	if t == nil {
		return
	}
	t.mu.Lock()
	close(t.stop) // push ends: a later Report goes nowhere
	last, begun := t.last, t.begun
	t.mu.Unlock()
	if begun {
		<-t.sent // a push under way lands before the result
	}
	b, err := importresult.Marshal(res)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = t.status.ReportResult(ctx, b, progressOf(last))
		cancel()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reporting the result:", err)
	}
}

func progressOf(p importer.Progress) progress.Progress {
	return progress.Progress{Phase: p.Phase, BytesDone: p.BytesDone, BytesTotal: p.BytesTotal}
}
