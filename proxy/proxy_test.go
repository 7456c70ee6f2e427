package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"fastlb/upstream"
)

func TestRoundRobinDistribution(t *testing.T) {
	h := startHarness(t, "", 1, 1, 1)
	counts := map[string]int{}
	for range 30 {
		code, b := h.get("/")
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		counts[b]++
	}
	if counts["a"] != 10 || counts["b"] != 10 || counts["c"] != 10 {
		t.Errorf("30 requests over three backends: %v, want 10 each", counts)
	}
}

func TestWeightedRoundRobinPattern(t *testing.T) {
	h := startHarness(t, "", 5, 1, 1)
	var seq strings.Builder
	for range 14 {
		_, b := h.get("/")
		seq.WriteString(b)
	}
	if got := seq.String(); got != "aabacaaaabacaa" {
		t.Errorf("weights 5,1,1 gave %q, want aabacaa twice", got)
	}
}

func TestWeightZeroGetsNoTraffic(t *testing.T) {
	h := startHarness(t, "", 1, 0)
	for range 10 {
		if _, b := h.get("/"); b != "a" {
			t.Fatalf("request went to %q, a weight-0 backend", b)
		}
	}
}

func TestLeastConnAvoidsBusyBackend(t *testing.T) {
	h := startHarness(t, `"strategy": "least-conn"`, 1, 1, 1)
	var wg sync.WaitGroup
	busy := make(chan string, 1)
	wg.Go(func() {
		resp, _ := h.do("GET", "/delay/400ms", "")
		busy <- resp.Header.Get("X-Backend")
	})
	// Wait until the slow request is in flight, then note where it is.
	var slow *upstream.Backend
	waitFor(t, "the slow request to be in flight", func() bool {
		for _, b := range h.pool.Snapshot().All {
			if b.Active() == 1 {
				slow = b
				return true
			}
		}
		return false
	})
	for range 12 {
		if _, b := h.get("/"); b == slow.ID {
			t.Fatalf("least-conn sent a request to %s, which is busy", b)
		}
	}
	wg.Wait()
	if got := <-busy; got != slow.ID {
		t.Errorf("slow request answered by %s, in flight on %s", got, slow.ID)
	}
}

func TestRandomTwoUsesEveryBackend(t *testing.T) {
	h := startHarness(t, `"strategy": "random-two"`, 1, 1, 1)
	counts := map[string]int{}
	for range 300 {
		code, b := h.get("/")
		if code != 200 {
			t.Fatalf("status %d", code)
		}
		counts[b]++
	}
	for _, id := range []string{"a", "b", "c"} {
		if counts[id] < 50 {
			t.Errorf("random-two: %v; %s got too few of 300", counts, id)
		}
	}
}

func TestKilledBackendCostsNoFailedGET(t *testing.T) {
	h := startHarness(t, "", 1, 1, 1)
	h.backends[1].Close()
	for i := range 60 {
		if code, b := h.get("/"); code != 200 || b == "b" {
			t.Fatalf("GET %d after killing b: status %d from %q", i, code, b)
		}
	}
	// Three refused connections in a row mark b down at once.
	if h.pool.Snapshot().All[1].Healthy() {
		t.Error("b still healthy after repeated refused connections")
	}
	if !strings.Contains(h.logs.String(), `msg="backend down" pool=default backend=b`) {
		t.Errorf("no log line for b going down:\n%s", h.logs)
	}
}

func TestPOSTRetriedWhenNothingWasSent(t *testing.T) {
	h := startHarness(t, "", 1, 1)
	h.backends[0].Close()
	for i := range 10 {
		resp, body := h.do("POST", "/", "payload")
		if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "b" {
			t.Fatalf("POST %d: status %d body %q", i, resp.StatusCode, body)
		}
	}
}

