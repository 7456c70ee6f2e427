package frontend

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"fastlb/config"
)

// syncBuffer is a bytes.Buffer safe for the server's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// testServer is a Server with a handler of its own, on a loopback port.
type testServer struct {
	*Server
	addr   string
	logs   *syncBuffer
	panics *metrics.Counter
}

// handler answers /panic by panicking, /hijack-panic by asking for an
// upgrade and then panicking, and anything else with "ok" and the body.
func handler(hijacked *bool) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/panic":
			panic("handler bug")
		case "/hijack-panic":
			ctx.Hijack(func(net.Conn) { *hijacked = true })
			panic("handler bug after Hijack")
		}
		ctx.SetBodyString("ok " + string(ctx.Request.Body()))
	}
}

func startServer(t *testing.T, mutate func(*config.Config), tlsCfg *tls.Config) *testServer {
	t.Helper()
	cfg := config.Defaults()
	if mutate != nil {
		mutate(cfg)
	}
	ts := &testServer{logs: &syncBuffer{}, panics: metrics.NewSet().NewCounter("fastlb_panics_total")}
	o := FromConfig(cfg)
	o.Logger = slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o.Panics = ts.panics
	var hijacked bool
	ts.Server = New(handler(&hijacked), o)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			done <- ts.ServeTLS(ln, tlsCfg)
		} else {
			done <- ts.Serve(ln)
		}
	}()
	t.Cleanup(func() {
		if err := ts.Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if hijacked {
			t.Error("the upgrade of a request whose handler panicked was carried out")
		}
	})
	return ts
}

// client is one keep-alive connection.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (ts *testServer) dial(t *testing.T) *client {
	t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, r: bufio.NewReader(c)}
}

// get sends a GET for path and returns the answer, its body read.
func (c *client) get(path string) (*http.Response, string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, "GET "+path+" HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		c.t.Fatal(err)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp, string(body)
}

// closed reports whether the server closes the connection within d.
func (c *client) closed(d time.Duration) bool {
	c.c.SetReadDeadline(time.Now().Add(d))
	_, err := c.r.ReadByte()
	return err == io.EOF
}

// waitFor waits up to 5 s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestParkIdleAfter: with park_idle_after at its default a connection idle
// longer is parked, and with "0s" it never is; either way it stays open
// and serves its next request.
func TestParkIdleAfter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after time.Duration
		parks bool
	}{
		{"default", 100 * time.Millisecond, true},
		{"0s", 0, false},
		{"longer than client_idle_timeout", 10 * time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, func(c *config.Config) { c.ParkIdleAfter = tc.after }, nil)
			c := ts.dial(t)
			if resp, body := c.get("/"); resp.StatusCode != 200 || body != "ok " {
				t.Fatalf("first request: %d %q", resp.StatusCode, body)
			}
			if tc.parks {
				waitFor(t, "the connection to park", func() bool { return ts.Parked() == 1 })
			} else {
				time.Sleep(500 * time.Millisecond)
				if n := ts.Parked(); n != 0 {
					t.Fatalf("%d connections parked", n)
				}
			}
			if n := ts.OpenConnections(); n != 1 {
				t.Errorf("OpenConnections = %d, want 1", n)
			}
			for range 3 {
				if resp, body := c.get("/"); resp.StatusCode != 200 || body != "ok " {
					t.Fatalf("request after the pause: %d %q", resp.StatusCode, body)
				}
			}
			if tc.parks {
				waitFor(t, "the connection to park again", func() bool { return ts.Parked() == 1 })
			}
		})
	}
}

// TestPanicRecovered: a panic in the handler is answered 500 on a
// connection then closed, logged with its stack and counted; the server
// and its other connections go on, and an upgrade the handler had asked
// for is not carried out.
func TestPanicRecovered(t *testing.T) {
	ts := startServer(t, nil, nil)
	other := ts.dial(t)
	if resp, _ := other.get("/"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for i, path := range []string{"/panic", "/hijack-panic"} {
		c := ts.dial(t)
		resp, body := c.get(path)
		if resp.StatusCode != 500 || body != "500 Internal Server Error\n" || !resp.Close {
			t.Errorf("%s: %d %q, Connection %q; want 500 and close", path, resp.StatusCode, body, resp.Header.Get("Connection"))
		}
		if !c.closed(2 * time.Second) {
			t.Errorf("%s: the connection stayed open", path)
		}
		if n := ts.panics.Get(); n != uint64(i+1) {
			t.Errorf("fastlb_panics_total = %d, want %d", n, i+1)
		}
	}
	logs := ts.logs.String()
	for _, want := range []string{"panic serving a request", "handler bug", "goroutine ", "server_test.go"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q:\n%s", want, logs)
		}
	}
	if resp, body := other.get("/"); resp.StatusCode != 200 || body != "ok " {
		t.Errorf("another connection after the panics: %d %q", resp.StatusCode, body)
	}
	if resp, _ := ts.dial(t).get("/"); resp.StatusCode != 200 {
		t.Errorf("a new connection after the panics: %d", resp.StatusCode)
	}
}

