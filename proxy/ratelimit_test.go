package proxy

import (
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/config"
	"fastlb/upstream"
)

// 60 quick requests at rate 20 and burst 20: about 20 pass, the others get
// 429 with Retry-After and reach no backend; the bucket refills.
func TestRateLimit(t *testing.T) {
	h := startHarness(t, `"rate_limit": {"rate": 20, "burst": 20},
	  "routes": [{"path_prefix": "/h/", "pool": "default", "rate_limit": {"key": "header:X-User", "rate": 1, "burst": 2}},
	             {"path_prefix": "/free/", "pool": "default", "rate_limit": {"rate": 0}}]`, 1)
	ok, limited := 0, 0
	for range 60 {
		resp, body := h.do("GET", "/", "")
		switch resp.StatusCode {
		case 200:
			ok++
		case 429:
			limited++
			if ra := resp.Header.Get("Retry-After"); ra != "1" || strings.TrimSpace(body) != `{"error": "rate limited"}` ||
				resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("429 with Retry-After %q, body %q", ra, body)
			}
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if ok < 20 || ok > 23 || ok+limited != 60 {
		t.Errorf("%d passed, %d limited; want about 20 to pass", ok, limited)
	}
	if got := h.totalRequests(); got != int64(ok) {
		t.Errorf("the backend got %d requests, %d passed: a limited one was forwarded", got, ok)
	}
	if got := h.metric(`fastlb_rate_limited_total{route=""}`); got != strconv.Itoa(limited) {
		t.Errorf("fastlb_rate_limited_total %s, want %d", got, limited)
	}
	time.Sleep(110 * time.Millisecond) // two tokens at 20 a second
	if resp, _ := h.do("GET", "/", ""); resp.StatusCode != 200 {
		t.Errorf("the bucket did not refill: %d", resp.StatusCode)
	}

	// A route's own limit, by header: each value its own bucket, and the
	// address for requests without the header.
	for _, user := range []string{"alice", "bob", ""} {
		codes := ""
		for range 3 {
			var hdr []string
			if user != "" {
				hdr = []string{"X-User", user}
			}
			resp, _ := h.do("GET", "/h/x", "", hdr...)
			codes += strconv.Itoa(resp.StatusCode) + " "
		}
		if codes != "200 200 429 " {
			t.Errorf("user %q: %s", user, codes)
		}
	}
	if got := h.metric(`fastlb_rate_limited_total{route="0"}`); got != "3" {
		t.Errorf("route 0 limited %s", got)
	}
	// A route that turns the limit off.
	for range 30 {
		if resp, _ := h.do("GET", "/free/x", ""); resp.StatusCode != 200 {
			t.Fatalf("a route without a limit: %d", resp.StatusCode)
		}
	}
}

// A flood of 60,000 distinct keys with max_keys 1000 leaves the heap as it
// was: the limiter's table is made once, whatever the keys.
func TestRateLimitKeyFlood(t *testing.T) {
	cfg, err := config.Parse([]byte(`{"backends": [], "rate_limit": {"key": "header:X-User", "rate": 1, "max_keys": 1000}}`))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	up := upstream.NewPool(nil, upstream.OptionsFor(&cfg.Pool, cfg.MaxHeaderBytes, nil, logger))
	s, unwatch, err := SettingsFor(cfg, func(string) *upstream.Pool { return up }, []byte("0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	defer unwatch()
	p := New(s, Options{Logger: logger})
	var ctx fasthttp.RequestCtx
	ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}, nil)
	var user [20]byte
	serve := func(i int) int {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetRequestURI("/")
		ctx.Request.Header.SetHost("h")
		ctx.Request.Header.SetBytesV("X-User", strconv.AppendInt(user[:0], int64(i), 10))
		p.ServeHTTP(&ctx)
		return ctx.Response.StatusCode()
	}
	for i := range 1000 { // the table and the request's buffers, warm
		serve(i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	limited := 0
	for i := range 60_000 {
		if serve(1000+i) == 429 {
			limited++
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if limited != 0 {
		t.Errorf("%d new keys found their buckets empty", limited)
	}
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 1<<20 {
		t.Errorf("the heap grew by %d bytes over 60,000 keys", grown)
	}
	if serve(7) != 404 || serve(7) != 429 {
		t.Error("a key seen again does not find its bucket")
	}
}