func TestHealthCheckEjectsAndRestores(t *testing.T) {
	h := startHarness(t, `"health_check_method": "http", "health_check": {"path": "/health", "rise": 2, "fall": 2}`, 1, 1)
	a := h.pool.Snapshot().All[0]
	h.backends[0].SetHealthy(false)
	ctx := context.Background()
	h.checker.RunOnce(ctx)
	if !a.Healthy() {
		t.Fatal("down after one failed check; fall is 2")
	}
	h.checker.RunOnce(ctx)
	if a.Healthy() {
		t.Fatal("still up after two failed checks")
	}
	if lc := a.LastCheck(); lc == nil || lc.OK || !strings.Contains(lc.Err, "status 503") {
		t.Errorf("last check = %+v, want a failure naming status 503", lc)
	}
	for range 6 {
		if _, b := h.get("/"); b != "b" {
			t.Fatalf("request went to %s while it is down", b)
		}
	}
	h.backends[0].SetHealthy(true)
	h.checker.RunOnce(ctx)
	if a.Healthy() {
		t.Fatal("up after one good check; rise is 2")
	}
	h.checker.RunOnce(ctx)
	if !a.Healthy() {
		t.Fatal("still down after two good checks")
	}
	seen := map[string]bool{}
	for range 4 {
		_, b := h.get("/")
		seen[b] = true
	}
	if !seen["a"] {
		t.Error("a got no traffic after coming back")
	}
}

// TestHealthCheckLoop runs the background loop at a short interval: a backend
// whose health endpoint goes down leaves rotation and comes back on its own.
func TestHealthCheckLoop(t *testing.T) {
	h := startHarness(t, `"health_check_method": "http", "health_check_frequency": "20ms", "health_check": {"path": "/health", "rise": 2, "fall": 3}`, 1, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.checker.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	a := h.pool.Snapshot().All[0]
	h.backends[0].SetHealthy(false)
	waitFor(t, "a to be marked down", func() bool { return !a.Healthy() })
	h.backends[0].SetHealthy(true)
	waitFor(t, "a to be marked up", a.Healthy)
}

func TestNoHealthyBackend503(t *testing.T) {
	h := startHarness(t, "", 1)
	h.backends[0].Close()
	h.checker.RunOnce(context.Background())
	h.checker.RunOnce(context.Background())
	h.checker.RunOnce(context.Background())
	resp, body := h.do("GET", "/", "")
	if resp.StatusCode != 503 || !strings.Contains(body, "no backend available") {
		t.Errorf("status %d body %q, want 503", resp.StatusCode, body)
	}
	if !strings.Contains(h.logs.String(), `msg="no backend available" cause="none is healthy and active" status=503`) {
		t.Errorf("503 not logged:\n%s", h.logs)
	}
}

func TestBackendErrors(t *testing.T) {
	tests := []struct {
		name, method, path string
		status             int
		attempts           int64 // requests the backends saw
		cause              string
	}{
		{"refused", "GET", "/", 502, 0, "cannot connect"},
		{"closed without answer, GET retried", "GET", "/close", 502, 3, "connection closed before a response"},
		{"closed without answer, POST not retried", "POST", "/close", 502, 1, "connection closed before a response"},
		{"garbage", "GET", "/garbage", 502, 3, "invalid response"},
		{"timeout not retried", "GET", "/delay/2s", 504, 1, "backend_timeout elapsed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHarness(t, `"backend_timeout": "300ms", "health_check": {"fall": 100}`, 1, 1, 1)
			if tt.name == "refused" {
				for _, b := range h.backends {
					b.Close()
				}
			}
			resp, body := h.do(tt.method, tt.path, "")
			if resp.StatusCode != tt.status {
				t.Errorf("status %d body %q, want %d", resp.StatusCode, body, tt.status)
			}
			if got := h.totalRequests(); got != tt.attempts {
				t.Errorf("backends saw %d requests, want %d", got, tt.attempts)
			}
			logs := h.logs.String()
			if !strings.Contains(logs, `msg="backend request failed" backend=`) || !strings.Contains(logs, tt.cause) {
				t.Errorf("failure not logged with backend and cause %q:\n%s", tt.cause, logs)
			}
		})
	}
}

func TestRetriesLimit(t *testing.T) {
	h := startHarness(t, `"retries": 1, "health_check": {"fall": 100}`, 1, 1, 1)
	if resp, _ := h.do("GET", "/close", ""); resp.StatusCode != 502 {
		t.Errorf("status %d, want 502", resp.StatusCode)
	}
	if got := h.totalRequests(); got != 2 {
		t.Errorf("with retries 1, backends saw %d attempts, want 2", got)
	}
}

