package glance

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// What a hostile caller can make the shim spend on one request. None of
// these tests times anything: they count bytes read and allocated.

// countingReader serves n bytes of b, repeated, and counts what was read.
type countingReader struct {
	b    byte
	n    int64
	read int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.read >= c.n {
		return 0, io.EOF
	}
	k := min(int64(len(p)), c.n-c.read)
	for i := range k {
		p[i] = c.b
	}
	c.read += k
	return int(k), nil
}

func postBody(body io.Reader, length int64) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/v2/tasks", body)
	r.ContentLength = length
	return r
}

// TestADeepBodyIsRefusedBeforeItIsRead: a 1 MiB body of '[' made the
// parser recurse a million times (256 MiB of stack, 40 MiB allocated).
// The parser now stops at the first level past 1,000, having read a few
// KiB of the body and allocated little.
func TestADeepBodyIsRefusedBeforeItIsRead(t *testing.T) {
	g := NewWithT(t)
	body := &countingReader{b: '[', n: maxBody}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, e := readBody(postBody(body, maxBody))
	runtime.ReadMemStats(&after)

	g.Expect(body.read).To(BeNumerically("<=", 64<<10), "bytes of the body read before refusing it")
	g.Expect(after.TotalAlloc-before.TotalAlloc).To(BeNumerically("<", 1<<20), "bytes allocated to refuse it")
	g.Expect(after.StackSys-before.StackSys).To(BeNumerically("<", 16<<20), "stack grown to refuse it")
	g.Expect(e).NotTo(BeNil())
	g.Expect(e.code).To(Equal(http.StatusBadRequest))
	g.Expect(e.explanation).To(Equal("The JSON in the request body nests deeper than 1000 levels."))
}

// TestNestingUpToTheLimitIsAccepted: Glance itself parses up to 894
// levels; the shim parses 1,000.
func TestNestingUpToTheLimitIsAccepted(t *testing.T) {
	g := NewWithT(t)
	nested := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	obj, e := readBody(postBody(strings.NewReader(nested(1000)), int64(2*1000)))
	g.Expect(e).To(BeNil())
	g.Expect(obj).To(BeEmpty(), "a list: 'type' is missing, Glance says so next")
	_, e = readBody(postBody(strings.NewReader(nested(1001)), int64(2*1001)))
	g.Expect(e).NotTo(BeNil())
	g.Expect(e.explanation).To(ContainSubstring("deeper than 1000 levels"))
	inObject := `{"type":"import","input":{"x":` + nested(998) + `}}`
	_, e = readBody(postBody(strings.NewReader(inObject), int64(len(inObject))))
	g.Expect(e).To(BeNil(), "1,000 levels counting the objects")
}

// manyKeys is a JSON object with n distinct keys, then its first key again.
func manyKeys(n int) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := range n {
		fmt.Fprintf(&b, `"%x":%d,`, i, i)
	}
	b.WriteString(`"0":"last"}`)
	return b.Bytes()
}

// TestARepeatedKeyKeepsItsFirstPlaceAndLastValue, as in a Python dict,
// in an object large enough to be indexed.
func TestARepeatedKeyKeepsItsFirstPlaceAndLastValue(t *testing.T) {
	g := NewWithT(t)
	for _, n := range []int{3, 15, 16, 17, 1000} {
		v, err := parseOrdered(manyKeys(n))
		g.Expect(err).NotTo(HaveOccurred())
		obj := v.(object)
		g.Expect(obj).To(HaveLen(n))
		g.Expect(obj[0]).To(Equal(member{"0", "last"}))
		g.Expect(obj[n-1].key).To(Equal(fmt.Sprintf("%x", n-1)))
	}
}

// TestObjectsAreBuiltThroughAnIndex: the old parser looked for a repeated
// key by scanning the object built so far, which made 100,000 keys cost
// 22 s of CPU (n²/2 comparisons). BenchmarkParseKeys measures it.
func TestObjectsAreBuiltThroughAnIndex(t *testing.T) {
	var b objectBuilder
	for i := range 1000 {
		b.set(fmt.Sprint(i), i)
	}
	if len(b.index) != 1000 {
		t.Fatalf("the index holds %d of 1000 keys", len(b.index))
	}
}

func BenchmarkParseKeys(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		body := manyKeys(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := parseOrdered(body); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/key")
		})
	}
}

func BenchmarkRefuseDeepBody(b *testing.B) {
	for b.Loop() {
		readBody(postBody(&countingReader{b: '[', n: maxBody}, maxBody))
	}
}