// TestTLS: a TLS listener's connections are served, never parked, and
// counted against max_client_conns: one over the limit is answered 503
// through TLS.
func TestTLS(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.MaxClientConns = 1 }, selfSigned(t))
	dial := func() (*tls.Conn, *bufio.Reader) {
		c, err := tls.Dial("tcp", ts.addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	get := func(c *tls.Conn, r *bufio.Reader) (int, string) {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
	c, r := dial()
	if status, body := get(c, r); status != 200 || body != "ok " {
		t.Fatalf("TLS request: %d %q", status, body)
	}
	time.Sleep(300 * time.Millisecond) // longer than park_idle_after
	if n := ts.Parked(); n != 0 {
		t.Errorf("%d TLS connections parked", n)
	}
	if n := ts.OpenConnections(); n != 1 {
		t.Errorf("OpenConnections = %d, want the TLS one", n)
	}
	c2, r2 := dial()
	if status, body := get(c2, r2); status != 503 || !strings.Contains(body, "too many client connections") {
		t.Errorf("a TLS connection over max_client_conns: %d %q", status, body)
	}
	if status, _ := get(c, r); status != 200 {
		t.Errorf("the first connection afterwards: %d", status)
	}
}

// selfSigned is a TLS configuration with a certificate for 127.0.0.1.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// TestQuietConnectionParksAtOnce: a connection whose last two waits for a
// request each lasted park_idle_after is parked as soon as it has been
// answered; one request within park_idle_after of the last answer, and it
// waits park_idle_after first again.
func TestQuietConnectionParksAtOnce(t *testing.T) {
	const after = 200 * time.Millisecond
	ts := startServer(t, func(c *config.Config) { c.ParkIdleAfter = after }, nil)
	c := ts.dial(t)
	parkedWithin := func(d time.Duration) bool {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
			if ts.Parked() == 1 {
				return true
			}
		}
		return false
	}
	request := func(what string) {
		t.Helper()
		if resp, _ := c.get("/"); resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", what, resp.StatusCode)
		}
	}
	request("first")
	for i := range quietWaits {
		if parkedWithin(after / 2) {
			t.Fatalf("parked at once after %d long waits, want %d", i, quietWaits)
		}
		waitFor(t, "the connection to park", func() bool { return ts.Parked() == 1 })
		request("after a long wait")
	}
	if !parkedWithin(after / 2) {
		t.Fatalf("not parked at once after %d long waits", quietWaits)
	}
	// A request soon after the answer: the connection waits again.
	time.Sleep(after / 10)
	request("soon after parking at once")
	request("back to back")
	if parkedWithin(after / 2) {
		t.Fatal("parked at once after a short wait")
	}
}

// TestRequestInPiecesAfterParking: a connection woken from parking by the
// first piece of a request is given client_read_timeout for the rest,
// counted from when the request began: it is served if the rest comes in
// time, closed if it does not. (The deadline of a request is armed only
// when a read must wait; the one the socket last had is long past.)
func TestRequestInPiecesAfterParking(t *testing.T) {
	const after, readTimeout = 50 * time.Millisecond, 400 * time.Millisecond
	ts := startServer(t, func(c *config.Config) {
		c.ParkIdleAfter, c.ClientReadTimeout = after, readTimeout
	}, nil)
	quiet := func(c *client) {
		t.Helper()
		c.get("/")
		for range quietWaits {
			waitFor(t, "the connection to park", func() bool { return ts.Parked() == 1 })
			time.Sleep(after) // parked for park_idle_after: a long wait
			c.get("/")
		}
		waitFor(t, "the connection to park at once", func() bool { return ts.Parked() == 1 })
	}
	head := "GET /pieces HTTP/1.1\r\nHost: h\r\n"

	c := ts.dial(t)
	quiet(c)
	if _, err := io.WriteString(c.c, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(readTimeout / 2)
	if _, err := io.WriteString(c.c, "X-Rest: 1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("the request sent in two pieces: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("the request sent in two pieces: status %d", resp.StatusCode)
	}
	c.c.Close()
	waitFor(t, "the first connection to close", func() bool { return ts.Parked() == 0 })

	c = ts.dial(t)
	quiet(c)
	if _, err := io.WriteString(c.c, head); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(c.r) // fastlb may answer 408 before it closes
	if d := time.Since(start); d < readTimeout*3/4 || d > readTimeout+time.Second {
		t.Errorf("a request left unfinished was cut off after %v, want about client_read_timeout (%v)", d, readTimeout)
	}
}

// TestMemoryReturnedAfterBurst: once a burst of connections served at once
// has gone idle, the server returns freed memory to the system; a burst of
// fewer than releaseAfter connections does not make it.
func TestMemoryReturnedAfterBurst(t *testing.T) {
	for _, tc := range []struct {
		conns   int
		returns bool
	}{
		{releaseAfter / 4, false},
		{releaseAfter + 100, true},
	} {
		ts := startServer(t, nil, nil)
		conns := make([]*client, tc.conns)
		for i := range conns {
			conns[i] = ts.dial(t)
		}
		for _, c := range conns {
			if _, err := io.WriteString(c.c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range conns {
			c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(c.r, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		returned := func() bool { return strings.Contains(ts.logs.String(), "returned freed memory to the system") }
		if tc.returns {
			waitFor(t, "memory to be returned after the burst", returned)
		} else if time.Sleep(2 * releaseEvery); returned() {
			t.Errorf("memory returned after a burst of %d connections", tc.conns)
		}
	}
}