func TestForwardingIsExact(t *testing.T) {
	h := startHarness(t, "", 1)
	// Raw, so no client library tidies the path.
	out := h.raw("GET /echo/a%2Fb//c/../d;x?q=%2F+%20&q=2#frag HTTP/1.1\r\nHost: public.example:8080\r\nConnection: close\r\n\r\n")
	if !strings.Contains(out, `"uri":"/echo/a%2Fb//c/../d;x?q=%2F+%20\u0026q=2`) {
		t.Errorf("request-target not forwarded byte for byte:\n%s", out)
	}
	if !strings.Contains(out, `["Host","public.example:8080"]`) {
		t.Errorf("client Host not kept:\n%s", out)
	}

	body := "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/odd\r\n\r\nline1\r\n--XyZ--\r\n"
	_, e := h.echo("POST", "/echo", body, "Content-Type", "multipart/form-data; boundary=XyZ")
	if e.Body != body || e.Method != "POST" {
		t.Errorf("multipart body changed: %q", e.Body)
	}
	for _, m := range []string{"PUT", "PATCH", "DELETE", "OPTIONS"} {
		if _, e := h.echo(m, "/echo?m=1", "x"); e.Method != m || e.URI != "/echo?m=1" {
			t.Errorf("%s forwarded as %s %s", m, e.Method, e.URI)
		}
	}
}

func TestForwardedHeaders(t *testing.T) {
	h := startHarness(t, "", 1)
	_, e := h.echo("GET", "/echo", "", "Host", "shop.example", "X-Forwarded-For", "203.0.113.7, 10.0.0.1")
	if got := e.Get("X-Forwarded-For"); len(got) != 1 || got[0] != "203.0.113.7, 10.0.0.1, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
	if got := e.Get("X-Forwarded-Proto"); len(got) != 1 || got[0] != "http" {
		t.Errorf("X-Forwarded-Proto = %q", got)
	}
	if got := e.Get("X-Forwarded-Host"); len(got) != 1 || got[0] != "shop.example" {
		t.Errorf("X-Forwarded-Host = %q", got)
	}
	id := e.Get("X-Request-Id")
	if len(id) != 1 || len(id[0]) != 33 {
		t.Errorf("X-Request-Id = %q, want one generated id", id)
	}
	_, e2 := h.echo("GET", "/echo", "")
	if id2 := e2.Get("X-Request-Id"); len(id2) != 1 || id2[0] == id[0] {
		t.Errorf("request ids not unique: %q then %q", id, id2)
	}

	// The client's own X-Request-Id is kept; several X-Forwarded-For lines become one list;
	// a client's X-Forwarded-Proto and -Host are replaced.
	out := h.raw("GET /echo HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc-123\r\nX-Forwarded-For: 1.1.1.1\r\n" +
		"X-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nConnection: close\r\n\r\n")
	for _, want := range []string{`["X-Request-Id","abc-123"]`, `["X-Forwarded-For","1.1.1.1, 2.2.2.2, 127.0.0.1"]`,
		`["X-Forwarded-Proto","http"]`, `["X-Forwarded-Host","h"]`} {
		if !strings.Contains(out, want) {
			t.Errorf("want %s in:\n%s", want, out)
		}
	}
	if strings.Count(out, "X-Forwarded-For") != 1 || strings.Contains(out, "evil") {
		t.Errorf("forwarded headers not replaced:\n%s", out)
	}

	// Without Host (HTTP/1.0) a client's X-Forwarded-Host is dropped; an
	// X-Request-Id that Connection names is replaced by a generated one.
	out = h.raw("GET /echo HTTP/1.0\r\nx-forwarded-host: evil\r\nConnection: X-Request-Id\r\nX-Request-Id: hop\r\n\r\n")
	if strings.Contains(strings.ToLower(out), "x-forwarded-host") || strings.Contains(out, `"hop"`) || !strings.Contains(out, `["X-Request-Id","`) {
		t.Errorf("want no X-Forwarded-Host and a generated X-Request-Id in:\n%s", out)
	}
}

func TestHopByHopRequestHeaders(t *testing.T) {
	h := startHarness(t, "", 1)
	out := h.raw("GET /echo HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret, x-other, Host\r\nConnection: close\r\n" +
		"X-Secret: s\r\nx-other: o\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n" +
		"Trailer: X-T\r\nUpgrade: websocket\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Kept: yes\r\n\r\n")
	if !strings.Contains(out, `["X-Kept","yes"]`) || !strings.Contains(out, `["Host","h"]`) {
		t.Fatalf("end-to-end header lost (Host named in Connection must stay):\n%s", out)
	}
	for _, gone := range []string{"Connection", "X-Secret", "X-Other", "Keep-Alive", "Proxy-Connection", `"Te"`,
		"Trailer", "Upgrade", "Proxy-Authorization"} {
		if strings.Contains(strings.ToLower(out[strings.Index(out, "{"):]), strings.ToLower(gone)) {
			t.Errorf("hop-by-hop %s forwarded:\n%s", gone, out)
		}
	}
}

