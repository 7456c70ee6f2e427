package stats

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"
	"unsafe"

	"fastlb/config"
	"fastlb/upstream"
)

func TestQuantile(t *testing.T) {
	at := func(pairs ...int) (c [upstream.LatencyBuckets]uint64) {
		for i := 0; i < len(pairs); i += 2 {
			c[pairs[i]] = uint64(pairs[i+1])
		}
		return c
	}
	last := upstream.LatencyBuckets - 1
	for _, tc := range []struct {
		name   string
		counts [upstream.LatencyBuckets]uint64
		q      float64
		want   float32 // ms
	}{
		{"none", at(), 0.5, 0},
		{"all in the first bucket: half of 0.5 ms", at(0, 10), 0.5, 0.25},
		{"all in the first bucket, p99", at(0, 100), 0.99, 0.495},
		{"second bucket 0.5..1 ms", at(1, 4), 0.5, 0.75},
		{"split: median at the top of the first", at(0, 50, 1, 50), 0.5, 0.5},
		{"split: p99 in the second", at(0, 50, 1, 50), 0.99, 0.99},
		{"past the last bound reports it", at(last, 3), 0.5, 10000},
		{"one count in 2.5..5 ms", at(3, 1), 0.99, 2.5 + 0.99*2.5},
		{"one count in 25..50 ms", at(6, 1), 0.5, 37.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quantile(tc.counts, tc.q); math.Abs(float64(got-tc.want)) > 0.001 {
				t.Errorf("quantile(%v, %v) = %v ms, want %v", tc.counts, tc.q, got, tc.want)
			}
		})
	}
}

func newPools(t *testing.T, names map[string][]string) []*upstream.Pool {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var pools []*upstream.Pool
	for _, name := range []string{"default", "api"} {
		var backends []config.Backend
		for _, id := range names[name] {
			backends = append(backends, config.Backend{URL: "http://127.0.0.1:1", ID: id, Weight: 1, Scheme: "http", Host: "127.0.0.1", Addr: "127.0.0.1:1"})
		}
		p := upstream.NewPool(backends, upstream.Options{Name: name, Rise: 1, Fall: 1, Logger: logger})
		t.Cleanup(p.Close)
		pools = append(pools, p)
	}
	return pools
}

// attempt records one finished request at b.
func attempt(b *upstream.Backend, status int, d time.Duration) {
	b.Acquire()
	b.Observe(status, d)
	b.Release()
}

