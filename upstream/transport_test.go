package upstream

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/config"
)

// oneShotBackend answers one request on each connection it accepts, with
// keep-alive, and then closes the connection, as a backend does whose idle
// timeout has passed or that restarts. Each close is reported on closed;
// each request's method on methods.
type oneShotBackend struct {
	ln      net.Listener
	closed  chan struct{}
	methods chan string
}

func startOneShot(t *testing.T) *oneShotBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &oneShotBackend{ln: ln, closed: make(chan struct{}, 16), methods: make(chan string, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { c.Close(); s.closed <- struct{}{} }()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				s.methods <- req.Method
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	return s
}

func poolFor(t *testing.T, addr string, fall int) (*Pool, *Backend) {
	t.Helper()
	c := config.Backend{URL: "http://" + addr, Weight: 1}
	if err := config.ResolveBackend(&c); err != nil {
		t.Fatal(err)
	}
	p := NewPool([]config.Backend{c}, Options{Rise: 1, Fall: fall, Logger: slog.New(slog.DiscardHandler),
		Client: ClientOptions{ConnectTimeout: time.Second, BackendTimeout: 2 * time.Second, MaxHeaderBytes: 8192}})
	b := p.Snapshot().All[0]
	p.ReportCheck(b, CheckResult{OK: true})
	return p, b
}

func do(b *Backend, method string) (int, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI("http://" + b.Addr + "/")
	if method == fasthttp.MethodPost {
		req.SetBodyString("payload")
	}
	err := b.Client.Do(req, resp)
	return resp.StatusCode(), err
}

// TestStaleConnection: a request that meets a keep-alive connection the
// backend has closed is sent again on a fresh connection when that is
// safe, and otherwise fails with ErrStaleConn; neither is the backend's
// fault.
func TestStaleConnection(t *testing.T) {
	tests := []struct {
		method  string
		wantErr error // nil: answered on a fresh connection
		methods int   // requests the backend saw
	}{
		{fasthttp.MethodGet, nil, 2},
		{fasthttp.MethodPut, nil, 2},
		{fasthttp.MethodPost, ErrStaleConn, 1},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			s := startOneShot(t)
			_, b := poolFor(t, s.ln.Addr().String(), 1)
			if code, err := do(b, fasthttp.MethodGet); err != nil || code != 200 {
				t.Fatalf("first request: %d, %v", code, err)
			}
			<-s.methods
			<-s.closed // the pooled connection is now stale
			code, err := do(b, tt.method)
			if tt.wantErr == nil && (err != nil || code != 200) {
				t.Fatalf("request on a stale connection: %d, %v; want it answered on a fresh one", code, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("request on a stale connection: %d, %v; want %v", code, err, tt.wantErr)
			}
			seen := 0
			for len(s.methods) > 0 {
				if m := <-s.methods; m != tt.method {
					t.Errorf("backend saw %s", m)
				}
				seen++
			}
			if seen+1 != tt.methods {
				t.Errorf("backend saw the request %d times, want %d", seen, tt.methods-1)
			}
			if b.StaleConns() != 1 {
				t.Errorf("StaleConns = %d, want 1", b.StaleConns())
			}
			if b.Active() != 0 {
				t.Errorf("Active = %d after the request", b.Active())
			}
		})
	}
}

// TestDownClosesIdleConnections: a backend marked down lets go of its
// pooled connections at once.
func TestDownClosesIdleConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		br.ReadByte() // until fastlb closes the connection
		close(closed)
	}()
	p, b := poolFor(t, ln.Addr().String(), 2)
	if code, err := do(b, fasthttp.MethodGet); err != nil || code != 200 {
		t.Fatalf("request: %d, %v", code, err)
	}
	p.RequestFailed(b, true, true, "refused")
	select {
	case <-closed:
		t.Fatal("the idle connection was closed while the backend was still up")
	case <-time.After(50 * time.Millisecond):
	}
	p.RequestFailed(b, true, true, "refused")
	if b.Healthy() {
		t.Fatal("not marked down")
	}
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("the idle connection stayed open after the backend was marked down")
	}
}
