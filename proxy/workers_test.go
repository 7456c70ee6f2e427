package proxy

import (
	"testing"
	"time"
)

// testWorkers are workers whose serving reports each connection on served
// and then waits for release.
func testWorkers(maxIdle int, idleFor time.Duration) (ws *workers, served chan *clientConn, release chan struct{}) {
	served, release = make(chan *clientConn, 16), make(chan struct{})
	ws = &workers{maxIdle: maxIdle, idleFor: idleFor}
	ws.serve = func(c *clientConn) {
		served <- c
		<-release
	}
	return ws, served, release
}

// eventually waits up to a second for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("after 1s: not %s", what)
		}
	}
}

// stopped stops ws and waits for its goroutines to end.
func stopped(t *testing.T, ws *workers) {
	t.Helper()
	ws.stop()
	done := make(chan struct{})
	go func() { ws.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("workers still running 1s after stop")
	}
}

func TestWorkersServeOnTheWaitingOne(t *testing.T) {
	ws, served, release := testWorkers(4, time.Hour)
	defer stopped(t, ws)
	a, b := &clientConn{}, &clientConn{}

	ws.run(a)
	if got := <-served; got != a {
		t.Fatalf("served %p, want %p", got, a)
	}
	release <- struct{}{}
	eventually(t, "one worker waiting", func() bool { return ws.waiting() == 1 })
	ws.mu.Lock()
	first := ws.idle[0]
	ws.mu.Unlock()

	ws.run(b)
	if got := <-served; got != b {
		t.Fatalf("served %p, want %p", got, b)
	}
	if n := ws.waiting(); n != 0 {
		t.Fatalf("%d workers waiting while the only one serves", n)
	}
	release <- struct{}{}
	eventually(t, "one worker waiting", func() bool { return ws.waiting() == 1 })
	ws.mu.Lock()
	again := ws.idle[0]
	ws.mu.Unlock()
	if again != first {
		t.Fatal("a second worker served the second connection")
	}
}

func TestWorkersNewestFirst(t *testing.T) {
	ws, served, release := testWorkers(4, time.Hour)
	defer stopped(t, ws)
	for range 2 {
		ws.run(&clientConn{})
		<-served
	}
	release <- struct{}{}
	eventually(t, "one worker waiting", func() bool { return ws.waiting() == 1 })
	release <- struct{}{}
	eventually(t, "two workers waiting", func() bool { return ws.waiting() == 2 })
	ws.mu.Lock()
	newest := ws.idle[1]
	ws.mu.Unlock()

	ws.run(&clientConn{})
	<-served
	ws.mu.Lock()
	left := ws.idle[0]
	ws.mu.Unlock()
	if left == newest {
		t.Fatal("the longest-waiting worker was taken")
	}
	release <- struct{}{}
}

func TestWorkersKeepAtMostMaxIdle(t *testing.T) {
	ws, served, release := testWorkers(2, time.Hour)
	defer stopped(t, ws)
	for range 3 {
		ws.run(&clientConn{})
		<-served
	}
	for range 3 {
		release <- struct{}{}
	}
	eventually(t, "two workers waiting", func() bool { return ws.waiting() == 2 })
	time.Sleep(20 * time.Millisecond)
	if n := ws.waiting(); n != 2 {
		t.Fatalf("%d workers waiting, at most 2 kept", n)
	}
}

func TestWorkersEndAfterAWholePeriod(t *testing.T) {
	ws, served, release := testWorkers(4, time.Hour) // swept by hand
	defer stopped(t, ws)
	serve := func() {
		ws.run(&clientConn{})
		<-served
		release <- struct{}{}
	}
	serve()
	eventually(t, "one worker waiting", func() bool { return ws.waiting() == 1 })
	ws.sweep() // a period begins
	serve()    // on the same worker, which waits again from now
	eventually(t, "one worker waiting", func() bool { return ws.waiting() == 1 })
	ws.sweep()
	if n := ws.waiting(); n != 1 {
		t.Fatalf("%d workers waiting: one that waited part of a period ended", n)
	}
	ws.sweep()
	if n := ws.waiting(); n != 0 {
		t.Fatalf("%d workers waiting after a whole period", n)
	}
}

func TestWorkersCleanerSweeps(t *testing.T) {
	ws, served, release := testWorkers(4, 10*time.Millisecond)
	defer stopped(t, ws)
	ws.run(&clientConn{})
	<-served
	release <- struct{}{}
	eventually(t, "one worker waiting", func() bool { return ws.waiting() == 1 })
	eventually(t, "the worker ended", func() bool { return ws.waiting() == 0 })

	// The pool goes on: the next connection starts a worker again.
	c := &clientConn{}
	ws.run(c)
	if got := <-served; got != c {
		t.Fatalf("served %p, want %p", got, c)
	}
	release <- struct{}{}
}

func TestWorkersStop(t *testing.T) {
	ws, served, release := testWorkers(4, time.Hour)
	ws.run(&clientConn{})
	<-served
	release <- struct{}{}
	eventually(t, "one worker waiting", func() bool { return ws.waiting() == 1 })

	busy := &clientConn{}
	ws.run(busy) // on the waiting worker
	<-served
	ws.stop()
	if n := ws.waiting(); n != 0 {
		t.Fatalf("%d workers waiting after stop", n)
	}
	release <- struct{}{} // it ends after its connection
	stopped(t, ws)

	// A connection handed over after stop is still served.
	late := &clientConn{}
	ws.run(late)
	if got := <-served; got != late {
		t.Fatalf("served %p, want %p", got, late)
	}
	release <- struct{}{}
	if n := ws.waiting(); n != 0 {
		t.Fatalf("%d workers waiting after stop", n)
	}
}
