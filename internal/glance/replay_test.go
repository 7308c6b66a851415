package glance

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// The transcripts in testdata/transcripts were recorded from a real Glance
// (Debian's glance-api) by shared/reference/real-glance/capture-transcripts.sh.
// Each one is replayed against the shim and the answers compared, after
// normalising what differs by nature: ids, request ids, times, host.

// exchange is one recorded request and Glance's answer.
type exchange struct {
	method, target string
	headers        http.Header
	body           string
	hasBody        bool
	status         int
	respHeaders    http.Header
	respBody       string
}

func loadExchange(t *testing.T, path string) *exchange {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(data), "\n", 3)
	if len(lines) < 3 || !strings.HasPrefix(lines[1], "$ curl ") {
		return nil
	}
	ex := &exchange{method: http.MethodGet, headers: http.Header{}}
	words := shellWords(strings.TrimPrefix(lines[1], "$ "))
	for i := 1; i < len(words); i++ {
		switch w := words[i]; {
		case w == "-X":
			i++
			ex.method = words[i]
		case w == "-I":
			ex.method = http.MethodHead
		case w == "-H":
			i++
			k, v, _ := strings.Cut(words[i], ":")
			ex.headers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		case w == "-d":
			i++
			ex.body, ex.hasBody = words[i], true
		case strings.HasPrefix(w, "http"):
			u, err := url.Parse(w)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			ex.target = u.RequestURI() // whatever port the recorded Glance listened on
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(fixCRLF(lines[2]))), nil)
	if err != nil {
		return nil // not an HTTP exchange (a summary file)
	}
	body, _ := io.ReadAll(resp.Body)
	ex.status, ex.respHeaders, ex.respBody = resp.StatusCode, resp.Header, string(body)
	return ex
}

// fixCRLF keeps the recorded bytes from the status line on.
func fixCRLF(s string) string {
	if i := strings.Index(s, "HTTP/1.1 "); i >= 0 {
		return s[i:]
	}
	return s
}

func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inQuote, started := false, false
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && !inQuote:
			escaped, started = true, true
		case r == '\'':
			inQuote, started = !inQuote, true
		case r == ' ' && !inQuote:
			if started {
				words = append(words, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteRune(r)
			started = true
		}
	}
	if started {
		words = append(words, cur.String())
	}
	return words
}

var normalisers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`req-[0-9a-f-]{36}`), "req-ID"},
	{regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`), "UUID"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`), "TIME"},
	{regexp.MustCompile(`http://127\.0\.0\.1:\d+/`), "http://HOST/"},
}

func normalise(s string) string {
	for _, n := range normalisers {
		s = n.re.ReplaceAllString(s, n.with)
	}
	// Glance keeps an image's tags in a Python set: it lists them in an
	// order that changes with the interpreter's hash seed.
	return imageTags.ReplaceAllStringFunc(s, func(tags string) string {
		items := strings.Split(imageTags.FindStringSubmatch(tags)[1], ", ")
		slices.Sort(items)
		return `"tags": [` + strings.Join(items, ", ") + "]"
	})
}

var imageTags = regexp.MustCompile(`"tags": \[([^\]]*)\]`)

// stateful transcripts read tasks that only the recorded Glance had; the
// lifecycle and list tests cover those routes with the shim's own tasks.
var stateful = regexp.MustCompile(`^(0[2-7]|3[0-2]|3[79]|4[134-5]|58|7[56]|83|9[01]|1\d\d)`)

// imageSequence matches the images battery (hack/glance/capture-image-transcripts.sh):
// one sequence, replayed in name order on a shim with no images.
var imageSequence = regexp.MustCompile(`^1\d\d`)

// differences are the transcripts whose answers the shim changes on
// purpose; docs/glance-compatibility.md gives each reason.
var differences = map[string]string{
	"00-unauthenticated-defaultpolicy-get-tasks-403.txt":  "recorded without an identity pipeline; the shim always authenticates",
	"00-unauthenticated-defaultpolicy-post-tasks-403.txt": "recorded without an identity pipeline; the shim always authenticates",
	"00-unauthenticated-post-tasks-500.txt":               "Glance fails with 500 without a project; the shim answers 401",
	"19c-post-nested-1001-levels.txt":                     "Python's json fails with a RecursionError (500) from 894 levels; the shim accepts 1,000 and answers 400 past them",
}

// answer is what a server said to one exchange's request.
type answer struct {
	status int
	header http.Header
	body   string
}

// send sends the exchange's request to base.
func send(t *testing.T, base string, ex *exchange) answer {
	t.Helper()
	var body io.Reader
	if ex.hasBody {
		body = strings.NewReader(ex.body)
	}
	req, _ := http.NewRequest(ex.method, base+ex.target, body)
	req.Header = ex.headers.Clone()
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "*/*") // curl's default
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(got)}
}

