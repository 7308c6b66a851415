package importer

import (
	"encoding/json"
	"os"
	"sync"
	"time"
)

// Step timings: where an import's time goes, one JSON line per step on
// Config.Trace (the importer's stderr), for benchmarks and for an operator
// who wonders why an import is slow:
//
//	{"step":"qemu-img check","seconds":0.041,"user_seconds":0.01,"system_seconds":0.02}
//
// A step run by a child process (qemu-img, in its sandbox) carries the
// child's CPU time; the others carry wall time only.

type stepTiming struct {
	Step    string  `json:"step"`
	Seconds float64 `json:"seconds"`
	User    float64 `json:"user_seconds,omitempty"`
	System  float64 `json:"system_seconds,omitempty"`
}

// timed records that step ran from start until now; ps, when not nil, is
// the child process that ran it.
func (c *Config) timed(step string, start time.Time, ps *os.ProcessState) {
	if c.Trace == nil {
		return
	}
	t := stepTiming{Step: step, Seconds: round3(time.Since(start).Seconds())}
	if ps != nil {
		t.User, t.System = round3(ps.UserTime().Seconds()), round3(ps.SystemTime().Seconds())
	}
	b, _ := json.Marshal(t)
	traceMu.Lock()
	defer traceMu.Unlock()
	c.Trace.Write(append(b, '\n'))
}

var traceMu sync.Mutex // steps may end on several goroutines at once

func round3(s float64) float64 { return float64(int64(s*1000+0.5)) / 1000 }