func TestSample(t *testing.T) {
	pools := newPools(t, map[string][]string{"default": {"a", "b"}, "api": {"c"}})
	r := New(func() []*upstream.Pool { return pools })
	t0 := time.Unix(1_000_000, 0)
	r.Sample(t0) // notes the counters only

	a := pools[0].Snapshot().Lookup("a")
	b := pools[0].Snapshot().Lookup("b")
	for range 8 {
		attempt(a, 200, 2*time.Millisecond)
	}
	attempt(a, 502, 30*time.Millisecond)
	attempt(a, 503, 30*time.Millisecond)
	attempt(b, 200, 7*time.Millisecond)
	b.Acquire() // one in flight at the sample
	r.Sample(t0.Add(time.Second))
	b.Release()
	r.Sample(t0.Add(2 * time.Second))

	s := r.Stats(0, false)
	if s.IntervalSeconds != 1 || len(s.Pools) != 2 || s.Pools[0].Name != "default" || s.Pools[1].Name != "api" {
		t.Fatalf("pools: %+v", s)
	}
	sa := s.Pools[0].Backends[0].Series
	if s.Pools[0].Backends[0].ID != "a" || len(sa.T) != 2 || sa.T[0] != t0.Unix()+1 {
		t.Fatalf("a's series: %+v", sa)
	}
	if sa.RPS[0] != 10 || sa.Errors[0] != 2 || sa.RPS[1] != 0 || sa.Errors[1] != 0 {
		t.Errorf("a: rps %v errors %v, want [10 0] [2 0]", sa.RPS, sa.Errors)
	}
	if sa.P50ms[0] <= 0 || sa.P50ms[0] > 5 || sa.P99ms[0] <= 25 || sa.P99ms[0] > 50 {
		t.Errorf("a: p50 %v p99 %v ms, want (0,5] and (25,50]", sa.P50ms[0], sa.P99ms[0])
	}
	sb := s.Pools[0].Backends[1].Series
	if sb.Active[0] != 1 || sb.Active[1] != 0 {
		t.Errorf("b: active %v, want [1 0]", sb.Active)
	}
	pool := s.Pools[0].Series
	if pool.RPS[0] != 12 || pool.Errors[0] != 2 || pool.Active[0] != 1 {
		t.Errorf("default pool: rps %v errors %v active %v, want 12 (one begun in flight), 2, 1 first", pool.RPS, pool.Errors, pool.Active)
	}
	if api := s.Pools[1].Series; len(api.T) != 2 || api.RPS[0] != 0 {
		t.Errorf("api pool: %+v, want two quiet samples", api)
	}

	// since: only the samples after it.
	if got := r.Stats(t0.Unix()+1, false).Pools[0].Series.T; len(got) != 1 || got[0] != t0.Unix()+2 {
		t.Errorf("since %d: t %v", t0.Unix()+1, got)
	}

	// backends=last: each backend's newest sample only; pools' series whole.
	last := r.Stats(0, true)
	if got := last.Pools[0].Backends[0].Series; len(got.T) != 1 || got.T[0] != t0.Unix()+2 || len(last.Pools[0].Series.T) != 2 {
		t.Errorf("last: a's series %+v, pool's t %v", got, last.Pools[0].Series.T)
	}

	// A backend removed is forgotten; one added starts with its first
	// sample noting its counters.
	if err := pools[0].Remove("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := pools[0].Add(config.Backend{URL: "http://127.0.0.1:2", ID: "d", Weight: 1, Scheme: "http", Host: "127.0.0.1", Addr: "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	attempt(pools[0].Snapshot().Lookup("d"), 200, time.Millisecond)
	r.Sample(t0.Add(3 * time.Second))
	s = r.Stats(0, false)
	if n := len(s.Pools[0].Backends); n != 2 || s.Pools[0].Backends[1].ID != "d" || len(s.Pools[0].Backends[1].Series.T) != 0 {
		t.Errorf("after remove b, add d: %+v", s.Pools[0].Backends)
	}
	if _, ok := r.backends[key{"default", "b"}]; ok {
		t.Error("b's ring is still kept")
	}
}

func TestRingKeepsTheLastWindow(t *testing.T) {
	pools := newPools(t, map[string][]string{"default": {"a"}})
	r := New(func() []*upstream.Pool { return pools })
	a := pools[0].Snapshot().Lookup("a")
	t0 := time.Unix(2_000_000, 0)
	for i := range Window + 50 {
		for range i % 7 {
			attempt(a, 200, time.Millisecond)
		}
		r.Sample(t0.Add(time.Duration(i) * time.Second))
	}
	sa := r.Stats(0, false).Pools[0].Backends[0].Series
	if len(sa.T) != Window {
		t.Fatalf("%d samples kept, want %d", len(sa.T), Window)
	}
	for j, ts := range sa.T {
		i := 50 + j
		if ts != t0.Unix()+int64(i) || sa.RPS[j] != float64(i%7) {
			t.Fatalf("sample %d: t %d rps %v, want t %d rps %d", j, ts, sa.RPS[j], t0.Unix()+int64(i), i%7)
		}
	}
}

// sample's comment states a ring's size from this.
func TestSampleSize(t *testing.T) {
	if n := unsafe.Sizeof(sample{}); n != 32 {
		t.Errorf("a sample takes %d bytes; update the size stated in sample's comment", n)
	}
}

// BenchmarkSample is one second's sampling of 1,000 backends in 10 pools.
func BenchmarkSample(b *testing.B) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var pools []*upstream.Pool
	for i := range 10 {
		var backends []config.Backend
		for j := range 100 {
			addr := fmt.Sprintf("127.0.0.%d:%d", i+1, 1000+j)
			backends = append(backends, config.Backend{URL: "http://" + addr, ID: addr, Weight: 1, Scheme: "http", Host: "127.0.0.1", Addr: addr})
		}
		p := upstream.NewPool(backends, upstream.Options{Name: fmt.Sprint("p", i), Rise: 1, Fall: 1, Logger: logger})
		b.Cleanup(p.Close)
		pools = append(pools, p)
	}
	r := New(func() []*upstream.Pool { return pools })
	t0 := time.Unix(3_000_000, 0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Sample(t0.Add(time.Duration(i) * time.Second))
	}
}
