package importer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/imageimport/image-import-operator/internal/diskformat"
	"github.com/imageimport/image-import-operator/internal/testimages"
)

// TestStepTimings: a qcow2 -> raw import writes one JSON line per step on
// its Trace, each qemu-img run with qemu-img's own CPU time, so that a slow
// import says where its time went.
func TestStepTimings(t *testing.T) {
	requireSandbox(t)
	qcow2, _ := testimages.CloudLikeQcow2(t, t.TempDir(), 64<<20, 16<<20)
	var trace bytes.Buffer
	if _, err, _ := importLocal(t, qcow2, diskformat.Qcow2, diskformat.Raw, func(c *Config) { c.Trace = &trace }); err != nil {
		t.Fatal(err)
	}
	t.Log(trace.String())
	var steps []string
	cpu := map[string]float64{}
	lines := bufio.NewScanner(&trace)
	for lines.Scan() {
		var s stepTiming
		if err := json.Unmarshal(lines.Bytes(), &s); err != nil {
			t.Fatalf("%q: %v", lines.Text(), err)
		}
		if s.Seconds < 0 {
			t.Errorf("%s took %v s", s.Step, s.Seconds)
		}
		steps = append(steps, s.Step)
		cpu[s.Step] = s.User + s.System
	}
	for _, want := range []string{"fetch", "qemu-img info qcow2", "qemu-img check qcow2", "qemu-img measure qcow2", "inspect",
		"qemu-img convert qcow2 (stream)", "qemu-img info raw", "inspect output", "commit"} {
		if !slices.Contains(steps, want) {
			t.Errorf("no step %q in %q", want, steps)
		}
	}
	if cpu["qemu-img convert qcow2 (stream)"] <= 0 {
		t.Errorf("the conversion's CPU time is %v s", cpu["qemu-img convert qcow2 (stream)"])
	}
}
