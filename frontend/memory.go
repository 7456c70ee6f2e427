package frontend

import (
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// releaseAfter is how many connections must have gone idle, from the
// most in a turn at once to those in a turn now (at most a quarter of
// them), or by parking, since memory was last returned, for the server to
// return the
// memory they freed to the system. A burst leaves behind it the serving
// goroutines' stacks, fasthttp's buffers in their pools and the garbage of
// the requests; Go's collector would free them only once the heap grew
// again, and its scavenger hand the pages back over minutes, so an idle
// server would keep the burst's peak.
const releaseAfter = 512

// releaseEvery is the most often the process returns memory; a server
// looks four times as often.
const releaseEvery = time.Second

// lastRelease is when memory was last returned, by any server of the
// process: a return covers them all.
var lastRelease atomic.Int64

// watchMemory returns freed memory to the system after a burst (see
// releaseAfter), until stop is closed.
func (s *Server) watchMemory(stop <-chan struct{}) {
	tick := time.NewTicker(releaseEvery / 4)
	defer tick.Stop()
	// Since memory was last returned: the most connections in a turn at
	// once, and the fewest parked.
	peak, low := int64(0), s.parked.Load()
	for looks := 1; ; looks++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if looks%workerWindow == 0 {
			s.workers.sweep(false)
		}
		busy, parked := s.busy.Load(), s.parked.Load()
		peak, low = max(peak, s.busyPeak.Swap(busy)), min(low, parked)
		if peak-busy < releaseAfter && parked-low < releaseAfter || busy > peak/4 {
			continue // too few went idle, or the burst goes on
		}
		if s.releaseMemory(peak, busy, parked) {
			peak, low = busy, parked
		}
	}
}

// releaseMemory returns freed memory to the system, unless a server of the
// process did within releaseEvery; it reports whether it did.
func (s *Server) releaseMemory(peak, busy, parked int64) bool {
	now := time.Now().UnixNano()
	last := lastRelease.Load()
	if now-last < int64(releaseEvery) || !lastRelease.CompareAndSwap(last, now) {
		return false
	}
	start := time.Now()
	if s.opts.Returned != nil {
		s.opts.Returned.Inc()
	}
	if s.opts.AfterBurst != nil {
		s.opts.AfterBurst()
	}
	s.workers.sweep(true) // their stacks
	// Twice: sync.Pool keeps what it held through one collection.
	runtime.GC()
	debug.FreeOSMemory()
	s.logger.Debug("returned freed memory to the system", "busy_before", peak, "busy", busy,
		"parked", parked, "took", time.Since(start).String())
	return true
}

// serving counts a turn starting (n 1) or ending (n -1), keeping the most
// served at once since watchMemory last looked.
func (s *Server) serving(n int64) {
	busy := s.busy.Add(n)
	for {
		peak := s.busyPeak.Load()
		if busy <= peak || s.busyPeak.CompareAndSwap(peak, busy) {
			return
		}
	}
}
