package main

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/imageimport/image-import-operator/internal/importer"
	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/progress"
)

// A fast import pushes its first progress and then its result: not a
// status write per phase. The result is the last write.
func TestTaskStatusPushesProgressSparinglyAndTheResultLast(t *testing.T) {
	var (
		mu      sync.Mutex
		patches []map[string]any
	)
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ Status map[string]any }
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPatch || json.Unmarshal(b, &body) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		patches = append(patches, body.Status)
		mu.Unlock()
	}))
	defer api.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	status, err := progress.New(api.URL, ca, "token", "ns", "task")
	if err != nil {
		t.Fatal(err)
	}

	task := pushTo(status, &importer.JSONLines{W: io.Discard})
	if task.begin() {
		t.Fatal("begin says the import has ended")
	}
	for _, phase := range []string{importer.PhaseFetching, importer.PhaseInspecting, importer.PhaseConverting, importer.PhaseStoring, importer.PhaseDone} {
		task.Report(importer.Progress{Phase: phase, BytesDone: 10, BytesTotal: 10})
		time.Sleep(20 * time.Millisecond) // phases of a small import are tens of ms apart
	}
	task.finish(importresult.Result{ImageID: "img", Size: 10})
	task.Report(importer.Progress{Phase: importer.PhaseDone}) // too late: ignored

	mu.Lock()
	defer mu.Unlock()
	if len(patches) != 2 {
		t.Fatalf("%d status writes for a fast import, want its start and its result: %v", len(patches), patches)
	}
	last := patches[len(patches)-1]
	res, err := importresult.Parse(last["importerResult"].(string))
	if err != nil || res.ImageID != "img" {
		t.Fatalf("last write %v is not the result: %v", last, err)
	}
	if phase := last["progress"].(map[string]any)["phase"]; phase != importer.PhaseDone {
		t.Errorf("the result carries progress phase %v, want the last reported, %s", phase, importer.PhaseDone)
	}
}

// An attempt of the Job that starts after another stored the image is
// refused its first push, and must not import.
func TestTaskStatusBeginTellsTheImportHasEnded(t *testing.T) {
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
			"message": `imageimporttasks.tasks.imageimport.io "t" is forbidden: ValidatingAdmissionPolicy 'importer-status.tasks.imageimport.io' with binding 'importer-status.tasks.imageimport.io' denied request: ` + progress.EndedMessage + ": its status is final"})
	}))
	defer api.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	status, err := progress.New(api.URL, ca, "token", "ns", "task")
	if err != nil {
		t.Fatal(err)
	}
	if !pushTo(status, &importer.JSONLines{W: io.Discard}).begin() {
		t.Error("begin did not see that the import has ended")
	}
}
