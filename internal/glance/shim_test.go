package glance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

const validBody = `{"type":"import","input":{"import_from":"http://127.0.0.1:19293/small.qcow2","import_from_format":"qcow2","image_properties":{"disk_format":"raw","container_format":"bare","name":"cirros","min_disk":1,"tags":["a"],"os_distro":"cirros","hw_qemu_guest_agent":true}}}`

type reply struct {
	status int
	header http.Header
	body   string
	json   map[string]any
}

func (s *shim) do(t *testing.T, method, path, token, body string, headers ...string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, s.URL+path, rd)
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, header: resp.Header, body: string(b)}
	json.Unmarshal(b, &r.json)
	return r
}

// createTask posts a valid task as a project's admin and returns its id.
func (s *shim) createTask(t *testing.T, project string) string {
	t.Helper()
	r := s.do(t, "POST", "/v2/tasks", "u:"+project+":admin", validBody)
	if r.status != 201 {
		t.Fatalf("POST /v2/tasks: %d %s", r.status, r.body)
	}
	id := r.json["id"].(string)
	// Reads come from the cache: wait until it has the task.
	NewWithT(t).Eventually(func() int { return s.do(t, "GET", "/v2/tasks/"+id, "u:"+project+":admin", "").status }).Should(Equal(200))
	return id
}

func taskByID(t *testing.T, id string) *tasksv1.ImageImportTask {
	t.Helper()
	var list tasksv1.ImageImportTaskList
	if err := k8sClient.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if string(list.Items[i].UID) == id {
			return &list.Items[i]
		}
	}
	t.Fatalf("no ImageImportTask with UID %s", id)
	return nil
}

func TestCreateMapsTheGlanceTaskOntoAnImageImportTask(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	r := s.do(t, "POST", "/v2/tasks", "alice:proj1:admin", validBody, "X-Openstack-Request-Id", "req-11111111-2222-3333-4444-555555555555")
	g.Expect(r.status).To(Equal(201), r.body)
	id := r.json["id"].(string)
	g.Expect(r.header.Get("Location")).To(Equal(s.URL + "/v2/tasks/" + id))
	g.Expect(r.json).To(HaveKeyWithValue("status", "pending"))
	g.Expect(r.json).To(HaveKeyWithValue("owner", "proj1"))
	g.Expect(r.json).To(HaveKeyWithValue("user_id", "alice"))
	g.Expect(r.json).To(HaveKeyWithValue("request_id", "req-11111111-2222-3333-4444-555555555555"))
	g.Expect(r.body).To(ContainSubstring(`"input": {"import_from": "http://127.0.0.1:19293/small.qcow2", "import_from_format": "qcow2", "image_properties": {"disk_format": "raw", "container_format": "bare", "name": "cirros", "min_disk": 1, "tags": ["a"], "os_distro": "cirros", "hw_qemu_guest_agent": true}}`),
		"the input comes back as posted, key order kept")

	task := taskByID(t, id)
	g.Expect(task.Namespace).To(Equal(s.namespace))
	g.Expect(task.Spec.Input.ImportFrom).To(Equal("http://127.0.0.1:19293/small.qcow2"))
	g.Expect(task.Spec.Input.ImportFromFormat).To(Equal(tasksv1.DiskFormat("qcow2")))
	p := task.Spec.Input.ImageProperties
	g.Expect(p.DiskFormat).To(Equal(tasksv1.DiskFormat("raw")))
	g.Expect(p.Name).To(Equal("cirros"))
	g.Expect(*p.MinDisk).To(Equal(int32(1)))
	g.Expect(p.Tags).To(Equal([]string{"a"}))
	g.Expect(p.Properties).To(Equal(map[string]string{"os_distro": "cirros", "hw_qemu_guest_agent": "true"}))
	g.Expect(task.Spec.ExpiryPolicy).To(Equal(tasksv1.ExpiryPolicyDelete), "shim tasks expire, as in Glance")
	g.Expect(task.Annotations).NotTo(HaveKey(tasksv1.AnnotationExpiryPolicy), "the policy is in the spec")
	g.Expect(task.Labels).To(HaveKeyWithValue(LabelProjectID, "proj1"))
	g.Expect(task.Annotations).NotTo(HaveKey(tasksv1.AnnotationInputProblem))
	g.Expect(task.Spec.RecordedFailure).To(BeNil())
}

