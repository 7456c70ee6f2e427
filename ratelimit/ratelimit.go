// Package ratelimit holds per-key request rates within a bounded table:
// each key (a client address, a header's value) gets a token bucket of
// rate tokens a second holding at most burst, kept as one time with the
// generic cell rate algorithm (GCRA), and a table of a fixed number of
// keys forgets the least recently seen key of a bucket of ways when a new
// one arrives.
//
// Allow takes one shard's lock for a few comparisons and allocates
// nothing; the table's memory is allocated once, by New.
package ratelimit

import (
	"math"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

// ways is how many keys share a set: a new key replaces the least recently
// seen of its set.
const ways = 8

// Limiter limits the rate of requests per key. It is safe for concurrent
// use.
type Limiter struct {
	interval  int64 // nanoseconds between tokens: 1s / rate
	tolerance int64 // burst * interval: how far ahead of now a key's time may run
	sets      []set
	mask      uint64
}

// set is a few keys under one lock: one cache line's worth of locking for
// several keys, so that neighbouring keys rarely wait for each other.
type set struct {
	mu sync.Mutex
	e  [ways]entry
	_  [56]byte // keeps two sets' locks off one cache line
}

// entry is one key's state: its hash, its theoretical arrival time (the
// time its bucket is full again, GCRA's TAT) and when it was last seen.
type entry struct {
	key  uint64 // 0: empty
	tat  int64
	seen int64
}

// New returns a limiter of rate tokens a second with buckets of burst
// tokens (at least 1), holding at most about maxKeys keys (rounded up to
// a power of two times ways).
func New(rate float64, burst, maxKeys int) *Limiter {
	burst = max(burst, 1)
	interval := int64(float64(time.Second) / rate)
	n := 1
	for n*ways < maxKeys {
		n *= 2
	}
	return &Limiter{interval: max(interval, 1), tolerance: int64(burst) * max(interval, 1), sets: make([]set, n), mask: uint64(n - 1)}
}

// Keys is how many keys the limiter holds at most.
func (l *Limiter) Keys() int { return len(l.sets) * ways }

// Key is the hash a key is held under: a kind byte (so that an address
// and a header value of the same bytes are different keys) and the key.
func Key(kind byte, b []byte) uint64 {
	k := xxhash.Sum64(b) + uint64(kind)*0x9e3779b97f4a7c15
	if k == 0 {
		k = 1 // 0 marks an empty entry
	}
	return k
}

// Allow takes a token from key's bucket at now and reports whether there
// was one; when not, wait is how long until there is.
func (l *Limiter) Allow(key uint64, now time.Time) (ok bool, wait time.Duration) {
	t := now.UnixNano()
	s := &l.sets[(key>>32^key)&l.mask]
	s.mu.Lock()
	e := s.find(key)
	tat := max(e.tat, t)
	next := tat + l.interval
	if over := next - t - l.tolerance; over > 0 {
		e.seen = t
		s.mu.Unlock()
		return false, time.Duration(over)
	}
	e.tat, e.seen = next, t
	s.mu.Unlock()
	return true, 0
}

// find returns key's entry, taking the least recently seen one (an empty
// one first) when key has none. s.mu is held.
func (s *set) find(key uint64) *entry {
	oldest := 0
	for i := range s.e {
		e := &s.e[i]
		if e.key == key {
			return e
		}
		if e.seen < s.e[oldest].seen {
			oldest = i
		}
	}
	e := &s.e[oldest]
	*e = entry{key: key, seen: math.MinInt64}
	return e
}

// RetryAfter is wait in whole seconds, rounded up, at least 1: the value of
// a Retry-After header (RFC 9110 section 10.2.3).
func RetryAfter(wait time.Duration) int {
	return max(int((wait+time.Second-1)/time.Second), 1)
}
