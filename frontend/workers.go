package frontend

import "sync"

// maxIdleWorkers is the most goroutines kept waiting to serve the next
// connection that is accepted or wakes from parking. A goroutine started
// for each would grow its stack, by copying, to what serving takes, and
// free it again; a kept one grew it once.
const maxIdleWorkers = 256

// workers are the server's goroutines waiting for a connection to serve,
// the last to have finished first (its stack the likeliest to be in the
// processor's caches). Those that stayed unused through a whole
// workerWindow end (see sweep), and all of them when memory is returned
// after a burst.
type workers struct {
	mu      sync.Mutex
	idle    []chan *conn
	low     int  // the fewest idle since the last sweep
	stopped bool // by stop: workers end after their connection
}

// workerWindow is how many of watchMemory's looks a worker must stay
// unused through to end: 10 s.
const workerWindow = 40

// run serves c on a waiting worker, or on a new one.
func (s *Server) run(c *conn) {
	w := &s.workers
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		ch := w.idle[n-1]
		w.idle = w.idle[:n-1]
		w.low = min(w.low, n-1)
		w.mu.Unlock()
		ch <- c
		return
	}
	w.mu.Unlock()
	go s.work(c, nil)
}

// work serves c, then each connection handed to it, until told to end.
func (s *Server) work(c *conn, ch chan *conn) {
	for c != nil {
		s.serveTurns(c)
		w := &s.workers
		w.mu.Lock()
		if w.stopped || len(w.idle) >= maxIdleWorkers {
			w.mu.Unlock()
			return
		}
		if ch == nil {
			ch = make(chan *conn, 1)
		}
		w.idle = append(w.idle, ch)
		w.mu.Unlock()
		c = <-ch
	}
}

// sweep ends the workers that no connection needed since the last sweep
// (all when all is set), the longest idle first.
func (w *workers) sweep(all bool) {
	w.mu.Lock()
	n := w.low
	if all {
		n = len(w.idle)
	}
	ended := w.idle[:n:n]
	w.idle = append([]chan *conn(nil), w.idle[n:]...)
	w.low = len(w.idle)
	w.mu.Unlock()
	for _, ch := range ended {
		ch <- nil
	}
}

// stop ends the idle workers and those that finish from now on.
func (w *workers) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	w.sweep(true)
}
