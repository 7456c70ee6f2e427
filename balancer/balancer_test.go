package balancer

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"fastlb/config"
	"fastlb/upstream"
)

// newPool builds a pool of healthy backends named a, b, c, ... with the given
// weights, and a policy watching it.
func newPool(t testing.TB, p Policy, weights ...int) (*upstream.Pool, []*upstream.Backend) {
	t.Helper()
	return newPoolWith(t, p, upstream.Options{}, weights...)
}

// newPoolWith is newPool with the pool's options (Rise, Fall and Logger
// are set).
func newPoolWith(t testing.TB, p Policy, opts upstream.Options, weights ...int) (*upstream.Pool, []*upstream.Backend) {
	t.Helper()
	cfgs := make([]config.Backend, len(weights))
	for i, w := range weights {
		cfgs[i] = config.Backend{URL: fmt.Sprintf("http://127.0.0.1:%d", 10000+i), ID: string(rune('a' + i)), Weight: w}
		if err := config.ResolveBackend(&cfgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	opts.Rise, opts.Fall, opts.Logger = 1, 1, slog.New(slog.NewTextHandler(io.Discard, nil))
	pool := upstream.NewPool(cfgs, opts)
	bs := pool.Snapshot().All
	for _, b := range bs {
		pool.ReportCheck(b, upstream.CheckResult{OK: true})
	}
	pool.Watch(p.Update)
	return pool, bs
}

// ramp brings backend id back from maint, which starts its slow start.
func ramp(t testing.TB, pool *upstream.Pool, id string) {
	t.Helper()
	for _, st := range []upstream.State{upstream.StateMaint, upstream.StateActive} {
		if _, err := pool.SetState(id, st); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSlowStartEveryStrategy: a backend ramping up takes a small part of
// its share in every strategy (at the start of an hour's ramp, about 1%),
// and is still picked when no other backend is usable.
func TestSlowStartEveryStrategy(t *testing.T) {
	for name, mk := range policies {
		t.Run(name, func(t *testing.T) {
			p := mk()
			pool, bs := newPoolWith(t, p, upstream.Options{SlowStart: time.Hour}, 1, 1, 1)
			ramp(t, pool, "c")
			if w := bs[2].EffectiveWeight(); w > 0.02 {
				t.Errorf("effective weight %.3f at the start of its ramp", w)
			}
			counts := map[string]int{}
			const n = 30000
			for range n {
				counts[p.Pick(Tried{}).ID]++
			}
			if counts["c"] > n/3/5 {
				t.Errorf("the ramping backend got %d of %d picks, want under a fifth of its share (%d)", counts["c"], n, n/3/5)
			}
			var tried Tried
			tried.Add(bs[0])
			tried.Add(bs[1])
			for range 100 {
				if b := p.Pick(tried); b != bs[2] {
					t.Fatalf("with only the ramping backend untried, picked %v", b)
				}
			}
		})
	}
}

func sequence(p Policy, n int) string {
	var sb strings.Builder
	for range n {
		b := p.Pick(Tried{})
		if b == nil {
			sb.WriteByte('-')
		} else {
			sb.WriteString(b.ID)
		}
	}
	return sb.String()
}

func TestSmoothWRRSequence(t *testing.T) {
	tests := []struct {
		weights []int
		want    string
	}{
		{[]int{5, 1, 1}, "aabacaa" + "aabacaa"},
		{[]int{3, 2, 1}, "abacba"},
		{[]int{10, 10, 10}, "abcabc"},
		{[]int{1}, "aaa"},
		{[]int{2, 0, 1}, "acaaca"},
		{[]int{0, 0}, "--"},
		{[]int{4, 2}, "abaaba"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			p := NewSmoothWRR()
			newPool(t, p, tt.weights...)
			if got := sequence(p, len(tt.want)); got != tt.want {
				t.Errorf("sequence = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSmoothWRREvenSplit(t *testing.T) {
	p := NewSmoothWRR()
	newPool(t, p, 1, 1, 1)
	counts := map[byte]int{}
	for _, c := range []byte(sequence(p, 30)) {
		counts[c]++
	}
	if counts['a'] != 10 || counts['b'] != 10 || counts['c'] != 10 {
		t.Errorf("30 picks over three equal backends: %v, want 10 each", counts)
	}
}

// TestPickSkips checks, for every policy, that tried, full, down and
// draining backends are not picked.
func TestPickSkips(t *testing.T) {
	for name, mk := range policies {
		t.Run(name, func(t *testing.T) {
			p := mk()
			pool, bs := newPool(t, p, 1, 1, 1)
			var tried Tried
			tried.Add(bs[0])
			tried.Add(bs[1])
			for range 20 {
				if b := p.Pick(tried); b != bs[2] {
					t.Fatalf("with a and b tried, picked %v", b)
				}
			}
			tried.Add(bs[2])
			if b := p.Pick(tried); b != nil {
				t.Fatalf("with all tried, picked %s", b.ID)
			}
			pool.ReportCheck(bs[1], upstream.CheckResult{OK: false, Err: "refused"}) // Fall is 1
			for range 20 {
				if b := p.Pick(Tried{}); b == bs[1] {
					t.Fatal("picked a down backend")
				}
			}
		})
	}
}

func TestMaxConns(t *testing.T) {
	for name, mk := range policies {
		t.Run(name, func(t *testing.T) {
			p := mk()
			cfgs := []config.Backend{{URL: "http://127.0.0.1:1", ID: "a", Weight: 1, MaxConns: 1}, {URL: "http://127.0.0.1:2", ID: "b", Weight: 1}}
			for i := range cfgs {
				if err := config.ResolveBackend(&cfgs[i]); err != nil {
					t.Fatal(err)
				}
			}
			pool := upstream.NewPool(cfgs, upstream.Options{Rise: 1, Fall: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			a, b := pool.Snapshot().All[0], pool.Snapshot().All[1]
			pool.ReportCheck(a, upstream.CheckResult{OK: true})
			pool.ReportCheck(b, upstream.CheckResult{OK: true})
			pool.Watch(p.Update)
			a.Acquire()
			defer a.Release()
			for range 20 {
				if got := p.Pick(Tried{}); got != b {
					t.Fatalf("picked %v while a is at max_conns", got)
				}
			}
		})
	}
}

func TestLeastConn(t *testing.T) {
	p := NewLeastConn()
	_, bs := newPool(t, p, 1, 1, 1)
	if got := sequence(p, 6); got != "abcabc" {
		t.Errorf("idle backends: %q, want ties broken round-robin abcabc", got)
	}
	bs[0].Acquire()
	bs[0].Acquire()
	bs[1].Acquire()
	for range 10 {
		if b := p.Pick(Tried{}); b != bs[2] {
			t.Fatalf("picked %s, want the idle c", b.ID)
		}
	}
	bs[2].Acquire()
	bs[2].Acquire()
	// a=2, b=1, c=2: b is least.
	if b := p.Pick(Tried{}); b != bs[1] {
		t.Fatalf("picked %s, want b", b.ID)
	}
}

func TestLeastConnWeighted(t *testing.T) {
	p := NewLeastConn()
	_, bs := newPool(t, p, 1, 2)
	bs[0].Acquire()
	bs[0].Acquire() // 2/1
	bs[1].Acquire()
	bs[1].Acquire()
	bs[1].Acquire() // 3/2 is less
	if b := p.Pick(Tried{}); b != bs[1] {
		t.Fatalf("picked %s, want b (3 active / weight 2 < 2 / 1)", b.ID)
	}
}

// TestRandomTwoSpread checks by chi-square that idle equal backends are
// picked uniformly.
func TestRandomTwoSpread(t *testing.T) {
	src := rand.New(rand.NewPCG(1, 2))
	p := NewRandomTwo(src.Uint64N)
	newPool(t, p, 1, 1, 1, 1)
	const picks = 40000
	counts := map[string]int{}
	for range picks {
		counts[p.Pick(Tried{}).ID]++
	}
	expected := float64(picks) / 4
	chi2 := 0.0
	for _, c := range counts {
		chi2 += math.Pow(float64(c)-expected, 2) / expected
	}
	// 3 degrees of freedom: P(chi2 > 16.27) = 0.001.
	if len(counts) != 4 || chi2 > 16.27 {
		t.Errorf("picks %v, chi-square %.2f: not uniform", counts, chi2)
	}
}

func TestRandomTwoAvoidsBusy(t *testing.T) {
	src := rand.New(rand.NewPCG(3, 4))
	p := NewRandomTwo(src.Uint64N)
	_, bs := newPool(t, p, 1, 1, 1)
	for range 5 {
		bs[1].Acquire()
	}
	counts := map[string]int{}
	for range 3000 {
		counts[p.Pick(Tried{}).ID]++
	}
	// b always loses its comparison; a and c share the picks.
	if counts["b"] != 0 || counts["a"] < 1300 || counts["c"] < 1300 {
		t.Errorf("picks with b busy: %v", counts)
	}
}

func TestRandomTwoWeights(t *testing.T) {
	src := rand.New(rand.NewPCG(5, 6))
	p := NewRandomTwo(src.Uint64N)
	_, bs := newPool(t, p, 1, 3)
	// Idle: (0+1)*3 > (0+1)*1, so the heavier b wins every comparison.
	for range 50 {
		if got := p.Pick(Tried{}); got != bs[1] {
			t.Fatalf("picked %s, want b", got.ID)
		}
	}
	// b with 3 active: (3+1)/3 > (0+1)/1, so a wins.
	for range 3 {
		bs[1].Acquire()
	}
	if got := p.Pick(Tried{}); got != bs[0] {
		t.Fatalf("picked %s, want a", got.ID)
	}
}

func TestNew(t *testing.T) {
	for _, name := range []string{config.StrategyRoundRobin, config.StrategyLeastConn, config.StrategyRandomTwo} {
		if p, err := New(name); err != nil || p == nil {
			t.Errorf("New(%q) = %v, %v", name, p, err)
		}
	}
	if _, err := New("fastest"); err == nil {
		t.Error("New accepted an unknown strategy")
	}
}

// TestPickAllocations asserts the 0-allocation promise of every pick.
func TestPickAllocations(t *testing.T) {
	for name, mk := range policies {
		p := mk()
		pool, _ := newPoolWith(t, p, upstream.Options{SlowStart: time.Hour}, 3, 2, 1)
		var tried Tried
		if n := testing.AllocsPerRun(1000, func() { tried.Add(p.Pick(tried)); tried = Tried{} }); n != 0 {
			t.Errorf("%s: %.1f allocations per pick", name, n)
		}
		ramp(t, pool, "c")
		if n := testing.AllocsPerRun(1000, func() { tried.Add(p.Pick(tried)); tried = Tried{} }); n != 0 {
			t.Errorf("%s, one backend ramping up: %.1f allocations per pick", name, n)
		}
	}
}

func benchmarkPick(b *testing.B, p Policy) {
	weights := []int{5, 1, 1, 3, 2, 4, 1, 2}
	newPool(b, p, weights...)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p.Pick(Tried{}) == nil {
				b.Fatal("no backend")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if p.Pick(Tried{}) == nil {
					b.Fatal("no backend")
				}
			}
		})
	})
}

// baseline is the cheapest possible policy: plain round-robin over one
// atomic counter, ignoring weights and load.
type baseline struct {
	bs   atomic.Pointer[[]*upstream.Backend]
	next atomic.Uint64
}

func (p *baseline) Update(s *upstream.Snapshot) { bs := eligible(s); p.bs.Store(&bs) }
func (p *baseline) Pick(Tried) *upstream.Backend {
	bs := *p.bs.Load()
	return bs[(p.next.Add(1)-1)%uint64(len(bs))]
}

func BenchmarkPickBaseline(b *testing.B)   { benchmarkPick(b, &baseline{}) }
func BenchmarkPickRoundRobin(b *testing.B) { benchmarkPick(b, NewSmoothWRR()) }
func BenchmarkPickLeastConn(b *testing.B)  { benchmarkPick(b, NewLeastConn()) }
func BenchmarkPickRandomTwo(b *testing.B)  { benchmarkPick(b, NewRandomTwo(nil)) }

// Every strategy the configuration accepts has a policy, and no other name.
func TestEveryStrategyHasAPolicy(t *testing.T) {
	for _, s := range config.Strategies {
		if _, err := New(s); err != nil {
			t.Errorf("strategy %q: %v", s, err)
		}
	}
	if len(policies) != len(config.Strategies) {
		t.Errorf("%d policies for %d strategies", len(policies), len(config.Strategies))
	}
	if _, err := New("fastest"); err == nil {
		t.Error("an unknown strategy has a policy")
	}
}
