package balancer

import (
	"math/rand/v2"
	"sync/atomic"

	"fastlb/upstream"
)

// LeastConn picks the backend with the fewest active requests per unit of
// weight. Ties are broken round-robin: each pick starts its scan one backend
// further along, and the first of the tied backends in scan order wins. A
// pick scans every eligible backend (as nginx's least_conn does).
type LeastConn struct {
	table atomic.Pointer[lcTable]
}

var _ Policy = (*LeastConn)(nil)

type lcTable struct {
	backends []*upstream.Backend
	next     atomic.Uint64
}

// NewLeastConn returns a LeastConn with no backends.
func NewLeastConn() *LeastConn {
	l := &LeastConn{}
	l.table.Store(&lcTable{})
	return l
}

// Update implements Policy.
func (l *LeastConn) Update(s *upstream.Snapshot) {
	l.table.Store(&lcTable{backends: eligible(s)})
}

// Pick implements Policy.
func (l *LeastConn) Pick(tried Tried) *upstream.Backend {
	t := l.table.Load()
	n := uint64(len(t.backends))
	if n == 0 {
		return nil
	}
	start := t.next.Add(1) - 1
	var best, held *upstream.Backend
	var bestActive, bestWeight int64
	for k := range n {
		b := t.backends[(start+k)%n]
		if !usable(b, &tried) {
			continue
		}
		share := b.RampShare()
		if share < upstream.RampFull && !upstream.Admit(share) { // a slow start holds it back this time
			held = b
			continue
		}
		active, weight := b.Active(), int64(b.Weight())*share
		// active/weight < bestActive/bestWeight, without division.
		if best == nil || active*bestWeight < bestActive*weight {
			best, bestActive, bestWeight = b, active, weight
		}
	}
	if best == nil {
		return held
	}
	return best
}

// RandomTwo is the power of two random choices: it draws two different
// eligible backends at random and takes the one with fewer active requests
// per unit of weight (the first drawn on a tie).
type RandomTwo struct {
	table atomic.Pointer[[]*upstream.Backend]
	// intN returns a uniform random integer in [0, n). Tests inject a
	// seeded source; the default is math/rand/v2, which takes no lock.
	intN func(n uint64) uint64
}

var _ Policy = (*RandomTwo)(nil)

// NewRandomTwo returns a RandomTwo drawing from intN, or from math/rand/v2
// when intN is nil.
func NewRandomTwo(intN func(n uint64) uint64) *RandomTwo {
	if intN == nil {
		intN = rand.Uint64N
	}
	r := &RandomTwo{intN: intN}
	r.table.Store(new([]*upstream.Backend))
	return r
}

// Update implements Policy.
func (r *RandomTwo) Update(s *upstream.Snapshot) {
	bs := eligible(s)
	r.table.Store(&bs)
}

// Pick implements Policy.
func (r *RandomTwo) Pick(tried Tried) *upstream.Backend {
	bs := *r.table.Load()
	n := uint64(len(bs))
	switch {
	case n == 0:
		return nil
	case n == 1:
		if usable(bs[0], &tried) {
			return bs[0]
		}
		return nil
	}
	i := r.intN(n)
	j := r.intN(n - 1)
	if j >= i {
		j++
	}
	a, b := bs[i], bs[j]
	// A backend that a slow start holds back this time is not drawn.
	okA, okB := usable(a, &tried) && a.Admit(), usable(b, &tried) && b.Admit()
	switch {
	case okA && okB:
		// (active+1)/weight: the +1 counts the request being placed, so a
		// heavier backend wins between two idle ones.
		if (b.Active()+1)*int64(a.Weight())*a.RampShare() < (a.Active()+1)*int64(b.Weight())*b.RampShare() {
			return b
		}
		return a
	case okA:
		return a
	case okB:
		return b
	}
	// Both draws were tried or full (a retry, or a saturated set): take the
	// first usable backend after a random start.
	for k := range n {
		if c := bs[(i+k)%n]; usable(c, &tried) {
			return c
		}
	}
	return nil
}