// compare reports how the shim's answer differs from Glance's.
func compare(t *testing.T, method string, shim, glance answer) {
	t.Helper()
	if shim.status != glance.status {
		t.Errorf("status %d, Glance answered %d", shim.status, glance.status)
	}
	for _, h := range []string{"Content-Type", "Allow"} {
		if g, w := shim.header.Get(h), glance.header.Get(h); g != w {
			t.Errorf("%s %q, Glance answered %q", h, g, w)
		}
	}
	if g, w := shim.header.Get("X-Openstack-Request-Id") != "", glance.header.Get("X-Openstack-Request-Id") != ""; g != w {
		t.Errorf("x-openstack-request-id present: %v, in Glance: %v", g, w)
	}
	if loc := glance.header.Get("Location"); loc != "" && normalise(shim.header.Get("Location")) != normalise(loc) {
		t.Errorf("Location %q, Glance answered %q", shim.header.Get("Location"), loc)
	}
	if g, w := normalise(shim.body), normalise(glance.body); g != w {
		i := 0
		for i < len(g) && i < len(w) && g[i] == w[i] {
			i++
		}
		t.Errorf("body differs at byte %d (%q vs %q):\n shim:   %q\n glance: %q", i, g[i:min(len(g), i+80)], w[i:min(len(w), i+80)], g, w)
	}
	if n := shim.header.Get("Content-Length"); n != "" && n != strconv.Itoa(len(shim.body)) && method != http.MethodHead {
		t.Errorf("Content-Length %s for a %d-byte body", n, len(shim.body))
	}
}

// replayable lists the exchanges of testdata/transcripts that do not
// depend on tasks only the recorded Glance had.
func replayable(t *testing.T) map[string]*exchange {
	files, _ := filepath.Glob("testdata/transcripts/*.txt")
	out := map[string]*exchange{}
	for _, path := range files {
		name := filepath.Base(path)
		if ex := loadExchange(t, path); ex != nil && !stateful.MatchString(name) && differences[name] == "" {
			out[name] = ex
		}
	}
	return out
}

func TestReplayRealGlanceTranscripts(t *testing.T) {
	s := newShim(t, PolicyAdmin)
	exchanges := replayable(t)
	for name, ex := range exchanges {
		t.Run(name, func(t *testing.T) {
			compare(t, ex.method, send(t, s.URL, ex), answer{ex.status, ex.respHeaders, ex.respBody})
		})
	}
	if len(exchanges) < 40 {
		t.Errorf("only %d transcripts replayed", len(exchanges))
	}
}

// imageExchanges are the images battery, in the order it was recorded.
func imageExchanges(t *testing.T) ([]string, map[string]*exchange) {
	files, _ := filepath.Glob("testdata/transcripts/1*.txt")
	slices.Sort(files)
	var names []string
	out := map[string]*exchange{}
	for _, path := range files {
		name := filepath.Base(path)
		if ex := loadExchange(t, path); ex != nil && imageSequence.MatchString(name) {
			names = append(names, name)
			out[name] = ex
		}
	}
	return names, out
}

// replayImages sends the images battery in order to base and compares each
// answer with want's. Lists read the shim's cache: one is retried until the
// cache has caught up with the writes before it (a few seconds at most).
func replayImages(t *testing.T, s *shim, want func(ex *exchange) answer) {
	base := s.URL
	names, exchanges := imageExchanges(t)
	if len(names) < 100 {
		t.Errorf("only %d image transcripts", len(names))
	}
	for _, name := range names {
		ex := exchanges[name]
		expected := want(ex)
		t.Run(name, func(t *testing.T) {
			got := send(t, base, ex)
			for try := 0; try < 40 && ex.method == http.MethodGet && normalise(got.body) != normalise(expected.body); try++ {
				time.Sleep(100 * time.Millisecond)
				got = send(t, base, ex)
			}
			compare(t, ex.method, got, expected)
		})
	}
}

// TestReplayRealGlanceImageTranscripts replays the images battery recorded
// from a real Glance against the shim.
func TestReplayRealGlanceImageTranscripts(t *testing.T) {
	s := newShim(t, PolicyAdmin)
	replayImages(t, s, func(ex *exchange) answer { return answer{ex.status, ex.respHeaders, ex.respBody} })
}

