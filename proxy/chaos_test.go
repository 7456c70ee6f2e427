package proxy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"fastlb/testbackends"
)

// TestRetryBudget: when every backend fails, retries stay near 20% of the
// requests instead of multiplying the load by 1+retries.
func TestRetryBudget(t *testing.T) {
	h := startHarness(t, `"health_check": {"fall": 100}, "outlier": {"consecutive_gateway_errors": 0}`, 1, 1, 1)
	const n = 300
	for range n {
		h.do("GET", "/close", "")
	}
	var retries int
	fmt.Sscan(h.metric("fastlb_retries_total"), &retries)
	// A full budget of 100 retries, then 0.2 per request; without the
	// budget every request would retry twice (600).
	if max := 100 + n/5 + 5; retries > max || retries < 100 {
		t.Errorf("%d failing requests made %d retries, want 100..%d", n, retries, max)
	}
	if got := h.metric("fastlb_retry_budget_exhausted_total"); got == "0" || got == "missing" {
		t.Errorf("budget exhaustion not counted: %s", got)
	}
	t.Logf("%d failing requests, %d retries, %s denied by the budget", n, retries, h.metric("fastlb_retry_budget_exhausted_total"))
}

// TestChaos kills and restarts backends, one at a time, while clients send
// GETs: none may fail while a healthy backend remains.
func TestChaos(t *testing.T) {
	h := startHarness(t, `"health_check_frequency": "50ms", "health_check": {"rise": 1, "fall": 2}`, 1, 1, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.checker.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	load := testbackends.StartLoad("http://"+h.addr+"/delay/2ms", 8)
	kills := 0
	for round := range 9 {
		i := round % len(h.backends)
		addr, name := h.backends[i].Addr(), h.backends[i].Name()
		h.backends[i].Close()
		kills++
		time.Sleep(150 * time.Millisecond)
		s, err := testbackends.Start(addr, testbackends.Options{Name: name})
		if err != nil {
			load.Stop() // its clients would go on sending through the rest of the tests
			t.Fatalf("restart %s: %v", addr, err)
		}
		h.backends[i] = s
		t.Cleanup(func() { s.Close() })
		time.Sleep(150 * time.Millisecond)
	}
	sent, failed, first := load.Stop()
	if failed != 0 {
		t.Errorf("%d of %d GETs failed during %d kills; first: %s", failed, sent, kills, first)
	}
	if !strings.Contains(h.logs.String(), `msg="backend down"`) || !strings.Contains(h.logs.String(), `msg="backend up"`) {
		t.Error("backends were not seen going down and coming back")
	}
	t.Logf("%d GETs, %d failed, %d kills and restarts", sent, failed, kills)
}

// startStable starts a test backend on a port below the kernel's ephemeral
// range. A backend restarted on its own port needs one: while it is down,
// any outgoing connection (fastlb's own, to the other backends) may be given
// a port from the ephemeral range, its old one included.
func startStable(opts testbackends.Options) (*testbackends.Server, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	const first = 10000
	if low <= first+100 {
		return nil, fmt.Errorf("the ephemeral port range starts at %d; no stable ports below it", low)
	}
	var err error
	for range 50 {
		port := first + rand.IntN(low-first)
		var s *testbackends.Server
		if s, err = testbackends.Start(fmt.Sprintf("127.0.0.1:%d", port), opts); err == nil {
			return s, nil
		}
	}
	return nil, err
}
