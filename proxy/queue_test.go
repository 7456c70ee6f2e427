package proxy

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"fastlb/config"
	"fastlb/testbackends"
)

// startLimited starts fastlb in front of one backend with max_conns limit.
func startLimited(t *testing.T, limit int, extra string) *harness {
	t.Helper()
	s, err := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cfg, err := config.Parse([]byte(fmt.Sprintf(`{"backends": [{"url": %q, "id": "a", "max_conns": %d}], %s}`, s.URL(), limit, extra)))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, logs: &syncBuffer{}, access: &syncBuffer{}, backends: []*testbackends.Server{s}}
	h.start(cfg)
	return h
}

// burst sends n concurrent GETs of path and returns their statuses.
func (h *harness) burst(n int, path string) map[int]int {
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, _ := h.do("GET", path, "")
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return codes
}

// TestQueue: requests beyond max_conns wait for room instead of failing,
// for at most queue_timeout.
func TestQueue(t *testing.T) {
	tests := []struct {
		name   string
		extra  string
		codes  map[int]int
		queued bool
	}{
		{"waits its turn", `"queue_timeout": "5s"`, map[int]int{200: 6}, true},
		{"no queue", `"queue_timeout": "0s"`, map[int]int{200: 2, 503: 4}, false},
		{"queue too short", `"queue_timeout": "50ms"`, map[int]int{200: 2, 503: 4}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startLimited(t, 2, tt.extra)
			start := time.Now()
			codes := h.burst(6, "/delay/500ms")
			if fmt.Sprint(codes) != fmt.Sprint(tt.codes) {
				t.Errorf("statuses %v, want %v", codes, tt.codes)
			}
			queued := h.metric("fastlb_queued_total")
			if (queued != "0") != tt.queued {
				t.Errorf("fastlb_queued_total %s, want queueing %v", queued, tt.queued)
			}
			if got, want := h.metric("fastlb_queue_timeouts_total"), fmt.Sprint(tt.codes[503]); tt.queued && got != want {
				t.Errorf("fastlb_queue_timeouts_total %s, want %s", got, want)
			}
			if h.metric("fastlb_queued_requests") != "0" {
				t.Errorf("fastlb_queued_requests %s after the burst", h.metric("fastlb_queued_requests"))
			}
			if tt.codes[503] > 0 && !strings.Contains(h.logs.String(), `msg="no backend available" cause="every one is at max_conns"`) {
				t.Errorf("the 503s were not logged with their cause:\n%s", h.logs)
			}
			t.Logf("%v in %v", codes, time.Since(start).Round(time.Millisecond))
		})
	}
}
