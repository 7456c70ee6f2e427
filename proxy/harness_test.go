package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"fastlb/config"
	"fastlb/frontend"
	"fastlb/healthcheck"
	"fastlb/testbackends"
	"fastlb/tlsconf"
	"fastlb/upstream"
)

// harness is a real fastlb request path on 127.0.0.1:0 in front of real test
// backends.
type harness struct {
	t         *testing.T
	backends  []*testbackends.Server
	cfg       *config.Config
	pool      *upstream.Pool            // the default pool
	pools     map[string]*upstream.Pool // every pool by name
	checker   *healthcheck.Checker      // the default pool's
	server    *frontend.Server
	addr      string
	client    *http.Client
	logs      *syncBuffer
	access    *syncBuffer // the access log's output
	accessLog *AccessLog
	metrics   *metrics.Set
	proxy     *Proxy
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startHarness starts one backend per weight and fastlb in front of them.
// extra is merged into the configuration JSON (e.g. `"strategy": "least-conn"`).
//
// The backends listen below the kernel's ephemeral port range
// (startStable): many tests close a backend and expect its port to refuse
// connections, and a port the kernel handed out could meanwhile go to a
// test backend of another package's tests, running at the same time.
func startHarness(t *testing.T, extra string, weights ...int) *harness {
	t.Helper()
	return startHarnessWith(t, startStable, extra, weights...)
}

// startHarnessWith is startHarness with the backends started by start.
func startHarnessWith(t *testing.T, start func(testbackends.Options) (*testbackends.Server, error), extra string, weights ...int) *harness {
	t.Helper()
	h := &harness{t: t, logs: &syncBuffer{}, access: &syncBuffer{}}
	var items []string
	for i, w := range weights {
		s, err := start(testbackends.Options{Name: string(rune('a' + i))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		h.backends = append(h.backends, s)
		items = append(items, fmt.Sprintf(`{"url": %q, "weight": %d, "id": %q}`, s.URL(), w, s.Name()))
	}
	js := `{"port": 1, "admin_port": 2, "backends": [` + strings.Join(items, ",") + `]`
	if extra != "" {
		js += ", " + extra
	}
	js += "}"
	cfg, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatalf("config %s: %v", js, err)
	}
	h.start(cfg)
	return h
}

func (h *harness) start(cfg *config.Config) {
	t := h.t
	h.cfg = cfg
	logger := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.pools = map[string]*upstream.Pool{}
	backendTLS, err := tlsconf.BackendConfig(cfg.BackendTLS)
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range cfg.AllPools() {
		up := upstream.NewPool(pc.Backends, upstream.OptionsFor(pc, cfg.MaxHeaderBytes, backendTLS, logger))
		h.pools[pc.Name] = up
		checker := healthcheck.New(up, pc, cfg.MaxHeaderBytes, backendTLS)
		checker.RunOnce(context.Background())
		if pc.Name == config.DefaultPool {
			h.pool, h.checker = up, checker
		}
	}
	settings, unwatch, err := SettingsFor(cfg, func(name string) *upstream.Pool { return h.pools[name] }, []byte("harness-secret-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unwatch)
	h.accessLog = NewAccessLog(h.access)
	h.metrics = metrics.NewSet()
	p := New(settings, Options{Logger: logger, AccessLog: h.accessLog, Metrics: h.metrics,
		MaxRequestBody: cfg.MaxRequestBody, ClientReadTimeout: cfg.ClientReadTimeout})
	h.proxy = p
	fopts := frontend.FromConfig(cfg)
	fopts.ErrorHandler, fopts.Logger = ErrorHandler, logger
	h.server = frontend.New(p.ServeHTTP, fopts)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { h.server.Serve(ln); close(done) }()
	h.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	t.Cleanup(func() {
		h.server.Shutdown()
		<-done
		h.client.CloseIdleConnections()
		for _, up := range h.pools {
			up.Close()
		}
		h.accessLog.Close()
	})
}

// do sends a request through fastlb and returns the response with its body read.
func (h *harness) do(method, path string, body string, hdr ...string) (*http.Response, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, "http://"+h.addr+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
		} else {
			req.Header.Add(hdr[i], hdr[i+1])
		}
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp, string(b)
}

// get sends a GET and returns the status and the answering backend.
func (h *harness) get(path string) (int, string) {
	h.t.Helper()
	resp, _ := h.do("GET", path, "")
	return resp.StatusCode, resp.Header.Get("X-Backend")
}

// echo sends a request to /echo... and decodes what the backend received.
func (h *harness) echo(method, path, body string, hdr ...string) (*http.Response, testbackends.Echo) {
	h.t.Helper()
	resp, b := h.do(method, path, body, hdr...)
	var e testbackends.Echo
	if err := json.Unmarshal([]byte(b), &e); err != nil {
		h.t.Fatalf("status %d, body %q: %v", resp.StatusCode, b, err)
	}
	return resp, e
}

// raw writes raw bytes on a new connection and returns everything fastlb
// answers until it closes the connection or goes quiet.
func (h *harness) raw(request string) string {
	h.t.Helper()
	out, _ := h.rawClosed(request)
	return out
}

// rawClosed is raw, also reporting whether fastlb closed the connection
// (rather than going quiet for two seconds).
func (h *harness) rawClosed(request string) (string, bool) {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, request); err != nil {
		h.t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	out, err := io.ReadAll(bufio.NewReader(c))
	var netErr net.Error
	return string(out), !errors.As(err, &netErr) || !netErr.Timeout()
}

func (h *harness) totalRequests() int64 {
	var n int64
	for _, b := range h.backends {
		n += b.Requests()
	}
	return n
}

// waitFor polls cond until it holds or a generous limit passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
