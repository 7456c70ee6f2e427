package balancer

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"testing"

	"fastlb/config"
	"fastlb/upstream"
)

// hashPool builds a pool of healthy backends with the given ids and weights
// and a Hash watching it.
func hashPool(t testing.TB, ids []string, weights []int) (*upstream.Pool, *Hash) {
	t.Helper()
	cfgs := make([]config.Backend, len(ids))
	for i, id := range ids {
		cfgs[i] = config.Backend{URL: fmt.Sprintf("http://10.0.%d.%d:8080", i/250, i%250+1), ID: id, Weight: weights[i]}
		if err := config.ResolveBackend(&cfgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	pool := upstream.NewPool(cfgs, upstream.Options{Rise: 1, Fall: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for _, b := range pool.Snapshot().All {
		pool.ReportCheck(b, upstream.CheckResult{OK: true})
	}
	h := NewHash()
	pool.Watch(h.Update)
	return pool, h
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("web-%d", i)
	}
	return out
}

func ones(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

// assign maps keys 0..n-1 ("user-i") to backend ids.
func assign(h *Hash, n int) []string {
	out := make([]string, n)
	for i := range out {
		b, _ := h.PickKey(HashKey([]byte("user-"+strconv.Itoa(i))), Tried{})
		if b != nil {
			out[i] = b.ID
		}
	}
	return out
}

func counts(ids []string) map[string]int {
	c := map[string]int{}
	for _, id := range ids {
		c[id]++
	}
	return c
}

const keys = 10000

func TestHashSameKeySameBackend(t *testing.T) {
	_, h := hashPool(t, names(5), ones(5))
	first := assign(h, 1000)
	for round := range 5 {
		for i, id := range assign(h, 1000) {
			if id != first[i] {
				t.Fatalf("round %d: key %d moved from %s to %s", round, i, first[i], id)
			}
		}
	}
}

func TestHashSpread(t *testing.T) {
	_, h := hashPool(t, names(5), ones(5))
	c := counts(assign(h, keys))
	mean := float64(keys) / 5
	for id, n := range c {
		if float64(n) > 1.1*mean {
			t.Errorf("%s has %d keys, more than 1.1x the mean %.0f: %v", id, n, mean, c)
		}
	}
	if len(c) != 5 {
		t.Errorf("keys reached %d backends: %v", len(c), c)
	}
}

func TestHashWeights(t *testing.T) {
	_, h := hashPool(t, names(5), []int{3, 1, 1, 1, 1})
	c := counts(assign(h, keys))
	share := float64(c["web-0"]) / keys
	if math.Abs(share-3.0/7)/(3.0/7) > 0.10 {
		t.Errorf("weight 3 of 7 took %.3f of keys, want 3/7 within 10%%: %v", share, c)
	}
}

// TestHashDisruption removes one of five backends and adds it back; and
// takes one down and up again.
func TestHashDisruption(t *testing.T) {
	for _, how := range []string{"remove", "down"} {
		t.Run(how, func(t *testing.T) { testDisruption(t, how) })
	}
}

func testDisruption(t *testing.T, how string) {
	pool, h := hashPool(t, names(5), ones(5))
	before := assign(h, keys)
	victim := pool.Snapshot().Lookup("web-2")
	if how == "remove" {
		pool.Remove("web-2")
	} else {
		pool.SetState("web-2", upstream.StateMaint)
	}
	during := assign(h, keys)
	moved, others := 0, 0
	for i := range before {
		if before[i] == "web-2" {
			if during[i] == "web-2" {
				t.Fatalf("key %d still on the removed backend", i)
			}
			continue
		}
		others++
		if during[i] != before[i] {
			moved++
		}
	}
	if frac := float64(moved) / float64(others); frac > 0.02 {
		t.Errorf("removing 1 of 5 moved %.2f%% of the other backends' keys, want at most 2%%", 100*frac)
	} else {
		t.Logf("removing 1 of 5 moved %.2f%% of the other backends' keys", 100*frac)
	}
	if how == "remove" {
		b, err := pool.Add(config.Backend{URL: victim.URL, ID: victim.ID, Weight: 1})
		if err != nil {
			t.Fatal(err)
		}
		pool.ReportCheck(b, upstream.CheckResult{OK: true})
	} else {
		pool.SetState("web-2", upstream.StateActive)
		pool.ReportCheck(victim, upstream.CheckResult{OK: true})
	}
	after := assign(h, keys)
	same := 0
	for i := range before {
		if after[i] == before[i] {
			same++
		}
	}
	if frac := float64(same) / keys; frac < 0.97 {
		t.Errorf("adding it back restored %.2f%% of the mapping, want at least 97%%", 100*frac)
	} else {
		t.Logf("adding it back restored %.2f%% of the mapping", 100*frac)
	}
}

// TestHashInstancesAgree builds two tables independently, from backends
// listed in different orders, and compares every key.
func TestHashInstancesAgree(t *testing.T) {
	ids := names(7)
	weights := []int{1, 2, 3, 1, 5, 1, 1}
	_, h1 := hashPool(t, ids, weights)
	rev := make([]string, len(ids))
	revW := make([]int, len(ids))
	for i := range ids {
		rev[i], revW[i] = ids[len(ids)-1-i], weights[len(ids)-1-i]
	}
	_, h2 := hashPool(t, rev, revW)
	a, b := assign(h1, keys), assign(h2, keys)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("key %d: %s on one instance, %s on the other", i, a[i], b[i])
		}
	}
}

func TestHashSkipsTriedAndGone(t *testing.T) {
	pool, h := hashPool(t, names(3), ones(3))
	key := HashKey([]byte("user-42"))
	b, primary := h.PickKey(key, Tried{})
	if b == nil || !primary {
		t.Fatal("no primary backend")
	}
	var tried Tried
	tried.Add(b)
	c, primary := h.PickKey(key, tried)
	if c == nil || c == b || primary {
		t.Fatalf("retry picked %v (primary %v), want another backend", c, primary)
	}
	if again, _ := h.PickKey(key, tried); again != c {
		t.Error("the fallback for a key is not stable")
	}
	// Draining keeps the key; maint moves it.
	pool.SetState(b.ID, upstream.StateDrain)
	if got, _ := h.PickKey(key, Tried{}); got != b {
		t.Errorf("a draining backend lost its sticky key to %v", got)
	}
	pool.SetState(b.ID, upstream.StateMaint)
	if got, primary := h.PickKey(key, Tried{}); got == b || got == nil || primary {
		t.Errorf("maint: picked %v (primary %v), want another backend, not primary", got, primary)
	}
	pool.SetState(b.ID, upstream.StateActive)
	for _, x := range pool.Snapshot().All {
		pool.SetWeight(x.ID, 0)
	}
	if got, _ := h.PickKey(key, Tried{}); got != nil {
		t.Errorf("with every weight 0 picked %s", got.ID)
	}
}

func TestHashBoundedLoads(t *testing.T) {
	pool, h := hashPool(t, names(4), ones(4))
	h.SetBalanceFactor(1.25)
	key := HashKey([]byte("hot-key"))
	own, _ := h.PickKey(key, Tried{})
	// Give the key's backend far more than its share.
	for range 10 {
		own.Acquire()
	}
	for _, b := range pool.Snapshot().All {
		if b != own {
			b.Acquire()
		}
	}
	got, primary := h.PickKey(key, Tried{})
	if got == own || primary {
		t.Errorf("an overloaded backend (10 in flight, others 1) kept the hot key")
	}
	h.SetBalanceFactor(0)
	if got, _ := h.PickKey(key, Tried{}); got != own {
		t.Error("without bounded loads the key must stay")
	}
}

func TestTableSize(t *testing.T) {
	for n, want := range map[int]int{1: 65537, 655: 65537, 656: 65609, 1000: 100003} {
		if got := tableSize(n); got != want {
			t.Errorf("tableSize(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestCookies(t *testing.T) {
	pool, _ := hashPool(t, []string{"a", "b"}, []int{1, 1})
	c := NewCookies([]byte("0123456789abcdef"))
	pool.Watch(c.Update)
	a := pool.Snapshot().Lookup("a")
	v := c.Value(a)
	if !strings.HasPrefix(v, "v1.") || len(v) != 19 || strings.Contains(v, "10.0.0.1") || strings.Contains(v, "8080") {
		t.Errorf("cookie value %q", v)
	}
	if c.Lookup([]byte(v)) != a || c.Lookup([]byte("v1.AAAAAAAAAAAAAAAA")) != nil || c.Lookup(nil) != nil {
		t.Error("lookup wrong")
	}
	if other := NewCookies([]byte("another-secret-xx")); CookieValue(other.secret, "a") == v {
		t.Error("the value does not depend on the secret")
	}
	pool.Remove("a")
	if c.Lookup([]byte(v)) != nil {
		t.Error("a removed backend's cookie still resolves")
	}
}

func TestHashAllocations(t *testing.T) {
	_, h := hashPool(t, names(5), ones(5))
	h.SetBalanceFactor(1.25)
	c := NewCookies([]byte("0123456789abcdef"))
	key := []byte("user-7")
	v := []byte(CookieValue([]byte("0123456789abcdef"), "web-1"))
	if n := testing.AllocsPerRun(1000, func() {
		b, _ := h.PickKey(HashKey(key), Tried{})
		_ = c.Lookup(v)
		_ = c.Value(b)
	}); n != 0 {
		t.Errorf("%.1f allocations per sticky pick", n)
	}
}

func BenchmarkPickHash(b *testing.B) {
	for _, n := range []int{5, 100} {
		_, h := hashPool(b, names(n), ones(n))
		keys := make([][]byte, 1024)
		for i := range keys {
			keys[i] = []byte("203.0.113." + strconv.Itoa(i))
		}
		b.Run(fmt.Sprintf("backends=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				h.PickKey(HashKey(keys[i&1023]), Tried{})
				i++
			}
		})
		b.Run(fmt.Sprintf("backends=%d/bounded", n), func(b *testing.B) {
			h.SetBalanceFactor(1.25)
			defer h.SetBalanceFactor(0)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				h.PickKey(HashKey(keys[i&1023]), Tried{})
				i++
			}
		})
		b.Run(fmt.Sprintf("backends=%d/parallel", n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					h.PickKey(HashKey(keys[i&1023]), Tried{})
					i++
				}
			})
		})
	}
}

func BenchmarkPickCookie(b *testing.B) {
	pool, _ := hashPool(b, names(20), ones(20))
	c := NewCookies([]byte("0123456789abcdef"))
	pool.Watch(c.Update)
	v := []byte(c.Value(pool.Snapshot().All[7]))
	b.ReportAllocs()
	for b.Loop() {
		if c.Lookup(v) == nil {
			b.Fatal("lookup failed")
		}
	}
}

func BenchmarkHashBuild(b *testing.B) {
	for _, n := range []int{5, 100, 1000} {
		ids, w := names(n), ones(n)
		b.Run(fmt.Sprintf("backends=%d", n), func(b *testing.B) {
			for b.Loop() {
				maglevTable(ids, w)
			}
		})
	}
}