func TestInputsGlanceAcceptsAndThenFails(t *testing.T) {
	s := newShim(t, PolicyAdmin)
	for body, problem := range map[string]string{
		`{"type":"import","input":{"import_from":"http://127.0.0.1/x","image_properties":{"disk_format":"raw","container_format":"bare"}}}`:                                "Input does not contain 'import_from_format' field",
		`{"type":"import","input":{"import_from":"http://127.0.0.1/x","import_from_format":"qcow2"}}`:                                                                      "Input does not contain 'image_properties' field",
		`{"type":"import","input":{"import_from":"http://127.0.0.1/x","import_from_format":"qcow2","image_properties":{}}}`:                                                "Properties disk_format, container_format must be set prior to saving data.",
		`{"type":"import","input":{"import_from":"http://127.0.0.1/x","import_from_format":"qcow2","image_properties":{"disk_format":"bogus","container_format":"bare"}}}`: "Invalid disk_format 'bogus': use one of ami, ari, aki, vhd, vhdx, vmdk, raw, qcow2, vdi, iso, ploop.",
		`{"type":"import","input":{"import_from":"http://127.0.0.1/x","import_from_format":"exe","image_properties":{"disk_format":"raw","container_format":"bare"}}}`:     "Invalid import_from_format 'exe': use one of ami, ari, aki, vhd, vhdx, vmdk, raw, qcow2, vdi, iso, ploop.",
		`{"type":"api_image_import","input":{}}`: "Input to api_image_import task is empty.",
	} {
		r := s.do(t, "POST", "/v2/tasks", "u:p:admin", body)
		if r.status != 201 {
			t.Errorf("%s: %d %s", body, r.status, r.body)
			continue
		}
		task := taskByID(t, r.json["id"].(string))
		if f := task.Spec.RecordedFailure; f == nil || f.Reason != "InvalidInput" || f.Message != problem {
			t.Errorf("%s: recorded failure %+v, want InvalidInput %q", body, f, problem)
		}
		if _, ok := task.Annotations[tasksv1.AnnotationInputProblem]; ok {
			t.Errorf("%s: the input problem is still an annotation", body)
		}
	}
}

