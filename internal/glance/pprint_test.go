package glance

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// python is Debian's interpreter, which has the standard library Glance
// runs on (the python3 on PATH may be another one).
const python = "/usr/bin/python3"

// pythonAnswers runs Python's pprint.pformat(x, width=72) and repr(x) on
// each JSON document.
func pythonAnswers(t *testing.T, docs []string) (pformats, reprs []string) {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Skip(python + " is not installed")
	}
	in, _ := json.Marshal(docs)
	cmd := exec.Command(python, "-c", `
import json, pprint, sys
docs = [json.loads(d) for d in json.load(sys.stdin)]
json.dump([[pprint.pformat(d, width=72) for d in docs], [repr(d) for d in docs]], sys.stdout)
`)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var answers [2][]string
	if err := json.Unmarshal(out, &answers); err != nil {
		t.Fatal(err)
	}
	return answers[0], answers[1]
}

// randomJSON writes a JSON value of the kinds a task body holds: nested
// objects and lists, long strings with spaces, quotes, line ends and
// non-ASCII text, numbers, booleans and nulls.
func randomJSON(r *rand.Rand, depth int) string {
	words := []string{"import", "qcow2", "a", "", "http://127.0.0.1:19293/small.qcow2", "it's", `say "hi"`, `both ' and "`,
		"tab\there", "line\nbreak", "cr\r\nlf", "ünïcödé", "日本語のテキスト", "nbsp\u00a0x", "\u2028sep", "back\\slash", "ctrl\u0001",
		"emoji 🙂", "zero\u200bwidth", "\u0085nel", "form\ffeed"}
	switch k := r.IntN(10); {
	case depth > 4 || k < 3:
		var b strings.Builder
		for n := r.IntN(25); n > 0; n-- {
			if b.Len() > 0 {
				b.WriteString(strings.Repeat(" ", 1+r.IntN(2)))
			}
			b.WriteString(words[r.IntN(len(words))])
		}
		s, _ := json.Marshal(b.String())
		return string(s)
	case k == 3:
		return []string{"1", "-17", "0", "123456789012345678901234567890", "1.5", "-0.25", "1e+30", "3.0", "null", "true", "false"}[r.IntN(11)]
	case k < 7:
		var parts []string
		for n := r.IntN(6); n > 0; n-- {
			key, _ := json.Marshal(words[r.IntN(len(words))] + fmt.Sprint(r.IntN(3)))
			parts = append(parts, string(key)+":"+randomJSON(r, depth+1))
		}
		return "{" + strings.Join(parts, ",") + "}"
	default:
		var parts []string
		for n := r.IntN(6); n > 0; n-- {
			parts = append(parts, randomJSON(r, depth+1))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
}

// TestPformatAndReprArePythons compares pformat and pyRepr with Python's
// own on the task schema and on a few hundred generated values.
func TestPformatAndReprArePythons(t *testing.T) {
	docs := []string{taskSchema, `{"type": "import", "foo": 1, "input": {"import_from": "http://127.0.0.1:19293/small.qcow2", "import_from_format": "qcow2", "image_properties": {"disk_format": "qcow2", "container_format": "bare"}}}`,
		`"` + strings.Repeat("word ", 40) + `"`, `"` + strings.Repeat("x", 200) + `"`, `[]`, `{}`, `""`, `[[[[["deep"]]]]]`}
	r := rand.New(rand.NewPCG(1, 2))
	for range 400 {
		docs = append(docs, randomJSON(r, 0))
	}
	wantPformat, wantRepr := pythonAnswers(t, docs)
	for i, doc := range docs {
		v, err := parseOrdered([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		if got := pformat(v, 72); got != wantPformat[i] {
			t.Errorf("pformat(%.200s): %s", doc, firstDifference(got, wantPformat[i]))
		}
		if got := pyRepr(v); got != wantRepr[i] {
			t.Errorf("repr(%.200s): %s", doc, firstDifference(got, wantRepr[i]))
		}
	}
}

// firstDifference shows the first line where got and want differ.
func firstDifference(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got: %q\nwant: %q", i+1, gl, wl)
		}
	}
	return "same lines"
}