// TestSchemaErrorsCostLinearTime: a schema error prints the refused value
// twice (repr and pprint). Python's pprint renders every nested container
// again at each level; the shim renders each once, so a body that nests a
// large value 900 levels deep costs a few times its size, not 900 times.
func TestSchemaErrorsCostLinearTime(t *testing.T) {
	g := NewWithT(t)
	big := `"` + strings.Repeat("x", 200<<10) + `"`
	body := `{"type":` + strings.Repeat("[", 900) + big + strings.Repeat("]", 900) + `,"input":{}}`
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	obj, e := readBody(postBody(strings.NewReader(body), int64(len(body))))
	g.Expect(e).To(BeNil())
	_, _, e = (&Server{}).validate(context.Background(), obj)
	runtime.ReadMemStats(&after)
	g.Expect(e).NotTo(BeNil())
	g.Expect(e.explanation).To(HavePrefix("Provided object does not match schema 'task': [[[["))
	g.Expect(after.TotalAlloc-before.TotalAlloc).To(BeNumerically("<", 40*len(body)), "bytes allocated for a %d-byte body", len(body))
}

// TestAProjectWithoutAValidNamespaceGets400: with namespaces named after
// projects, a project id that makes no namespace name made the create a
// 500. It is the caller's 400, as Glance writes one.
func TestAProjectWithoutAValidNamespaceGets400(t *testing.T) {
	g := NewWithT(t)
	s := newShimWith(t, PolicyAdmin, NamespaceTemplate("glance-{project}"))
	for _, project := range []string{"Not_A_Name", "a.b", strings.Repeat("x", 60)} {
		r := s.do(t, "POST", "/v2/tasks", "u:"+project+":admin", validBody, "Accept", "application/json")
		g.Expect(r.status).To(Equal(http.StatusBadRequest), r.body)
		g.Expect(r.json["message"]).To(HavePrefix("Project %s cannot have tasks here: its namespace would be %q, which is not a valid namespace name.",
			project, "glance-"+strings.ToLower(project)))
		g.Expect(r.json["title"]).To(Equal("Bad Request"))
	}
}

// TestAProjectWhoseNamespaceDoesNotExistGets403: a valid namespace name
// that no namespace has made the create a 500.
func TestAProjectWhoseNamespaceDoesNotExistGets403(t *testing.T) {
	g := NewWithT(t)
	s := newShimWith(t, PolicyAdmin, NamespaceTemplate("glance-{project}"))
	r := s.do(t, "POST", "/v2/tasks", "u:nosuchproject:admin", validBody, "Accept", "application/json")
	g.Expect(r.status).To(Equal(http.StatusForbidden), r.body)
	g.Expect(r.json["message"]).To(HavePrefix(`Project nosuchproject cannot have tasks here: its namespace "glance-nosuchproject" does not exist.`))
}

// TestWhatAnImageImportTaskCannotHoldGets400: an image property longer
// than the CRD allows, or an input larger than an object's annotations may
// be, made the API server refuse the object and the shim answer 500.
func TestWhatAnImageImportTaskCannotHoldGets400(t *testing.T) {
	g := NewWithT(t)
	s := newShim(t, PolicyAdmin)
	post := func(properties, extraInput string) reply {
		return s.do(t, "POST", "/v2/tasks", "admin:admin:admin",
			`{"type":"import","input":{"import_from":"http://127.0.0.1:19293/small.qcow2","import_from_format":"qcow2",`+
				`"image_properties":{"disk_format":"raw","container_format":"bare"`+properties+`}`+extraInput+`}}`, "Accept", "application/json")
	}
	r := post(`,"os_distro":"`+strings.Repeat("é", 65536)+`"`, "")
	g.Expect(r.status).To(Equal(http.StatusBadRequest), r.body)
	g.Expect(r.json["message"]).To(HavePrefix("Image property 'os_distro' is 65536 characters long; at most 65535 fit."))

	r = post("", `,"notes":"`+strings.Repeat("x", 300<<10)+`"`)
	g.Expect(r.status).To(Equal(http.StatusBadRequest), r.body)
	g.Expect(r.json["message"]).To(MatchRegexp(`^Task input is too large: \d+ bytes; at most \d+ fit.`))

	r = post(`,"os_distro":"`+strings.Repeat("é", 65535)+`"`, "")
	g.Expect(r.status).To(Equal(http.StatusCreated), "a property of 65,535 characters fits: %.300s", r.body)

	// Properties the task cannot hold are refused, never dropped.
	long := strings.Repeat("k", 256)
	r = post(`,"`+long+`":"v"`, "")
	g.Expect(r.status).To(Equal(http.StatusBadRequest), r.body)
	g.Expect(r.json["message"]).To(HavePrefix("Image property name '" + long + "' is 256 characters long; at most 255 fit."))
	var many strings.Builder
	for i := range 129 {
		fmt.Fprintf(&many, `,"p%d":"v"`, i)
	}
	r = post(many.String(), "")
	g.Expect(r.status).To(Equal(http.StatusBadRequest), r.body)
	g.Expect(r.json["message"]).To(HavePrefix("The image has 129 extra properties; at most 128 fit."))
}
