package loadgen

import (
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// arrivals serves 200 on 127.0.0.1:0 and records when each connection's
// requests arrived.
type arrivals struct {
	mu    sync.Mutex
	times map[uint64][]time.Time
	addr  string
}

func serveArrivals(t *testing.T) *arrivals {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &arrivals{times: map[uint64][]time.Time{}, addr: ln.Addr().String()}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		a.mu.Lock()
		a.times[ctx.ConnID()] = append(a.times[ctx.ConnID()], time.Now())
		a.mu.Unlock()
	}}
	go srv.Serve(ln) //nolint:errcheck // ends with the listener
	t.Cleanup(func() { srv.Shutdown() })
	return a
}

// bursts groups each connection's requests into runs separated by pauses
// longer than gap, and returns the runs' sizes per connection.
func (a *arrivals) bursts(gap time.Duration) [][]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	var all [][]int
	for _, ts := range a.times {
		sizes := []int{1}
		for i := 1; i < len(ts); i++ {
			if ts[i].Sub(ts[i-1]) > gap {
				sizes = append(sizes, 0)
			}
			sizes[len(sizes)-1]++
		}
		all = append(all, sizes)
	}
	return all
}

func TestBursts(t *testing.T) {
	a := serveArrivals(t)
	// 2 connections, bursts of 1 and 3 in turn (2 requests per burst on
	// average), 20 requests/s: each connection starts a burst every 200 ms.
	res, err := Run(Config{Addr: a.addr, Conns: 2, KeepAlive: true, Rate: 20, Bursts: []int{1, 3}, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Fatalf("%d errors: %s", res.Errors, res.FirstErr)
	}
	if res.Requests < 16 || res.Requests > 24 {
		t.Errorf("%d requests in 1 s at 20/s", res.Requests)
	}
	conns := a.bursts(50 * time.Millisecond)
	if len(conns) != 2 {
		t.Fatalf("%d connections, want 2", len(conns))
	}
	starts := 0
	for _, sizes := range conns {
		if len(sizes) < 4 {
			t.Fatalf("bursts %v: want about 5 in 1 s", sizes)
		}
		if sizes[0] == 1 {
			starts++
		}
		for i, n := range sizes {
			if want := []int{1, 3}[(i+slices.Index([]int{1, 3}, sizes[0]))%2]; n != want {
				t.Fatalf("bursts %v: want 1 and 3 in turn", sizes)
			}
		}
	}
	if starts != 1 {
		t.Errorf("bursts %v: the connections should start at different places in the cycle", conns)
	}
}

func TestOneRequestAtATime(t *testing.T) {
	a := serveArrivals(t)
	res, err := Run(Config{Addr: a.addr, Conns: 2, KeepAlive: true, Rate: 20, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests < 16 || res.Requests > 24 {
		t.Errorf("%d requests in 1 s at 20/s", res.Requests)
	}
	for _, sizes := range a.bursts(50 * time.Millisecond) {
		for _, n := range sizes {
			if n != 1 {
				t.Fatalf("requests %v apart by less than 50 ms, want every 100 ms", sizes)
			}
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no connections", Config{Addr: "127.0.0.1:1"}, "loadgen: Conns must be at least 1"},
		{"empty burst", Config{Addr: "127.0.0.1:1", Conns: 1, Rate: 10, Bursts: []int{2, 0}}, "loadgen: burst of 0 requests"},
		{"bursts closed loop", Config{Addr: "127.0.0.1:1", Conns: 1, Bursts: []int{2}}, "loadgen: Bursts need a Rate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(tc.cfg)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// TestWarmup: the answers to requests due in the warm-up are neither
// counted nor timed, but their cookies are kept.
func TestWarmup(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	all, withoutCookie := 0, 0
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		all++
		first := len(ctx.Request.Header.Cookie("s")) == 0
		if first {
			withoutCookie++
		}
		mu.Unlock()
		if first {
			// A cold start: the first answer on each connection is slow.
			time.Sleep(300 * time.Millisecond)
			ctx.Response.Header.Set("Set-Cookie", "s=1")
		}
	}}
	go srv.Serve(ln) //nolint:errcheck // ends with the listener
	defer srv.Shutdown()

	res, err := Run(Config{Addr: ln.Addr().String(), Conns: 2, KeepAlive: true, Rate: 20, CookieJar: true,
		Warmup: 500 * time.Millisecond, Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if withoutCookie != 2 {
		t.Errorf("%d requests without the cookie, want one per connection", withoutCookie)
	}
	if res.Requests < 16 || res.Requests > 24 || int64(all) < res.Requests+8 {
		t.Errorf("%d requests counted of %d sent; want those of 1 s at 20/s, not the warm-up's", res.Requests, all)
	}
	if res.Errors != 0 {
		t.Errorf("%d errors (%s)", res.Errors, res.FirstErr)
	}
	if slowest := res.Percentile(100); slowest >= 100*time.Millisecond {
		t.Errorf("slowest counted answer took %v: the warm-up's slow first answers were timed", slowest)
	}
	if res.Elapsed < 900*time.Millisecond || res.Elapsed > 1500*time.Millisecond {
		t.Errorf("elapsed %v, want the measured second", res.Elapsed)
	}
}