func TestHopByHopResponseHeaders(t *testing.T) {
	h := startHarness(t, "", 1)
	path := "/headers?h=Connection:close,%20X-Drop&h=X-Drop:1&h=Keep-Alive:timeout%3D1&h=Proxy-Authenticate:Basic&h=X-Keep:2"
	for i := range 3 {
		resp, _ := h.do("GET", path, "")
		for _, gone := range []string{"Connection", "X-Drop", "Keep-Alive", "Proxy-Authenticate"} {
			if v := resp.Header.Values(gone); len(v) > 0 {
				t.Errorf("response hop-by-hop %s = %q passed to the client", gone, v)
			}
		}
		if resp.Header.Get("X-Keep") != "2" || resp.Close {
			t.Errorf("request %d: X-Keep %q, close %v", i, resp.Header.Get("X-Keep"), resp.Close)
		}
	}
	// The backend said Connection: close; the client's connection stays open.
	out := h.raw("GET " + path + " HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	if strings.Count(out, "HTTP/1.1 200 OK") != 2 {
		t.Errorf("the backend's Connection: close closed the client's connection:\n%s", out)
	}
}

func TestServerHeaderKept(t *testing.T) {
	h := startHarness(t, "", 1)
	resp, _ := h.do("GET", "/", "")
	if got := resp.Header.Values("Server"); len(got) != 1 || got[0] != "testbackend" {
		t.Errorf("Server = %q, want the backend's only", got)
	}
	out := h.raw("GET /close HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	if strings.Contains(strings.ToLower(out), "\nserver:") {
		t.Errorf("fastlb added a Server header of its own:\n%s", out)
	}
	if resp.Header.Get("Content-Type") != "" {
		t.Errorf("fastlb added a Content-Type the backend did not send: %q", resp.Header.Get("Content-Type"))
	}
}

func TestHEADKeepsContentLength(t *testing.T) {
	h := startHarness(t, "", 1)
	resp, body := h.do("HEAD", "/", "")
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len("backend a\n")) {
		t.Errorf("HEAD: status %d, length %d, body %q", resp.StatusCode, resp.ContentLength, body)
	}
}

