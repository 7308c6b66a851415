package importresult

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMarshalFitsTheTerminationMessage(t *testing.T) {
	long := Result{Reason: ReasonUnsafeImage, Error: strings.Repeat("é", 10*MaxSize)}
	b, err := Marshal(long)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxSize {
		t.Fatalf("Marshal gave %d bytes, more than %d", len(b), MaxSize)
	}
	r, err := Parse(string(b))
	if err != nil || r.Reason != ReasonUnsafeImage || !strings.HasSuffix(r.Error, "…") || strings.ContainsRune(r.Error, utf8.RuneError) {
		t.Fatalf("Parse(Marshal()) = %+v, %v", r, err)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		message string
		ok      bool
	}{
		{`{"image_id":"a","size":1}`, true},
		{`{"error":"The source answered HTTP 404.","reason":"SourceError"}`, true},
		{`{}`, false},
		{`panic: runtime error: index out of range`, false},
		{``, false},
	} {
		if _, err := Parse(tc.message); (err == nil) != tc.ok {
			t.Errorf("Parse(%q) error = %v, want ok=%v", tc.message, err, tc.ok)
		}
	}
}
