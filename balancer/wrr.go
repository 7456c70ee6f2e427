package balancer

import (
	"sync/atomic"

	"fastlb/upstream"
)

// SmoothWRR is nginx's smooth weighted round-robin. Update runs nginx's
// algorithm offline over one full cycle (weights divided by their greatest
// common divisor) and Pick walks that schedule with one atomic counter, so
// the order is exactly nginx's (weights 5,1,1 give a a b a c a a) and a pick
// costs one atomic add.
type SmoothWRR struct {
	table atomic.Pointer[wrrTable]
}

var _ Policy = (*SmoothWRR)(nil)

type wrrTable struct {
	backends []*upstream.Backend
	sched    []uint32 // indexes into backends, one full cycle
	next     atomic.Uint64
}

// NewSmoothWRR returns a SmoothWRR with no backends.
func NewSmoothWRR() *SmoothWRR {
	w := &SmoothWRR{}
	w.table.Store(&wrrTable{})
	return w
}

// Update implements Policy.
func (w *SmoothWRR) Update(s *upstream.Snapshot) {
	bs := eligible(s)
	weights := make([]int, len(bs))
	for i, b := range bs {
		weights[i] = b.Weight()
	}
	w.table.Store(&wrrTable{backends: bs, sched: smoothSchedule(weights)})
}

// Pick implements Policy.
func (w *SmoothWRR) Pick(tried Tried) *upstream.Backend {
	t := w.table.Load()
	n := uint64(len(t.sched))
	if n == 0 {
		return nil
	}
	if tried.n > 0 && !anyUsable(t.backends, &tried) {
		return nil
	}
	// Skip ahead past backends that are full or already tried, or that a
	// slow start holds back this time; one cycle visits every backend, so
	// this ends. One held back is taken if no other is usable.
	var held *upstream.Backend
	for range n {
		b := t.backends[t.sched[(t.next.Add(1)-1)%n]]
		if usable(b, &tried) {
			if b.Admit() {
				return b
			}
			held = b
		}
	}
	return held
}

func anyUsable(bs []*upstream.Backend, tried *Tried) bool {
	for _, b := range bs {
		if usable(b, tried) {
			return true
		}
	}
	return false
}

// smoothSchedule returns one cycle of nginx's smooth weighted round-robin
// over weights (all above 0): each step adds every weight to its current
// value, picks the largest current (the first on a tie) and subtracts the
// total from it. A cycle is sum(weights)/gcd(weights) picks long.
func smoothSchedule(weights []int) []uint32 {
	g := 0
	for _, w := range weights {
		g = gcd(g, w)
	}
	if g == 0 {
		return nil
	}
	total := 0
	reduced := make([]int, len(weights))
	for i, w := range weights {
		reduced[i] = w / g
		total += reduced[i]
	}
	current := make([]int, len(weights))
	sched := make([]uint32, total)
	for k := range sched {
		best := 0
		for i, w := range reduced {
			current[i] += w
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		sched[k] = uint32(best)
	}
	return sched
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
