package healthcheck

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"fastlb/config"
	"fastlb/testbackends"
	"fastlb/upstream"
)

func checkerFor(t *testing.T, extra string, urls ...string) (*Checker, *upstream.Pool) {
	t.Helper()
	var items []string
	for _, u := range urls {
		items = append(items, fmt.Sprintf("%q", u))
	}
	js := `{"backends": [` + strings.Join(items, ",") + `]`
	if extra != "" {
		js += ", " + extra
	}
	cfg, err := config.Parse([]byte(js + "}"))
	if err != nil {
		t.Fatal(err)
	}
	pool := upstream.NewPool(cfg.Backends, upstream.Options{Rise: 1, Fall: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return New(pool, &cfg.Pool, cfg.MaxHeaderBytes, nil), pool
}

func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestChecks(t *testing.T) {
	up, err := testbackends.Start("127.0.0.1:0", testbackends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	down, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{})
	defer down.Close()
	down.SetHealthy(false)
	dead := closedPort(t)

	tests := []struct {
		name, extra, url string
		ok               bool
		errHas           string
	}{
		{"tcp up", "", up.URL(), true, ""},
		{"tcp refused", "", dead, false, "connection refused"},
		{"http up", `"health_check_method": "http", "health_check": {"path": "/health"}`, up.URL(), true, ""},
		{"http down", `"health_check_method": "http", "health_check": {"path": "/health"}`, down.URL(), false, "status 503, want 200-399"},
		{"http tcp-alive but failing", `"health_check_method": "http", "health_check": {"path": "/status/500"}`, up.URL(), false, "status 500"},
		{"http expected status", `"health_check_method": "http", "health_check": {"path": "/status/404", "expect_status": "404"}`, up.URL(), true, ""},
		{"http refused", `"health_check_method": "http"`, dead, false, "connection refused"},
		{"http timeout", `"health_check_method": "http", "health_check": {"path": "/delay/500ms", "timeout": "100ms"}`, up.URL(), false, "timed out"},
		{"http garbage", `"health_check_method": "http", "health_check": {"path": "/garbage"}`, up.URL(), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, pool := checkerFor(t, tt.extra, tt.url)
			b := pool.Snapshot().All[0]
			r := c.Check(context.Background(), b)
			if r.OK != tt.ok || !strings.Contains(r.Err, tt.errHas) {
				t.Errorf("Check = %+v, want ok=%v with error containing %q", r, tt.ok, tt.errHas)
			}
			if r.At.IsZero() || r.Latency <= 0 {
				t.Errorf("result lacks time or latency: %+v", r)
			}
		})
	}
}

func TestRunOnceReportsEveryBackend(t *testing.T) {
	up, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{})
	defer up.Close()
	c, pool := checkerFor(t, "", up.URL(), closedPort(t))
	c.RunOnce(context.Background())
	all := pool.Snapshot().All
	if !all[0].Healthy() || all[1].Healthy() {
		t.Errorf("after one round: up=%v dead=%v", all[0].Healthy(), all[1].Healthy())
	}
	for _, b := range all {
		if b.LastCheck() == nil {
			t.Errorf("%s not checked", b.ID)
		}
	}
}

// running runs c until the test ends.
func running(t *testing.T, c *Checker) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestBackFromMaintJustAfterACheck: a backend that leaves maint right
// after its immediate check has reported, before that check counts as
// finished, is checked again at once, not an hour later.
func TestBackFromMaintJustAfterACheck(t *testing.T) {
	up, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{})
	defer up.Close()
	c, pool := checkerFor(t, `"health_check_frequency": "1h"`)
	reports := make(chan struct{}, 4)
	first := true
	c.reported = func(b *upstream.Backend) {
		if first {
			first = false
			pool.SetState(b.ID, upstream.StateMaint)
			pool.SetState(b.ID, upstream.StateActive)
		}
		reports <- struct{}{}
	}
	running(t, c)
	b, err := pool.Add(config.Backend{URL: up.URL()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		select {
		case <-reports:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d checks reported, want 2: the one after leaving maint never came", i)
		}
	}
	if !b.Checked() || !b.Healthy() {
		t.Errorf("after the check that followed maint: checked %v, healthy %v", b.Checked(), b.Healthy())
	}
}

// TestNewBackendCheckedAtOnce: with checks an hour apart, a backend added
// to the pool (or back from maint) is checked without waiting.
func TestNewBackendCheckedAtOnce(t *testing.T) {
	up, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{})
	defer up.Close()
	c, pool := checkerFor(t, `"health_check_frequency": "1h"`)
	running(t, c)
	b, err := pool.Add(config.Backend{URL: up.URL()})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !b.Healthy() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !b.Healthy() {
		t.Fatal("a new backend was not checked at once")
	}
	pool.SetState(b.ID, upstream.StateMaint)
	pool.SetState(b.ID, upstream.StateActive)
	for !b.Checked() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !b.Checked() {
		t.Fatal("a backend back from maint was not checked at once")
	}
}

// TestHTTPCheckOwnConnection: each HTTP check opens a connection of its
// own and asks for it to be closed, so that a backend restarted between
// two checks is never judged by a connection to its old process.
func TestHTTPCheckOwnConnection(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type seen struct {
		conn   int
		header string
	}
	requests := make(chan seen, 16)
	go func() {
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					requests <- seen{n, req.Header.Get("Connection")}
					// Keep-alive offered: the checker must not take it.
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	c, pool := checkerFor(t, `"health_check_method": "http"`, "http://"+ln.Addr().String())
	b := pool.Snapshot().All[0]
	conns := map[int]bool{}
	for range 3 {
		if r := c.Check(context.Background(), b); !r.OK {
			t.Fatalf("check failed: %+v", r)
		}
		s := <-requests
		conns[s.conn] = true
		if s.header != "close" {
			t.Errorf("check sent Connection %q, want close", s.header)
		}
	}
	if len(conns) != 3 {
		t.Errorf("3 checks used %d connections, want 3", len(conns))
	}
}