func TestShowFollowsTheTaskStatus(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	id := s.createTask(t, "p")
	task := taskByID(t, id)
	base := task.DeepCopy()
	done := metav1.NewTime(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	expires := metav1.NewTime(done.Add(48 * time.Hour))
	task.Status = tasksv1.ImageImportTaskStatus{
		Status: tasksv1.TaskSuccess, Result: &tasksv1.TaskResult{ImageID: "65a1af5e-39a2-4581-b648-450e47e47741"},
		UpdatedAt: &done, ExpiresAt: &expires, CompletionTime: &done,
	}
	g.Expect(k8sClient.Status().Patch(context.Background(), task, client.MergeFrom(base))).To(Succeed())

	g.Eventually(func() string { return s.do(t, "GET", "/v2/tasks/"+id, "u:p:admin", "").body }).Should(
		ContainSubstring(`"status": "success", "owner": "p", "message": "", "result": {"image_id": "65a1af5e-39a2-4581-b648-450e47e47741"}`))
	r := s.do(t, "GET", "/v2/tasks/"+id, "u:p:admin", "")
	g.Expect(r.body).To(HaveSuffix(`"updated_at": "2026-11-28T10:00:00Z", "self": "/v2/tasks/` + id + `", "schema": "/v2/schemas/task", "request_id": "` + r.json["request_id"].(string) + `", "user_id": "u", "expires_at": "2026-11-30T10:00:00Z"}`))
	g.Expect(s.do(t, "GET", "/v2/tasks/"+strings.ToUpper(id), "u:p:admin", "").status).To(Equal(200), "ids match case-insensitively")
}

func TestListPaginationSortingAndFilters(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	project := "pager-" + fmt.Sprint(time.Now().UnixNano())
	var ids []string
	for range 5 {
		ids = append(ids, s.createTask(t, project))
	}
	// Filter on our project: the cluster holds other tests' tasks too.
	list := func(query string) reply {
		return s.do(t, "GET", "/v2/tasks?owner="+project+query, "u:"+project+":admin", "")
	}

	var seen []string
	next := "/v2/tasks?owner=" + project + "&limit=2&sort_key=id&sort_dir=asc"
	for pages := 0; next != ""; pages++ {
		g.Expect(pages).To(BeNumerically("<", 5))
		r := s.do(t, "GET", next, "u:"+project+":admin", "")
		g.Expect(r.status).To(Equal(200), r.body)
		g.Expect(r.json["first"]).To(Equal("/v2/tasks?owner=" + project + "&limit=2&sort_key=id&sort_dir=asc"))
		for _, item := range r.json["tasks"].([]any) {
			seen = append(seen, item.(map[string]any)["id"].(string))
		}
		next, _ = r.json["next"].(string)
	}
	sorted := append([]string(nil), ids...)
	slices.Sort(sorted)
	g.Expect(seen).To(Equal(sorted), "every task once, in id order, across pages")

	r := list("&limit=0")
	g.Expect(r.json["tasks"]).To(BeEmpty())
	g.Expect(r.json).NotTo(HaveKey("next"))
	r = list("&status=pending&type=import")
	g.Expect(r.json["tasks"]).To(HaveLen(5))
	r = list("&status=success")
	g.Expect(r.json["tasks"]).To(BeEmpty())
	r = list("&sort_key=status&sort_dir=desc")
	g.Expect(r.status).To(Equal(200))
	r = list("&marker=" + sorted[4] + "&sort_key=id&sort_dir=asc")
	g.Expect(r.json["tasks"]).To(BeEmpty(), "nothing after the last task")
	g.Expect(list("&marker=00000000-0000-0000-0000-000000000000").body).To(ContainSubstring("Task with the given id 00000000-0000-0000-0000-000000000000 was not found"))
}

func TestPolicyAndProjectIsolation(t *testing.T) {
	g := NewWithT(t)
	admin := newShim(t, PolicyAdmin)
	// Glance's default: members get 403 on the four task endpoints, and
	// schemas are open to any authenticated caller.
	for _, req := range [][2]string{{"GET", "/v2/tasks"}, {"POST", "/v2/tasks"}, {"GET", "/v2/tasks/x"}, {"DELETE", "/v2/tasks/x"}} {
		r := admin.do(t, req[0], req[1], "demo:demo:member", validBody, "Accept", "application/json")
		g.Expect(r.status).To(Equal(403), "%v", req)
		g.Expect(r.json["message"]).To(HavePrefix("You are not authorized to complete tasks_api_access action."))
	}
	g.Expect(admin.do(t, "GET", "/v2/schemas/task", "demo:demo:member", "").status).To(Equal(200))
	r := admin.do(t, "GET", "/v2/tasks", "", "")
	g.Expect(r.status).To(Equal(401))
	g.Expect(r.header.Get("WWW-Authenticate")).To(Equal(`Keystone uri="http://127.0.0.1:5000/v3"`))

	// With tasks_api_access opened to members, each project sees its own.
	open := newShim(t, PolicyMember)
	a, b := "iso-a-"+fmt.Sprint(time.Now().UnixNano()), "iso-b-"+fmt.Sprint(time.Now().UnixNano())
	idA := open.createTask(t, a)
	idB := open.createTask(t, b)
	g.Expect(open.do(t, "GET", "/v2/tasks/"+idB, "u:"+a+":member", "").status).To(Equal(404), "another project's task is not found")
	r = open.do(t, "GET", "/v2/tasks", "u:"+a+":member", "")
	g.Expect(r.body).To(ContainSubstring(idA))
	g.Expect(r.body).NotTo(ContainSubstring(idB))
	r = open.do(t, "GET", "/v2/tasks?marker="+idB, "u:"+a+":member", "")
	g.Expect(r.status).To(Equal(403))
	g.Expect(r.body).To(ContainSubstring("Forbidding request, task " + idB + " is not visible"))
	r = open.do(t, "GET", "/v2/tasks?owner="+b, "u:"+a+":admin", "")
	g.Expect(r.body).To(ContainSubstring(idB), "an admin sees every project")
}

func TestMethodMatrix(t *testing.T) {
	s := newShim(t, PolicyAdmin)
	cases := map[string][]string{
		"/v2/tasks":         {"PUT", "PATCH", "DELETE", "HEAD", "BOGUS"},
		"/v2/tasks/abc":     {"POST", "PUT", "PATCH", "HEAD"},
		"/v2/schemas/task":  {"POST", "PUT", "DELETE", "PATCH", "HEAD"},
		"/v2/schemas/tasks": {"POST", "PUT", "DELETE", "PATCH", "HEAD"},
	}
	allow := map[string]string{"/v2/tasks": "GET, POST", "/v2/tasks/abc": "GET, DELETE", "/v2/schemas/task": "GET", "/v2/schemas/tasks": "GET"}
	for path, methods := range cases {
		for _, m := range methods {
			r := s.do(t, m, path, "admin:admin:admin", "")
			if r.status != 405 || r.header.Get("Allow") != allow[path] {
				t.Errorf("%s %s: %d Allow %q", m, path, r.status, r.header.Get("Allow"))
			}
		}
	}
	for _, path := range []string{"/v2.1/tasks", "/v2.16/schemas/task"} {
		if r := s.do(t, "GET", path, "admin:admin:admin", ""); r.status != 200 {
			t.Errorf("GET %s: %d (version negotiation)", path, r.status)
		}
	}
}
