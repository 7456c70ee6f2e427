package ratelimit

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	l := New(20, 20, 1000)
	now := time.Unix(1000, 0)
	key := Key('a', []byte("192.0.2.1"))
	passed := 0
	var wait time.Duration
	for range 60 {
		ok, w := l.Allow(key, now)
		if ok {
			passed++
		} else {
			wait = w
		}
	}
	if passed != 20 {
		t.Errorf("%d of 60 at once passed, want the burst of 20", passed)
	}
	if wait != 50*time.Millisecond || RetryAfter(wait) != 1 {
		t.Errorf("wait %v, Retry-After %d", wait, RetryAfter(wait))
	}
	// Another key has its own bucket.
	if ok, _ := l.Allow(Key('a', []byte("192.0.2.2")), now); !ok {
		t.Error("a second key was limited by the first")
	}
	// The same bytes as a header value are another key.
	if Key('h', []byte("192.0.2.1")) == key {
		t.Error("address and header value share a key")
	}
	// The bucket refills at the rate: one token per 50 ms.
	if ok, _ := l.Allow(key, now.Add(49*time.Millisecond)); ok {
		t.Error("a token before its time")
	}
	if ok, _ := l.Allow(key, now.Add(50*time.Millisecond)); !ok {
		t.Error("no token after 50 ms")
	}
	later := now.Add(time.Hour)
	passed = 0
	for range 30 {
		if ok, _ := l.Allow(key, later); ok {
			passed++
		}
	}
	if passed != 20 {
		t.Errorf("after an hour, %d passed: the bucket holds at most the burst", passed)
	}
}

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		wait time.Duration
		want int
	}{{0, 1}, {time.Millisecond, 1}, {time.Second, 1}, {time.Second + 1, 2}, {2500 * time.Millisecond, 3}} {
		if got := RetryAfter(tc.wait); got != tc.want {
			t.Errorf("RetryAfter(%v) = %d, want %d", tc.wait, got, tc.want)
		}
	}
	// A slow rate: one token every 10 s.
	l := New(0.1, 1, 8)
	now := time.Unix(0, 0)
	l.Allow(1, now)
	if ok, wait := l.Allow(1, now.Add(time.Second)); ok || RetryAfter(wait) != 9 {
		t.Errorf("ok %v wait %v", ok, wait)
	}
}

// A flood of new keys costs no memory beyond the table, and forgets the
// least recently seen keys first.
func TestBoundedKeys(t *testing.T) {
	l := New(1, 1, 1000)
	if l.Keys() != 1024 {
		t.Fatalf("Keys() = %d", l.Keys())
	}
	now := time.Unix(0, 0)
	hot := Key('a', []byte("hot"))
	l.Allow(hot, now)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var addr [4]byte
	for i := range 100_000 {
		now = now.Add(time.Microsecond)
		addr = [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
		l.Allow(Key('a', addr[:]), now)
		if i%64 == 0 {
			l.Allow(hot, now) // seen often: kept
		}
	}
	runtime.ReadMemStats(&after)
	if ok, _ := l.Allow(hot, now); ok {
		t.Error("the hot key was forgotten (its bucket is empty, so it must be refused)")
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 0 {
		t.Errorf("heap grew by %d bytes for 100,000 keys", grown)
	}
}

func TestAllowAllocs(t *testing.T) {
	l := New(100, 10, 100)
	now := time.Now()
	b := []byte("203.0.113.7")
	if n := testing.AllocsPerRun(1000, func() { l.Allow(Key('a', b), now) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

// BenchmarkRateLimit: one key (every request of one client), and many
// keys, serial and in parallel.
func BenchmarkRateLimit(b *testing.B) {
	l := New(1e9, 1e6, 100_000)
	keys := make([]uint64, 4096)
	for i := range keys {
		keys[i] = Key('a', fmt.Appendf(nil, "198.51.%d.%d", i>>8, i&255))
	}
	now := time.Now()
	b.Run("serial-one-key", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l.Allow(keys[0], now)
		}
	})
	b.Run("serial-4096-keys", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			l.Allow(keys[i&4095], now)
			i++
		}
	})
	b.Run("parallel-4096-keys", func(b *testing.B) {
		b.ReportAllocs()
		var seed atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(977))
			for pb.Next() {
				l.Allow(keys[i&4095], now)
				i++
			}
		})
	})
	b.Run("parallel-hash-and-allow", func(b *testing.B) {
		b.ReportAllocs()
		addr := []byte("203.0.113.7")
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow(Key('a', addr), now)
			}
		})
	})
}
