// Package stats keeps the recent past of every backend for the dashboard:
// a fixed ring of one-second samples (requests per second, p50 and p99
// latency, 5xx answers and failures, requests in flight) per backend and
// per pool. It reads the counters the request path keeps anyway, once a
// second; it adds nothing to the request path.
package stats

import (
	"context"
	"math"
	"sync"
	"time"

	"fastlb/upstream"
)

// Window is how many one-second samples are kept: five minutes.
const Window = 300

// Series is a run of one-second samples, oldest first: T[i] is the Unix
// second of sample i.
type Series struct {
	T      []int64   `json:"t"`
	RPS    []float64 `json:"rps"`    // attempts started in that second
	P50ms  []float64 `json:"p50_ms"` // median latency of the attempts that ended in it
	P99ms  []float64 `json:"p99_ms"`
	Errors []uint64  `json:"errors"` // attempts answered 5xx in that second, fastlb's own 502/504 for failed ones included
	Active []int64   `json:"active"` // requests in flight at the sample
}

// Backend is a backend's series.
type Backend struct {
	ID     string `json:"id"`
	Series Series `json:"series"`
}

// Pool is a pool's series (its backends together) and its backends'.
type Pool struct {
	Name     string    `json:"name"`
	Series   Series    `json:"series"`
	Backends []Backend `json:"backends"`
}

// Stats is the answer of GET /api/v1/stats.
type Stats struct {
	IntervalSeconds int    `json:"interval_seconds"`
	Pools           []Pool `json:"pools"`
}

// sample is one second of one backend or pool, kept small (32 bytes): a backend's
// ring is Window of them, 9.4 KiB.
type sample struct {
	t        int64
	rps      uint32
	errors   uint32
	active   int32
	p50, p99 float32 // milliseconds
}

// ring holds the last Window samples.
type ring struct {
	s    [Window]sample
	n    int // samples held
	next int
}

func (r *ring) add(s sample) {
	r.s[r.next] = s
	r.next = (r.next + 1) % Window
	r.n = min(r.n+1, Window)
}

func emptySeries() Series {
	return Series{T: []int64{}, RPS: []float64{}, P50ms: []float64{}, P99ms: []float64{}, Errors: []uint64{}, Active: []int64{}}
}

// series returns the samples taken after Unix second since, oldest first;
// with last, only the newest of them.
func (r *ring) series(since int64, last bool) Series {
	out := emptySeries()
	first := 0
	if last {
		first = max(r.n-1, 0)
	}
	for i := first; i < r.n; i++ {
		s := r.s[(r.next-r.n+i+Window)%Window]
		if s.t <= since {
			continue
		}
		out.T = append(out.T, s.t)
		out.RPS = append(out.RPS, float64(s.rps))
		out.P50ms = append(out.P50ms, float64(s.p50))
		out.P99ms = append(out.P99ms, float64(s.p99))
		out.Errors = append(out.Errors, uint64(s.errors))
		out.Active = append(out.Active, int64(s.active))
	}
	return out
}

// counters are a backend's totals at the last sample.
type counters struct {
	requests, errors5xx uint64
	latency             [upstream.LatencyBuckets]uint64
}

type key struct{ pool, id string }

// tracked is what the recorder keeps of a backend or a pool: its samples,
// and for a backend its totals at the last sample.
type tracked struct {
	ring
	last counters
	gen  uint64 // the sample that last saw it
}

// series is t's samples (see ring.series); none for a t not tracked.
func (t *tracked) series(since int64, last bool) Series {
	if t == nil {
		return emptySeries()
	}
	return t.ring.series(since, last)
}

// Recorder samples the pools once a second. It is safe for concurrent use.
type Recorder struct {
	pools func() []*upstream.Pool

	mu       sync.Mutex
	gen      uint64 // samples taken
	backends map[key]*tracked
	byPool   map[string]*tracked
}

// New returns a recorder of the pools that pools returns at each sample.
func New(pools func() []*upstream.Pool) *Recorder {
	return &Recorder{pools: pools, backends: map[key]*tracked{}, byPool: map[string]*tracked{}}
}

