// Package balancer holds the load-balancing policies. A policy keeps its own
// tables, rebuilt by Update whenever the Pool publishes a new snapshot, and
// its Pick takes no lock and allocates nothing.
package balancer

import (
	"fmt"
	"slices"
	"sort"

	"fastlb/config"
	"fastlb/upstream"
)

// Policy chooses a backend for each request.
type Policy interface {
	// Update installs the eligible backends of a new snapshot. The Pool
	// calls it (through Watch) off the request path, never concurrently
	// with itself.
	Update(s *upstream.Snapshot)
	// Pick returns an eligible backend with room that is not in tried, or
	// nil when there is none. It is safe for concurrent use, takes no lock
	// and allocates nothing.
	Pick(tried Tried) *upstream.Backend
}

// Tried lists the backends a request has already tried, so a retry goes
// elsewhere. It is a value, passed by copy: the zero value is empty.
type Tried struct {
	list [config.MaxRetries + 1]*upstream.Backend
	n    int
}

// Add records b. Once full it keeps the first entries: a request makes at
// most MaxRetries+1 attempts.
func (t *Tried) Add(b *upstream.Backend) {
	if t.n < len(t.list) {
		t.list[t.n] = b
		t.n++
	}
}

// Has reports whether b was tried.
func (t *Tried) Has(b *upstream.Backend) bool {
	for _, x := range t.list[:t.n] {
		if x == b {
			return true
		}
	}
	return false
}

// Drop forgets the latest backend added: it turned out full before the
// request reached it, so it was not tried.
func (t *Tried) Drop() {
	if t.n > 0 {
		t.n--
		t.list[t.n] = nil
	}
}

// Last is the latest backend added, or nil.
func (t *Tried) Last() *upstream.Backend {
	if t.n == 0 {
		return nil
	}
	return t.list[t.n-1]
}

// Len is the number of backends tried.
func (t *Tried) Len() int { return t.n }

// usable reports whether b may take this request.
func usable(b *upstream.Backend, tried *Tried) bool {
	return b.HasRoom() && (tried.n == 0 || !tried.Has(b))
}

var policies = map[string]func() Policy{
	config.StrategyRoundRobin: func() Policy { return NewSmoothWRR() },
	config.StrategyLeastConn:  func() Policy { return NewLeastConn() },
	config.StrategyRandomTwo:  func() Policy { return NewRandomTwo(nil) },
}

// New returns the policy registered under a config strategy name.
func New(strategy string) (Policy, error) {
	mk, ok := policies[strategy]
	if !ok {
		names := make([]string, 0, len(policies))
		for n := range policies {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("unknown strategy %q (known: %v)", strategy, names)
	}
	return mk(), nil
}

// eligible copies the eligible backends of s, so a policy's tables never
// share a slice with the snapshot.
func eligible(s *upstream.Snapshot) []*upstream.Backend {
	return slices.Clone(s.Eligible)
}
