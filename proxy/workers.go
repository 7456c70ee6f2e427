package proxy

import (
	"sync"
	"time"
)

// Limits of the workers kept between the connections they serve: at most
// maxIdleWorkers wait at a time (each holds a stack of about 16 KiB), and
// one that has waited through a whole workerIdleTime ends. fasthttp's own
// worker pool, which serves new connections, keeps its workers as long.
const (
	maxIdleWorkers = 1024
	workerIdleTime = 10 * time.Second
)

// workers are the goroutines that serve parked connections again. A worker
// that has served one waits for the next instead of ending: with every
// request waking a parked connection (make bench's 2000-paused-conns), a
// goroutine started per request spent about 3 µs of each in the runtime,
// starting, growing its stack to what serving takes (about 16 KiB, copied
// at each doubling), and freeing it again. A worker grows its stack once
// in its life.
//
// Workers are taken newest first, so the one taken is the most likely to
// have its stack in the CPU's caches, and the oldest are the ones that end
// when they are not needed.
type workers struct {
	serve   func(*clientConn) // set before the first run
	maxIdle int
	idleFor time.Duration

	mu      sync.Mutex
	idle    []*worker      // waiting for a connection, the longest waiting first
	tick    uint64         // periods of idleFor the cleaner has counted
	stopped bool           // by stop: workers end after their connection
	cleaner chan struct{}  // made when the cleaner starts; stop closes it
	running sync.WaitGroup // the workers and the cleaner, which Shutdown waits for
}

// worker is one waiting goroutine: it serves what comes on conns and ends
// on nil.
type worker struct {
	conns chan *clientConn // buffered: handing a connection over never blocks
	since uint64           // the workers' tick when it began to wait
}

// run serves c on a waiting worker, or on a new one.
func (ws *workers) run(c *clientConn) {
	ws.mu.Lock()
	if n := len(ws.idle); n > 0 {
		w := ws.idle[n-1]
		ws.idle[n-1] = nil
		ws.idle = ws.idle[:n-1]
		ws.mu.Unlock()
		w.conns <- c
		return
	}
	if ws.stopped {
		// Shutdown may already wait for the workers: this last one is not
		// counted among them (its connection is, by the caller).
		ws.mu.Unlock()
		go ws.serve(c)
		return
	}
	ws.running.Add(1)
	ws.mu.Unlock()
	go ws.work(c)
}

// work serves c, then the connections handed over while it waits.
func (ws *workers) work(c *clientConn) {
	defer ws.running.Done()
	w := &worker{conns: make(chan *clientConn, 1)}
	for c != nil {
		ws.serve(c)
		c = ws.wait(w)
	}
}

// wait puts w among the waiting workers and returns the next connection it
// is to serve, or nil when it is to end.
func (ws *workers) wait(w *worker) *clientConn {
	ws.mu.Lock()
	if ws.stopped || len(ws.idle) >= ws.maxIdle {
		ws.mu.Unlock()
		return nil
	}
	if ws.cleaner == nil {
		ws.cleaner = make(chan struct{})
		ws.running.Add(1)
		go ws.clean(ws.cleaner)
	}
	w.since = ws.tick
	ws.idle = append(ws.idle, w)
	ws.mu.Unlock()
	return <-w.conns
}

// clean sweeps every idleFor until stop closes done.
func (ws *workers) clean(done <-chan struct{}) {
	defer ws.running.Done()
	t := time.NewTicker(ws.idleFor)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			ws.sweep()
		}
	}
}

// sweep ends the workers that have waited since before the previous sweep
// and counts a period.
func (ws *workers) sweep() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	n := 0
	for n < len(ws.idle) && ws.idle[n].since < ws.tick {
		ws.idle[n].conns <- nil
		n++
	}
	left := copy(ws.idle, ws.idle[n:])
	clear(ws.idle[left:])
	ws.idle = ws.idle[:left]
	ws.tick++
}

// stop ends the waiting workers and the cleaner; the workers serving end
// after their connection. running then counts down to zero.
func (ws *workers) stop() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.stopped {
		return
	}
	ws.stopped = true
	for _, w := range ws.idle {
		w.conns <- nil
	}
	ws.idle = nil
	if ws.cleaner != nil {
		close(ws.cleaner)
	}
}

// waiting is the number of workers waiting for a connection.
func (ws *workers) waiting() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.idle)
}
