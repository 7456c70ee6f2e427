package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"fastlb/testbackends"
	"fastlb/upstream"
)

// startWith starts a harness whose backends a, b, c, ... are started with
// the options opts gives each name.
func startWith(t *testing.T, extra string, opts func(name string) testbackends.Options, weights ...int) *harness {
	t.Helper()
	return startHarnessWith(t, func(o testbackends.Options) (*testbackends.Server, error) {
		name := o.Name
		o = opts(name)
		o.Name = name
		return testbackends.Start("127.0.0.1:0", o)
	}, extra, weights...)
}

func (h *harness) backend(id string) *upstream.Backend {
	h.t.Helper()
	b := h.pool.Snapshot().Lookup(id)
	if b == nil {
		h.t.Fatalf("no backend %s", id)
	}
	return b
}

// TestOutlier5xx: a backend answering 503 to everything stops getting
// requests after consecutive_5xx of them, and gets them again after
// base_ejection_time.
func TestOutlier5xx(t *testing.T) {
	h := startWith(t, `"outlier": {"consecutive_5xx": 5, "base_ejection_time": "1s"}`, func(name string) testbackends.Options {
		if name == "c" {
			return testbackends.Options{ErrorRate: 1}
		}
		return testbackends.Options{}
	}, 1, 1, 1)
	c := h.backends[2]
	errors := 0
	for range 30 {
		if resp, _ := h.do("GET", "/", ""); resp.StatusCode == 500 {
			errors++
		}
	}
	if errors != 5 {
		t.Errorf("%d answers of 500, want 5 (consecutive_5xx)", errors)
	}
	ejected, until := h.backend("c").Ejected()
	if !ejected || time.Until(until) > time.Second {
		t.Fatalf("c: ejected %v until %v", ejected, until)
	}
	if got := h.metric(`fastlb_outlier_ejections_total{pool="default",backend="c",reason="consecutive_5xx"}`); got != "1" {
		t.Errorf("ejections by 5xx: %s", got)
	}
	if got := h.metric(`fastlb_backend_ejected{pool="default",backend="c"}`); got != "1" {
		t.Errorf("fastlb_backend_ejected: %s", got)
	}
	before := c.Requests()
	for range 30 {
		if resp, _ := h.do("GET", "/", ""); resp.StatusCode != 200 {
			t.Fatalf("with c ejected: %d", resp.StatusCode)
		}
	}
	if c.Requests() != before {
		t.Errorf("the ejected backend got %d requests", c.Requests()-before)
	}
	waitFor(t, "the ejection to end", func() bool { e, _ := h.backend("c").Ejected(); return !e })
	for range 30 {
		h.do("GET", "/", "")
	}
	if c.Requests() == before {
		t.Error("c got no requests after its ejection ended")
	}
	if !strings.Contains(h.logs.String(), `msg="backend ejected" pool=default backend=c reason=consecutive_5xx in_a_row=5 for=1s`) {
		t.Errorf("ejection not logged:\n%s", h.logs.String())
	}
	// Ejected again at once, for twice as long: the second ejection.
	waitFor(t, "the second ejection", func() bool { e, _ := h.backend("c").Ejected(); return e })
	if _, until := h.backend("c").Ejected(); time.Until(until) < time.Second {
		t.Errorf("the second ejection ends in %v, want about 2 s", time.Until(until))
	}
}