func TestMalformedRequestsRefused(t *testing.T) {
	tests := []struct {
		name, request string
		status        string
	}{
		{"CL and TE", "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "400"},
		{"TE and CL", "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "400"},
		{"duplicate CL", "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "400"},
		{"equal duplicate CL", "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "400"},
		{"CL list", "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello", "400"},
		{"negative CL", "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\nhello", "400"},
		{"space in name", "GET /echo HTTP/1.1\r\nHost: h\r\nX Bad: 1\r\n\r\n", "400"},
		{"space before colon", "GET /echo HTTP/1.1\r\nHost: h\r\nX-Bad : 1\r\n\r\n", "400"},
		{"control byte in value", "GET /echo HTTP/1.1\r\nHost: h\r\nX-Bad: a\x01b\r\n\r\n", "400"},
		{"obs-fold", "GET /echo HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n", "400"},
		{"two Hosts", "GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"},
		{"unknown transfer coding", "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "400"},
		{"chunked not last", "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", "400"},
		{"chunked in HTTP/1.0", "POST /echo HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"},
		{"malformed chunk size", "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "400"},
		{"no Host in HTTP/1.1", "GET /echo HTTP/1.1\r\n\r\n", "400"},
		{"NUL in a name", "GET /echo HTTP/1.1\r\nHost: h\r\nX-A\x00b: 1\r\n\r\n", "400"},
		{"CR in a value", "GET /echo HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", "400"},
		{"signed CL", "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello", "400"},
		{"space in target", "GET /ec ho HTTP/1.1\r\nHost: h\r\n\r\n", "400"},
		{"unknown protocol", "GET /echo FOO/1.1\r\nHost: h\r\n\r\n", "400"},
		{"HTTP/2.0 request line", "GET /echo HTTP/2.0\r\nHost: h\r\n\r\n", "505"},
		{"HTTP/3.0 request line", "GET /echo HTTP/3.0\r\nHost: h\r\n\r\n", "505"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startHarness(t, "", 1)
			out, closed := h.rawClosed(tt.request)
			if !strings.HasPrefix(out, "HTTP/1.1 "+tt.status) {
				t.Errorf("answer %q, want %s", out, tt.status)
			}
			if !closed {
				t.Error("the connection was left open after the refusal")
			}
			if n := h.backends[0].Requests(); n != 0 {
				t.Errorf("the backend saw %d requests; a refused request must not be forwarded", n)
			}
		})
	}
}

func TestHTTP10WithoutHost(t *testing.T) {
	h := startHarness(t, "", 1)
	out := h.raw("GET /echo HTTP/1.0\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.0 200") && !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Fatalf("HTTP/1.0 without Host: %q", firstLine(out))
	}
	if !strings.Contains(out, `["Host","`+h.backends[0].Addr()+`"]`) {
		t.Errorf("the backend did not get its own address as Host:\n%s", out)
	}
	if !h.pool.Snapshot().All[0].Healthy() || h.pool.Snapshot().All[0].Failures() != 0 {
		t.Error("a client's request without Host counted against the backend")
	}
	// HTTP/1.2 is answered as HTTP/1.1 (RFC 9112 section 2.3).
	if out := h.raw("GET / HTTP/1.2\r\nHost: h\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("HTTP/1.2: %q", firstLine(out))
	}
}

func TestSizeLimits(t *testing.T) {
	h := startHarness(t, `"max_header_bytes": "2KiB", "max_request_body": "1KiB"`, 1)
	out := h.raw("GET / HTTP/1.1\r\nHost: h\r\nCookie: " + strings.Repeat("c", 3000) + "\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 431") {
		t.Errorf("oversized header: %q, want 431", firstLine(out))
	}
	out = h.raw("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n" + strings.Repeat("b", 2000))
	if !strings.HasPrefix(out, "HTTP/1.1 413") {
		t.Errorf("oversized body: %q, want 413", firstLine(out))
	}
	out = h.raw("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + strings.Repeat("b", 2000) + "\r\n0\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 413") {
		t.Errorf("oversized chunked body: %q, want 413", firstLine(out))
	}
	if n := h.backends[0].Requests(); n != 0 {
		t.Errorf("backend saw %d oversized requests", n)
	}
	resp, e := h.echo("POST", "/echo", strings.Repeat("k", 1024))
	if resp.StatusCode != 200 || len(e.Body) != 1024 {
		t.Errorf("a body of exactly max_request_body: status %d, %d bytes forwarded", resp.StatusCode, len(e.Body))
	}
}

func TestMaxClientConns(t *testing.T) {
	h := startHarness(t, `"max_client_conns": 2`, 1)
	var open []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		buf := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, _ := c.Read(buf); !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			t.Fatalf("connection within the limit: %q", buf[:n])
		}
		open = append(open, c)
	}
	out := h.raw("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 503") {
		t.Errorf("a connection over max_client_conns: %q, want 503", firstLine(out))
	}
	open[0].Close()
	time.Sleep(100 * time.Millisecond)
	if out := h.raw("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("after one closed: %q", firstLine(out))
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	h := startHarness(t, "", 1)
	result := make(chan string, 1)
	go func() {
		resp, body := h.do("GET", "/delay/300ms", "")
		result <- fmt.Sprint(resp.StatusCode, " ", body)
	}()
	waitFor(t, "the request to be in flight", func() bool { return h.pool.Snapshot().All[0].Active() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.server.ShutdownWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	if got := <-result; got != "200 backend a\n" {
		t.Errorf("in-flight request during shutdown: %q", got)
	}
	if _, err := http.Get("http://" + h.addr + "/"); err == nil {
		t.Error("still accepting after shutdown")
	}
}

// TestBackendTimeoutOnBusyConnection: a backend connection's deadline is
// set again only when the one armed no longer covers the request's (see
// upstream.LazyDeadline). Whether the last requests on the connection left
// one armed or not, backend_timeout neither fires early nor more than its
// slack (1/64) late.
func TestBackendTimeoutOnBusyConnection(t *testing.T) {
	h := startHarness(t, `"backend_timeout": "640ms", "health_check": {"fall": 100}`, 1)
	for range 15 {
		for range 5 { // back to back: the armed deadline covers them
			if resp, _ := h.do("GET", "/", ""); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		time.Sleep(15 * time.Millisecond) // past the slack: armed again
	}
	start := time.Now()
	resp, _ := h.do("GET", "/delay/2s", "")
	took := time.Since(start)
	if resp.StatusCode != 504 {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	if took < 640*time.Millisecond || took > 1500*time.Millisecond {
		t.Errorf("504 after %v, want 640-650ms (and some scheduling)", took)
	}
}
