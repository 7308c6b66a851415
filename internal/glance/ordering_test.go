package glance

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// Differences from Glance that no one intended, found by a differential
// battery against Debian's glance-api 25.1.0; the recorded transcripts
// 22b-22x and 59b-59f pin the exact answers.

func TestCreateValidatesEveryKeyAgainstTheTaskSchema(t *testing.T) {
	s := newShim(t, PolicyAdmin)
	input := `"input":{"import_from":"http://127.0.0.1:19293/small.qcow2","import_from_format":"qcow2","image_properties":{"disk_format":"qcow2","container_format":"bare"}}`
	for extra, want := range map[string]string{
		`"foo":1`:                    "Additional properties are not allowed ('foo' was unexpected)",
		`"foo":1,"bar":2`:            "Additional properties are not allowed ('bar', 'foo' were unexpected)",
		`"status":"bogus"`:           "'bogus' is not one of ['pending', 'processing', 'success', 'failure']",
		`"id":"x"`:                   "'x' does not match '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$'",
		`"owner":1`:                  "1 is not of type 'string'",
		`"message":null`:             "None is not of type 'string'",
		`"result":"done"`:            "'done' is not of type 'null', 'object'",
		`"created_at":1`:             "1 is not of type 'string'",
		`"expires_at":true`:          "True is not of type 'null', 'string'",
		`"status":"bogus","owner":1`: "1 is not of type 'string'", // a wrong type beats a wrong value
		`"status":"bogus","foo":1`:   "Additional properties are not allowed ('foo' was unexpected)",
		`"id":"00000000-0000-0000-0000-000000000000","status":"success","owner":"x","result":null,"expires_at":null`: "",
	} {
		r := s.do(t, "POST", "/v2/tasks", "admin:admin:admin", `{"type":"import",`+extra+`,`+input+`}`, "Accept", "application/json")
		switch {
		case want == "" && r.status != 201:
			t.Errorf("%s: %d %s, want 201 (read-only keys of the right type are ignored)", extra, r.status, r.body)
		case want != "" && (r.status != 400 || !strings.HasPrefix(fmt.Sprint(r.json["message"]), "Provided object does not match schema 'task': "+want+"\n\nFailed validating ")):
			t.Errorf("%s: %d %s\nwant 400 %q", extra, r.status, r.body, want)
		}
	}
}

func TestHeadErrorsAreEmptyHTMLWhateverTheAccept(t *testing.T) {
	s := newShim(t, PolicyAdmin)
	for _, accept := range []string{"application/json", "text/plain", "*/*", ""} {
		for path, code := range map[string]int{"/v2/tasks": 405, "/v2/tasks/x": 405, "/v2/schemas/task": 405, "/v2/nothing": 404} {
			r := s.do(t, "HEAD", path, "admin:admin:admin", "", "Accept", accept)
			if r.status != code || r.header.Get("Content-Type") != "text/html; charset=UTF-8" || r.header.Get("Content-Length") != "0" {
				t.Errorf("HEAD %s, Accept %q: %d, Content-Type %q, Content-Length %q", path, accept, r.status, r.header.Get("Content-Type"), r.header.Get("Content-Length"))
			}
		}
	}
}

// TestTasksCreatedWithinASecondListByTheirPreciseCreationTime: the rows
// carry the same creationTimestamp (seconds) and ids in the opposite order
// of their creation; Glance orders them by created_at to the microsecond.
func TestTasksCreatedWithinASecondListByTheirPreciseCreationTime(t *testing.T) {
	g := NewWithT(t)
	second := metav1.NewTime(time.Date(2026, 11, 30, 7, 0, 0, 0, time.UTC))
	var all []*tasksv1.ImageImportTask
	for i, uid := range []string{"ffffffff-0000-4000-8000-000000000000", "77777777-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000000"} {
		all = append(all, &tasksv1.ImageImportTask{ObjectMeta: metav1.ObjectMeta{
			UID: types.UID(uid), CreationTimestamp: second,
			Annotations: map[string]string{
				"tasks.imageimport.io/owner":      "p",
				"tasks.imageimport.io/created-at": second.Add(time.Duration(i+1) * 100 * time.Millisecond).UTC().Format("2006-01-02T15:04:05.000000000Z"),
			},
		}})
	}
	// A task created with kubectl has no such annotation: it sorts by its
	// creationTimestamp, before the others of its second.
	all = append(all, &tasksv1.ImageImportTask{ObjectMeta: metav1.ObjectMeta{
		UID: "88888888-0000-4000-8000-000000000000", CreationTimestamp: second,
		Annotations: map[string]string{"tasks.imageimport.io/owner": "p"},
	}})
	order := func(q *listQuery) []string {
		var rows []row
		for _, t := range all {
			rows = append(rows, newRow(t, "p", q.sortKey))
		}
		var ids []string
		for _, v := range firstAfter(rows, nil, q) {
			ids = append(ids, v.id[:8])
		}
		return ids
	}
	newest := []string{"00000000", "77777777", "ffffffff", "88888888"}
	g.Expect(order(&listQuery{sortKey: "created_at", desc: true, limit: 25})).To(Equal(newest))
	oldest := slices.Clone(newest)
	slices.Reverse(oldest)
	g.Expect(order(&listQuery{sortKey: "created_at", desc: false, limit: 25})).To(Equal(oldest))
	g.Expect(order(&listQuery{sortKey: "status", desc: true, limit: 25})).To(Equal(newest), "created_at breaks ties of other keys")
}

// TestTasksPostedInABurstListNewestFirst posts tasks faster than one a
// second and expects GET /v2/tasks to list them in the reverse order of
// their creation, as Glance does.
func TestTasksPostedInABurstListNewestFirst(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	project := "burst-" + fmt.Sprint(time.Now().UnixNano())
	var created []string
	for range 6 {
		r := s.do(t, "POST", "/v2/tasks", "u:"+project+":admin", validBody)
		g.Expect(r.status).To(Equal(http.StatusCreated), r.body)
		created = append(created, r.json["id"].(string))
	}
	slices.Reverse(created)
	g.Eventually(func() []string {
		r := s.do(t, "GET", "/v2/tasks?owner="+project, "u:"+project+":admin", "")
		var ids []string
		for _, item := range r.json["tasks"].([]any) {
			ids = append(ids, item.(map[string]any)["id"].(string))
		}
		return ids
	}, 10*time.Second).Should(Equal(created))
}