// TestOutlierHang: a backend that accepts requests and never answers in
// time is ejected after consecutive_gateway_errors timeouts; later
// requests do not wait for it.
func TestOutlierHang(t *testing.T) {
	h := startWith(t, `"backend_timeout": "200ms", "outlier": {"consecutive_gateway_errors": 3}`, func(name string) testbackends.Options {
		if name == "c" {
			return testbackends.Options{Latency: 2 * time.Second}
		}
		return testbackends.Options{}
	}, 1, 1, 1)
	timeouts := 0
	for range 12 {
		if resp, _ := h.do("GET", "/", ""); resp.StatusCode == 504 {
			timeouts++
		}
	}
	if timeouts != 3 {
		t.Errorf("%d answers of 504, want 3 (consecutive_gateway_errors)", timeouts)
	}
	if e, _ := h.backend("c").Ejected(); !e {
		t.Fatal("the hanging backend is not ejected")
	}
	for range 20 {
		start := time.Now()
		resp, _ := h.do("GET", "/", "")
		if d := time.Since(start); resp.StatusCode != 200 || d > 150*time.Millisecond {
			t.Errorf("with the hanging backend ejected: %d after %v", resp.StatusCode, d)
		}
	}
	if got := h.metric(`fastlb_outlier_ejections_total{pool="default",backend="c",reason="consecutive_gateway_errors"}`); got != "1" {
		t.Errorf("ejections by gateway errors: %s", got)
	}
}

// TestOutlierMaxPercent: with every backend failing, at most
// max_ejection_percent of them (but at least one) are ejected, and every
// request still reaches a backend.
func TestOutlierMaxPercent(t *testing.T) {
	for _, tt := range []struct {
		percent, backends, want int
	}{
		{50, 3, 1},
		{50, 4, 2},
		{0, 3, 1},   // at least one may always be
		{100, 3, 2}, // never the last that can take requests
	} {
		t.Run(fmt.Sprintf("%d%% of %d", tt.percent, tt.backends), func(t *testing.T) {
			weights := make([]int, tt.backends)
			for i := range weights {
				weights[i] = 1
			}
			h := startWith(t, fmt.Sprintf(`"outlier": {"consecutive_5xx": 2, "max_ejection_percent": %d}`, tt.percent),
				func(string) testbackends.Options { return testbackends.Options{ErrorRate: 1} }, weights...)
			for i := range 60 {
				resp, body := h.do("GET", "/", "")
				if resp.StatusCode != 500 || resp.Header.Get("X-Backend") == "" {
					t.Fatalf("request %d: %d %q, want the backend's own 500", i, resp.StatusCode, body)
				}
			}
			ejected := 0
			for _, b := range h.pool.Snapshot().All {
				if e, _ := b.Ejected(); e {
					ejected++
				}
			}
			if ejected != tt.want {
				t.Errorf("%d ejected, want %d", ejected, tt.want)
			}
		})
	}
}

// TestSlowStart: a backend back from maint with slow_start 6s gets under a
// fifth of its share in its first second, and its full share once the
// ramp is over.
func TestSlowStart(t *testing.T) {
	h := startHarness(t, `"slow_start": "6s"`, 1, 1, 1)
	if _, err := h.pool.SetState("c", upstream.StateMaint); err != nil {
		t.Fatal(err)
	}
	c := h.backends[2]
	share := func(d time.Duration) float64 {
		before, n := c.Requests(), 0
		for start := time.Now(); time.Since(start) < d; n++ {
			h.do("GET", "/", "")
		}
		return float64(c.Requests()-before) / float64(n)
	}
	if _, err := h.pool.SetState("c", upstream.StateActive); err != nil {
		t.Fatal(err)
	}
	if w := h.backend("c").EffectiveWeight(); w >= 0.1 {
		t.Errorf("effective weight %.3f just back", w)
	}
	first := share(time.Second)
	time.Sleep(5 * time.Second)
	if w := h.backend("c").EffectiveWeight(); w != 1 {
		t.Errorf("effective weight %.3f after the ramp", w)
	}
	full := share(time.Second)
	t.Logf("c's share: %.3f in its first second, %.3f after the ramp", first, full)
	if first >= 1.0/3/5 {
		t.Errorf("c took %.3f of the requests in its first second, want under a fifth of 1/3", first)
	}
	if full < 0.28 || full > 0.39 {
		t.Errorf("c took %.3f of the requests after the ramp, want about 1/3", full)
	}
}
