package proxy

import (
	"testing"
	"time"
)

// workersHarness drives workers whose serving reports each connection and
// then holds it until released.
type workersHarness struct {
	t       *testing.T
	ws      *workers
	served  chan *clientConn
	release chan struct{}
}

func startWorkers(t *testing.T, maxIdle int, idleFor time.Duration) *workersHarness {
	h := &workersHarness{t: t, ws: &workers{maxIdle: maxIdle, idleFor: idleFor},
		served: make(chan *clientConn, 16), release: make(chan struct{})}
	h.ws.serve = func(c *clientConn) {
		h.served <- c
		<-h.release
	}
	return h
}

// serve hands a new connection to the workers and returns once a worker
// serves it; the worker holds it until finish.
func (h *workersHarness) serve() {
	h.t.Helper()
	c := &clientConn{}
	h.ws.run(c)
	if got := <-h.served; got != c {
		h.t.Fatalf("served %p, want %p", got, c)
	}
}

// finish lets one worker's connection end.
func (h *workersHarness) finish() { h.release <- struct{}{} }

// waitWaiting waits up to a second for n workers to be waiting.
func (h *workersHarness) waitWaiting(n int) {
	h.t.Helper()
	for end := time.Now().Add(time.Second); h.ws.waiting() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			h.t.Fatalf("after 1s: %d workers waiting, want %d", h.ws.waiting(), n)
		}
	}
}

// expectWaiting checks that n workers are waiting now.
func (h *workersHarness) expectWaiting(n int, why string) {
	h.t.Helper()
	if got := h.ws.waiting(); got != n {
		h.t.Fatalf("%d workers waiting, want %d: %s", got, n, why)
	}
}

// idle is the i-th waiting worker, the longest waiting first.
func (h *workersHarness) idle(i int) *worker {
	h.ws.mu.Lock()
	defer h.ws.mu.Unlock()
	return h.ws.idle[i]
}

// stopped stops the workers and waits for their goroutines to end.
func (h *workersHarness) stopped() {
	h.t.Helper()
	h.ws.stop()
	done := make(chan struct{})
	go func() { h.ws.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		h.t.Fatal("workers still running 1s after stop")
	}
}

func TestWorkersServeOnTheWaitingOne(t *testing.T) {
	h := startWorkers(t, 4, time.Hour)
	defer h.stopped()
	h.serve()
	h.finish()
	h.waitWaiting(1)
	first := h.idle(0)

	h.serve()
	h.expectWaiting(0, "the only worker serves")
	h.finish()
	h.waitWaiting(1)
	if h.idle(0) != first {
		t.Fatal("a second worker served the second connection")
	}
}

func TestWorkersNewestFirst(t *testing.T) {
	h := startWorkers(t, 4, time.Hour)
	defer h.stopped()
	h.serve()
	h.serve()
	h.finish()
	h.waitWaiting(1)
	h.finish()
	h.waitWaiting(2)
	newest := h.idle(1)

	h.serve()
	if h.idle(0) == newest {
		t.Fatal("the longest-waiting worker was taken")
	}
	h.finish()
}

func TestWorkersKeepAtMostMaxIdle(t *testing.T) {
	h := startWorkers(t, 2, time.Hour)
	defer h.stopped()
	for range 3 {
		h.serve()
	}
	for range 3 {
		h.finish()
	}
	h.waitWaiting(2)
	time.Sleep(20 * time.Millisecond)
	h.expectWaiting(2, "at most 2 kept")
}

func TestWorkersEndAfterAWholePeriod(t *testing.T) {
	h := startWorkers(t, 4, time.Hour) // swept by hand
	defer h.stopped()
	h.serve()
	h.finish()
	h.waitWaiting(1)
	h.ws.sweep() // a period begins
	h.serve()    // on the same worker, which waits again from now
	h.finish()
	h.waitWaiting(1)
	h.ws.sweep()
	h.expectWaiting(1, "it waited only part of a period")
	h.ws.sweep()
	h.expectWaiting(0, "it waited a whole period")
}

func TestWorkersCleanerSweeps(t *testing.T) {
	h := startWorkers(t, 4, 10*time.Millisecond)
	defer h.stopped()
	h.serve()
	h.finish()
	h.waitWaiting(1)
	h.waitWaiting(0)

	// The workers go on: the next connection starts one again.
	h.serve()
	h.finish()
}

func TestWorkersStop(t *testing.T) {
	h := startWorkers(t, 4, time.Hour)
	h.serve()
	h.finish()
	h.waitWaiting(1)

	h.serve() // on the waiting worker
	h.ws.stop()
	h.expectWaiting(0, "stopped")
	h.finish() // it ends after its connection
	h.stopped()

	// A connection handed over after stop is still served.
	h.serve()
	h.finish()
	h.expectWaiting(0, "stopped")
}
