package importer

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// rateSteps is how many samples a window is cut into: the average is taken
// over the last window, sliding by window/rateSteps.
const rateSteps = 4

// rateWatch cancels a download whose source averages fewer than min bytes/s
// over a window. The idle timeout alone is dodged by a source that sends one
// byte just before it fires, forever; an average over a window is not.
//
// The window slides: every window/rateSteps it looks at the bytes received
// since the sample one window ago, and the time that really passed (a late
// tick only makes the window longer, and the check more lenient). The first
// check comes one full window after the response headers.
type rateWatch struct {
	min    int64 // bytes/s
	window time.Duration
	got    atomic.Int64
	done   chan struct{}
	close  sync.Once

	fired atomic.Bool
	// What the last window saw when it fired, for the message.
	slowBytes   atomic.Int64
	slowElapsed atomic.Int64 // nanoseconds
}

// newRateWatch starts watching; nil when min or window is not positive
// (no minimum rate). A nil *rateWatch is valid and watches nothing.
func newRateWatch(min int64, window time.Duration, cancel context.CancelFunc) *rateWatch {
	if min <= 0 || window <= 0 {
		return nil
	}
	w := &rateWatch{min: min, window: window, done: make(chan struct{})}
	go w.run(cancel)
	return w
}

type rateSample struct {
	at  time.Time
	got int64
}

func (w *rateWatch) run(cancel context.CancelFunc) {
	tick := time.NewTicker(max(w.window/rateSteps, time.Millisecond))
	defer tick.Stop()
	var ring [rateSteps + 1]rateSample // ring[i%len] is sample i
	ring[0] = rateSample{at: time.Now()}
	for i := 1; ; i++ {
		select {
		case <-w.done:
			return
		case now := <-tick.C:
			select {
			case <-w.done: // the body was closed as the tick came: nothing to watch
				return
			default:
			}
			ring[i%len(ring)] = rateSample{at: now, got: w.got.Load()}
			if i < rateSteps {
				continue
			}
			then, cur := ring[(i-rateSteps)%len(ring)], ring[i%len(ring)]
			elapsed := cur.at.Sub(then.at)
			bytes := cur.got - then.got
			if float64(bytes) < float64(w.min)*elapsed.Seconds() {
				w.slowBytes.Store(bytes)
				w.slowElapsed.Store(int64(elapsed))
				w.fired.Store(true)
				cancel()
				return
			}
		}
	}
}

// add counts n bytes received.
func (w *rateWatch) add(n int) {
	if w != nil {
		w.got.Add(int64(n))
	}
}

// stop ends the watch; safe to call more than once.
func (w *rateWatch) stop() {
	if w != nil {
		w.close.Do(func() { close(w.done) })
	}
}

// tooSlow tells whether the watch cancelled the download, and what it saw.
func (w *rateWatch) tooSlow() (slow bool, bytes int64, elapsed time.Duration) {
	if w == nil || !w.fired.Load() {
		return false, 0, 0
	}
	return true, w.slowBytes.Load(), time.Duration(w.slowElapsed.Load())
}