// Run samples every second until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			r.Sample(now)
		}
	}
}

// Sample takes one sample of every backend at now. A backend's first
// sample only notes its counters; a backend or pool gone since is
// forgotten.
func (r *Recorder) Sample(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	for _, p := range r.pools() {
		pool := sample{t: now.Unix()}
		var poolLat [upstream.LatencyBuckets]uint64
		have := false
		for _, b := range p.Snapshot().All {
			k := key{p.Name(), b.ID}
			var c counters
			c.latency, c.errors5xx = b.Latency()
			c.requests = b.Requests()
			st := r.backends[k]
			if st == nil {
				r.backends[k] = &tracked{last: c, gen: r.gen}
				continue
			}
			prev := st.last
			st.last, st.gen = c, r.gen
			var lat [upstream.LatencyBuckets]uint64
			for i := range lat {
				lat[i] = c.latency[i] - prev.latency[i]
				poolLat[i] += lat[i]
			}
			s := sample{t: now.Unix(), rps: clamp32(c.requests - prev.requests),
				errors: clamp32(c.errors5xx - prev.errors5xx),
				active: int32(min(max(b.Active(), 0), math.MaxInt32))}
			s.p50, s.p99 = quantile(lat, 0.5), quantile(lat, 0.99)
			st.add(s)
			pool.rps = clamp32(uint64(pool.rps) + uint64(s.rps))
			pool.errors = clamp32(uint64(pool.errors) + uint64(s.errors))
			pool.active = int32(min(int64(pool.active)+int64(s.active), math.MaxInt32))
			have = true
		}
		pt := r.byPool[p.Name()]
		if pt == nil {
			pt = &tracked{}
			r.byPool[p.Name()] = pt
		}
		pt.gen = r.gen
		if have {
			pool.p50, pool.p99 = quantile(poolLat, 0.5), quantile(poolLat, 0.99)
			pt.add(pool)
		}
	}
	for k, st := range r.backends {
		if st.gen != r.gen {
			delete(r.backends, k)
		}
	}
	for name, pt := range r.byPool {
		if pt.gen != r.gen {
			delete(r.byPool, name)
		}
	}
}

// quantile estimates quantile q of counts in milliseconds, as
// Prometheus's histogram_quantile does: linearly within the bucket that
// holds it (the first bucket starts at 0; past the last bound, the last
// bound). 0 when there are no counts.
func quantile(counts [upstream.LatencyBuckets]uint64, q float64) float32 {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum uint64
	for i, c := range counts {
		if c == 0 || float64(cum+c) < rank {
			cum += c
			continue
		}
		hi := upstream.LatencyBound(i)
		if hi == 0 { // past the last bound
			return float32(upstream.LatencyBound(i-1).Seconds() * 1000)
		}
		var lo time.Duration
		if i > 0 {
			lo = upstream.LatencyBound(i - 1)
		}
		frac := (rank - float64(cum)) / float64(c)
		return float32((lo.Seconds() + frac*(hi-lo).Seconds()) * 1000)
	}
	return 0
}

func clamp32(v uint64) uint32 { return uint32(min(v, math.MaxUint32)) }

// Stats returns every pool's series and its backends', in the order of
// the pools, with the samples taken after Unix second since (0: all).
// With backendsLast, a backend's series holds only its newest sample:
// what a page that charts pools and lists backends needs, a small part
// of the whole for a pool of hundreds.
func (r *Recorder) Stats(since int64, backendsLast bool) Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Stats{IntervalSeconds: 1, Pools: []Pool{}}
	for _, p := range r.pools() {
		ps := Pool{Name: p.Name(), Backends: []Backend{}, Series: r.byPool[p.Name()].series(since, false)}
		for _, b := range p.Snapshot().All {
			ps.Backends = append(ps.Backends, Backend{ID: b.ID, Series: r.backends[key{p.Name(), b.ID}].series(since, backendsLast)})
		}
		out.Pools = append(out.Pools, ps)
	}
	return out
}
