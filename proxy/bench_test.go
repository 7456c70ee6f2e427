package proxy

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"

	"github.com/valyala/fasthttp"

	"fastlb/balancer"
	"fastlb/config"
	"fastlb/internal/header"
	"fastlb/testbackends"
	"fastlb/upstream"
)

const benchRequest = "GET /api/items?page=2 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench\r\n" +
	"Accept: */*\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: keep-alive\r\n\r\n"

var benchRequestBytes = []byte(benchRequest)

// benchProxy starts n test backends and a Proxy over them, without a
// listener: benchmarks call ServeHTTP directly.
func benchProxy(tb testing.TB, n int) (*Proxy, []*testbackends.Server) {
	tb.Helper()
	var cfgs []config.Backend
	var servers []*testbackends.Server
	for range n {
		s, err := testbackends.Start("127.0.0.1:0", testbackends.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		servers = append(servers, s)
		c := config.Backend{URL: s.URL(), Weight: 1}
		if err := config.ResolveBackend(&c); err != nil {
			tb.Fatal(err)
		}
		cfgs = append(cfgs, c)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	pool := upstream.NewPool(cfgs, upstream.Options{Rise: 1, Fall: 3, Logger: logger,
		Client: upstream.ClientOptions{ConnectTimeout: config.Defaults().ConnectTimeout, BackendTimeout: config.Defaults().BackendTimeout, MaxHeaderBytes: 16 << 10}})
	for _, b := range pool.Snapshot().All {
		pool.ReportCheck(b, upstream.CheckResult{OK: true})
	}
	policy := balancer.NewSmoothWRR()
	pool.Watch(policy.Update)
	tb.Cleanup(pool.Close)
	def := &Pool{Name: config.DefaultPool, Upstream: pool, Policy: policy, Retries: 2}
	return New(Settings{Default: def, Pools: []*Pool{def}}, Options{Logger: logger}), servers
}

// reqCtx is one reusable client request, parsed from benchRequest each time
// as the server would parse it.
type reqCtx struct {
	ctx fasthttp.RequestCtx
	src bytes.Reader
	br  *bufio.Reader
}

func newReqCtx() *reqCtx {
	r := &reqCtx{}
	r.br = bufio.NewReader(&r.src)
	r.ctx.Init(&fasthttp.Request{}, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}, nil)
	return r
}

func (r *reqCtx) serve(tb testing.TB, handler fasthttp.RequestHandler) {
	r.ctx.Request.Reset()
	r.ctx.Response.Reset()
	r.src.Reset(benchRequestBytes)
	r.br.Reset(&r.src)
	if err := r.ctx.Request.Read(r.br); err != nil {
		tb.Fatal(err)
	}
	handler(&r.ctx)
	if r.ctx.Response.StatusCode() != fasthttp.StatusOK {
		tb.Fatalf("status %d: %s", r.ctx.Response.StatusCode(), r.ctx.Response.Body())
	}
}

// TestProxyAllocations holds the request path to 0 allocations per request.
func TestProxyAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	p, _ := benchProxy(t, 3)
	r := newReqCtx()
	r.serve(t, p.ServeHTTP) // warm the connection pools
	if n := testing.AllocsPerRun(500, func() { r.serve(t, p.ServeHTTP) }); n != 0 {
		t.Errorf("%.2f allocations per proxied request, want 0", n)
	}
	l := NewAccessLog(io.Discard)
	defer l.Close()
	p.SetAccessLog(l)
	r.serve(t, p.ServeHTTP)
	if n := testing.AllocsPerRun(500, func() { r.serve(t, p.ServeHTTP) }); n != 0 {
		t.Errorf("with the access log on: %.2f allocations per proxied request, want 0", n)
	}
}

// BenchmarkProxy measures the whole request path through the handler:
// header checks and rewriting, the pick, and the round trip to a real
// backend over loopback.
func BenchmarkProxy(b *testing.B) {
	p, _ := benchProxy(b, 3)
	b.Run("serial", func(b *testing.B) {
		r := newReqCtx()
		b.ReportAllocs()
		for b.Loop() {
			r.serve(b, p.ServeHTTP)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := newReqCtx()
			for pb.Next() {
				r.serve(b, p.ServeHTTP)
			}
		})
	})
}

// BenchmarkProxyDirect is the baseline of BenchmarkProxy: the same request
// parsed the same way and sent with one HostClient straight to one backend,
// with no checks, rewriting or pick.
func BenchmarkProxyDirect(b *testing.B) {
	_, servers := benchProxy(b, 1)
	hc := &fasthttp.HostClient{Addr: servers[0].Addr(), DisablePathNormalizing: true, NoDefaultUserAgentHeader: true}
	direct := func(ctx *fasthttp.RequestCtx) {
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		r := newReqCtx()
		b.ReportAllocs()
		for b.Loop() {
			r.serve(b, direct)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := newReqCtx()
			for pb.Next() {
				r.serve(b, direct)
			}
		})
	})
}

// BenchmarkProxyRewrite isolates fastlb's own work on a request: the header
// checks, hop-by-hop removal and forwarding headers, without the round trip.
// "forwarded" is a request that came through another proxy (X-Forwarded-For
// and Connection to handle); "host-only" one straight from a client.
func BenchmarkProxyRewrite(b *testing.B) {
	p, _ := benchProxy(b, 1)
	for _, tc := range []struct{ name, req string }{
		{"forwarded", benchRequest},
		{"host-only", "GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n"},
	} {
		raw := []byte(tc.req)
		b.Run(tc.name, func(b *testing.B) {
			r := newReqCtx()
			b.ReportAllocs()
			for b.Loop() {
				r.ctx.Request.Reset()
				r.src.Reset(raw)
				r.br.Reset(&r.src)
				if err := r.ctx.Request.Read(r.br); err != nil {
					b.Fatal(err)
				}
				h := &r.ctx.Request.Header
				seen, err := header.CheckFields(h.RawHeaders())
				if err != nil {
					b.Fatal(err)
				}
				header.RemoveHopByHop(h, seen)
				h.ResetConnectionClose()
				setForwarded(&r.ctx, seen)
				p.setRequestID(h, seen)
			}
		})
	}
}

// TestServerAllocations counts allocations across the whole process while
// a fasthttp client sends requests through the real server, proxy and
// backend. GETs allocate nothing. A request with a body costs one 24-byte
// allocation in each of the two fasthttp servers that stream request bodies
// (fastlb's and the test backend's): after every such request fasthttp
// drains what the handler left of the body with io.CopyN, whose
// io.LimitReader escapes. fastlb's own code adds nothing.
func TestServerAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	h := startHarness(t, "", 1)
	c := &fasthttp.HostClient{Addr: h.addr}
	for _, tt := range []struct {
		name   string
		method string
		body   int
		want   float64
	}{
		{"GET", "GET", 0, 0}, {"POST 1 KiB", "POST", 1 << 10, 2}, {"POST 32 KiB", "POST", 32 << 10, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			body := bytes.Repeat([]byte("x"), tt.body)
			send := func() {
				req.SetRequestURI("http://" + h.addr + "/")
				req.Header.SetMethod(tt.method)
				if tt.body > 0 {
					req.SetBody(body)
				}
				if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					t.Fatalf("%v %d", err, resp.StatusCode())
				}
			}
			for range 200 {
				send()
			}
			const n = 2000
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range n {
				send()
			}
			runtime.ReadMemStats(&after)
			if per := float64(after.Mallocs-before.Mallocs) / n; per > tt.want+0.05 {
				t.Errorf("%.2f allocations per request in the whole process, want %v", per, tt.want)
			}
		})
	}
}