// TestLiveDiffImagesAgainstRealGlance sends the images battery to a real
// Glance running now and to the shim, in order, and compares the answers.
func TestLiveDiffImagesAgainstRealGlance(t *testing.T) {
	glanceURL := os.Getenv("GLANCE_URL")
	if glanceURL == "" {
		t.Skip("GLANCE_URL is not set: run 'make test-glance-compat', which starts a real Glance")
	}
	requireFreshGlance(t, glanceURL)
	s := newShim(t, PolicyAdmin)
	replayImages(t, s, func(ex *exchange) answer { return send(t, glanceURL, ex) })
}

// deleteImages deletes a test's images and waits until the shim's cache
// has seen it: image ids are unique across namespaces.
func deleteImages(t *testing.T, namespace string) {
	ctx := context.Background()
	if err := k8sClient.DeleteAllOf(ctx, &tasksv1.Image{}, client.InNamespace(namespace)); err != nil {
		t.Error(err)
	}
	NewWithT(t).Eventually(func() int {
		var list tasksv1.ImageList
		taskCache.List(ctx, &list, client.InNamespace(namespace))
		return len(list.Items)
	}).Should(BeZero())
}

// requireFreshGlance fails unless the real Glance has no image: the
// battery creates images with fixed ids, and Glance never gives a deleted
// image's id again.
func requireFreshGlance(t *testing.T, base string) {
	req, _ := http.NewRequest("GET", base+"/v2/images?visibility=all", nil)
	req.Header.Set("X-Auth-Token", "admin:admin:admin")
	var list struct{ Images []struct{ ID string } }
	if err := doJSON(req, http.StatusOK, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Images) > 0 {
		t.Fatalf("the real Glance has %d images: the images battery needs a fresh one (hack/glance/start.sh)", len(list.Images))
	}
}

// TestLiveDiffAgainstRealGlance sends every replayable request to a real
// Glance running now (GLANCE_URL, started by hack/glance/start.sh through
// `make test-glance-compat`) and to the shim, and compares the answers.
func TestLiveDiffAgainstRealGlance(t *testing.T) {
	glanceURL := os.Getenv("GLANCE_URL")
	if glanceURL == "" {
		t.Skip("GLANCE_URL is not set: run 'make test-glance-compat', which starts a real Glance")
	}
	s := newShim(t, PolicyAdmin)
	for name, ex := range replayable(t) {
		t.Run(name, func(t *testing.T) {
			compare(t, ex.method, send(t, s.URL, ex), send(t, glanceURL, ex))
		})
	}
}

// TestLiveDiffListOrderOfABurst posts tasks in a burst to the real Glance
// and to the shim and compares the order in which each lists them: Glance
// orders by created_at to the microsecond, so tasks created within one
// second still list newest first.
func TestLiveDiffListOrderOfABurst(t *testing.T) {
	glanceURL := os.Getenv("GLANCE_URL")
	if glanceURL == "" {
		t.Skip("GLANCE_URL is not set: run 'make test-glance-compat', which starts a real Glance")
	}
	s := newShim(t, PolicyAdmin)
	// listOrder posts n tasks and returns, for each listed task, the
	// position in which it was created.
	listOrder := func(base string) []int {
		token := "u:burst" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":admin"
		_, project, _ := strings.Cut(strings.TrimSuffix(token, ":admin"), ":")
		position := map[string]int{}
		for i := range 5 {
			req, _ := http.NewRequest("POST", base+"/v2/tasks", strings.NewReader(`{"type":"import","input":{"import_from":"http://127.0.0.1:19293/small.qcow2","import_from_format":"qcow2","image_properties":{"disk_format":"qcow2","container_format":"bare"}}}`))
			req.Header.Set("X-Auth-Token", token)
			var created struct{ ID string }
			if err := doJSON(req, http.StatusCreated, &created); err != nil {
				t.Fatalf("%s: %v", base, err)
			}
			position[created.ID] = i
		}
		var order []int
		for range 100 { // the shim reads from its cache: wait for all five
			req, _ := http.NewRequest("GET", base+"/v2/tasks?owner="+project, nil)
			req.Header.Set("X-Auth-Token", token)
			var list struct{ Tasks []struct{ ID string } }
			if err := doJSON(req, http.StatusOK, &list); err != nil {
				t.Fatalf("%s: %v", base, err)
			}
			order = order[:0]
			for _, task := range list.Tasks {
				order = append(order, position[task.ID])
			}
			if len(order) == len(position) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		return order
	}
	glance, shim := listOrder(glanceURL), listOrder(s.URL)
	if !slices.Equal(shim, glance) {
		t.Errorf("the shim lists a burst in creation order %v, Glance in %v", shim, glance)
	}
}

func doJSON(req *http.Request, want int, into any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL, resp.StatusCode, body)
	}
	return json.Unmarshal(body, into)
}
