// Package testbackends provides real HTTP backends for tests, demos and
// benchmarks: configurable latency, error rate and response size, a health
// endpoint that can be turned down and up, an echo of what was received, and
// endpoints that misbehave on purpose.
//
// Routes:
//
//	GET  /health                  200 "ok", or 503 while turned down
//	POST /control/health/down     turn /health down (also GET, for curl)
//	POST /control/health/up       turn /health up
//	ANY  /echo...                 JSON of the request as received
//	ANY  /headers?h=Name:value    answer with those response headers added
//	ANY  /status/{code}           answer with that status
//	ANY  /delay/{duration}        answer after that long ("250ms")
//	GET  /upgrade                 a WebSocket handshake (101), then "welcome\n"
//	                              and an echo of every byte received;
//	                              ?push=250ms also sends "tick\n" that often
//	ANY  /close                   close the connection without answering
//	ANY  /garbage                 answer bytes that are not HTTP
//	ANY  /malformed/{kind}        a malformed answer: two-cl, bad-cl,
//	                              bad-status, ctl-in-value, short-body,
//	                              cl-and-te, obs-fold, space-before-colon,
//	                              bad-name, short-stream, bad-chunk
//	GET  /bytes/{n}               n bytes of Pattern, made as they are sent;
//	                              ?chunked=1 sends them chunked
//	ANY  /sink                    reads the body as it comes and answers
//	                              {"bytes": n, "crc32": c}
//	GET  /drip/{n}/{interval}     n server-sent events ("data: i"), one
//	                              per interval, chunked and flushed each
//	ANY  anything else            "backend NAME" padded to Size bytes
//
// Every response carries "X-Backend: NAME" and "Server: testbackend".
package testbackends

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/valyala/fasthttp"
)

// Options shape a backend's answers. The zero value answers at once, never
// fails on purpose, and sends a short body.
type Options struct {
	Name      string        // sent as X-Backend; defaults to the listen address
	Latency   time.Duration // added to every answer
	ErrorRate float64       // fraction of ordinary requests answered 500, 0..1
	Size      int           // body size of ordinary answers; 0 = just "backend NAME\n"
	// TLS, when set, makes the backend speak HTTPS with this certificate.
	TLS *tls.Certificate
	// ProxyProtocol, when set, requires a PROXY protocol header (v1 or v2)
	// at the start of every connection, before TLS; the address it names
	// is the client's (Echo.Client).
	ProxyProtocol bool
}

// Server is one test backend. It is safe for concurrent use.
type Server struct {
	opts     Options
	body     []byte
	srv      *fasthttp.Server
	ln       net.Listener
	down     atomic.Bool
	requests atomic.Int64
}

// Start listens on addr ("127.0.0.1:0" for any free port) and serves in the
// background until Close.
func Start(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = ln.Addr().String()
	}
	s := &Server{opts: opts, ln: ln}
	s.body = []byte("backend " + opts.Name + "\n")
	if opts.Size > len(s.body) {
		s.body = append(s.body, bytes.Repeat([]byte("x"), opts.Size-len(s.body)-1)...)
		s.body = append(s.body, '\n')
	}
	s.srv = &fasthttp.Server{
		Handler:                      s.handle,
		Name:                         "testbackend",
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		ReadBufferSize:               64 << 10,
		MaxRequestBodySize:           256 << 20,
		StreamRequestBody:            true, // /sink reads bodies of any size
		CloseOnShutdown:              true,
		Logger:                       quiet{},
	}
	if opts.ProxyProtocol {
		ln = &proxyproto.Listener{Listener: ln, ReadHeaderTimeout: 5 * time.Second,
			ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil }}
	}
	if opts.TLS != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*opts.TLS}})
	}
	go s.srv.Serve(ln) //nolint:errcheck // returns when Close closes the listener
	return s, nil
}

// quiet drops fasthttp's messages about connections that went wrong: test
// backends meet such clients on purpose.
type quiet struct{}

func (quiet) Printf(string, ...any) {}

// Addr is the address the backend listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is "http://" + Addr, or "https://" + Addr for a TLS backend.
func (s *Server) URL() string {
	if s.opts.TLS != nil {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// Name is the value the backend sends as X-Backend.
func (s *Server) Name() string { return s.opts.Name }

// Requests counts the requests the backend has received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// SetHealthy turns the /health endpoint up or down.
func (s *Server) SetHealthy(up bool) { s.down.Store(!up) }

// Close stops the backend and closes its connections, open ones included.
// It closes the listener itself as well: fasthttp's Shutdown closes only the
// listeners its Serve has taken, and Start's goroutine may not have got
// there yet (then Serve finds the listener closed and returns).
func (s *Server) Close() error {
	err := s.srv.Shutdown()
	if lerr := s.ln.Close(); lerr != nil && !errors.Is(lerr, net.ErrClosed) && err == nil {
		err = lerr
	}
	return err
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	s.requests.Add(1)
	ctx.Response.Header.Set("X-Backend", s.opts.Name)
	if s.opts.Latency > 0 {
		time.Sleep(s.opts.Latency)
	}
	path := ctx.Path()
	switch {
	case string(path) == "/health":
		if s.down.Load() {
			ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
			ctx.SetBodyString("down\n")
			return
		}
		ctx.SetBodyString("ok\n")
	case string(path) == "/control/health/down":
		s.SetHealthy(false)
		ctx.SetBodyString("health down\n")
	case string(path) == "/control/health/up":
		s.SetHealthy(true)
		ctx.SetBodyString("health up\n")
	case bytes.HasPrefix(path, []byte("/echo")):
		s.echo(ctx)
	case string(path) == "/headers":
		for _, v := range ctx.QueryArgs().PeekMulti("h") {
			name, value, _ := bytes.Cut(v, []byte{':'})
			ctx.Response.Header.AddBytesKV(name, bytes.TrimSpace(value))
		}
		ctx.SetBody(s.body)
	case bytes.HasPrefix(path, []byte("/status/")):
		code, err := strconv.Atoi(string(path[len("/status/"):]))
		if err != nil || code < 200 || code > 599 {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			return
		}
		ctx.SetStatusCode(code)
		ctx.SetBodyString("status " + strconv.Itoa(code) + "\n")
	case bytes.HasPrefix(path, []byte("/delay/")):
		d, err := time.ParseDuration(string(path[len("/delay/"):]))
		if err != nil {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			return
		}
		time.Sleep(d)
		ctx.SetBody(s.body)
	case string(path) == "/upgrade":
		key := ctx.Request.Header.Peek("Sec-WebSocket-Key")
		if !ctx.Request.Header.ConnectionUpgrade() || len(key) == 0 {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			ctx.SetBodyString("not an upgrade\n")
			return
		}
		sum := sha1.Sum(append(append([]byte(nil), key...), "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"...))
		ctx.SetStatusCode(fasthttp.StatusSwitchingProtocols)
		ctx.Response.Header.Set("Upgrade", "websocket")
		ctx.Response.Header.Set("Connection", "Upgrade")
		ctx.Response.Header.Set("Sec-WebSocket-Accept", base64.StdEncoding.EncodeToString(sum[:]))
		push, _ := time.ParseDuration(string(ctx.QueryArgs().Peek("push")))
		ctx.Hijack(func(c net.Conn) {
			c.Write([]byte("welcome\n")) //nolint:errcheck
			// The connection is fasthttp's again once this returns: the
			// pushing ends first.
			var wg sync.WaitGroup
			done := make(chan struct{})
			defer wg.Wait()
			defer close(done)
			if push > 0 {
				wg.Go(func() {
					t := time.NewTicker(push)
					defer t.Stop()
					for {
						select {
						case <-done:
							return
						case <-t.C:
						}
						if _, err := c.Write([]byte("tick\n")); err != nil {
							return
						}
					}
				})
			}
			io.Copy(c, c) //nolint:errcheck
		})
	case string(path) == "/close":
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {})
	case bytes.HasPrefix(path, []byte("/malformed/")):
		answer, ok := malformed[string(path[len("/malformed/"):])]
		if !ok {
			ctx.SetStatusCode(fasthttp.StatusNotFound)
			return
		}
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) { c.Write([]byte(answer)) }) //nolint:errcheck
	case bytes.HasPrefix(path, []byte("/bytes/")):
		n, err := strconv.ParseInt(string(path[len("/bytes/"):]), 10, 64)
		if err != nil || n < 0 {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			return
		}
		body := Pattern(n)
		if ctx.QueryArgs().Has("chunked") {
			// Hidden behind a plain io.Reader, the length is unknown
			// to fasthttp, which then sends the body chunked.
			ctx.Response.SetBodyStream(struct{ io.Reader }{body}, -1)
			return
		}
		ctx.Response.SetBodyStream(body, int(n))
	case bytes.HasPrefix(path, []byte("/drip/")):
		count, every, _ := bytes.Cut(path[len("/drip/"):], []byte{'/'})
		n, err1 := strconv.Atoi(string(count))
		d, err2 := time.ParseDuration(string(every))
		if err1 != nil || err2 != nil || n < 0 {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			return
		}
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			for i := range n {
				if i > 0 {
					time.Sleep(d)
				}
				fmt.Fprintf(w, "data: %d\n\n", i)
				if w.Flush() != nil {
					return
				}
			}
		})
	case string(path) == "/sink":
		sum := crc32.NewIEEE()
		n, err := io.Copy(sum, ctx.RequestBodyStream())
		if err != nil {
			ctx.SetStatusCode(fasthttp.StatusBadRequest)
			ctx.SetBodyString(err.Error() + "\n")
			return
		}
		fmt.Fprintf(ctx, "{\"bytes\": %d, \"crc32\": %d}\n", n, sum.Sum32())
	case string(path) == "/garbage":
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) { c.Write([]byte("this is not HTTP\r\n\r\n")) }) //nolint:errcheck
	default:
		if s.opts.ErrorRate > 0 && rand.Float64() < s.opts.ErrorRate {
			ctx.SetStatusCode(fasthttp.StatusInternalServerError)
			ctx.SetBodyString("injected error\n")
			return
		}
		ctx.SetBody(s.body)
	}
}

// malformed are answers a backend must never get through a proxy.
var malformed = map[string]string{
	"two-cl":             "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"bad-cl":             "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
	"bad-status":         "HTTP/1.1 2x0 OK\r\nContent-Length: 5\r\n\r\nhello",
	"ctl-in-value":       "HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 5\r\n\r\nhello",
	"short-body":         "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello",
	"cl-and-te":          "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"obs-fold":           "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
	"space-before-colon": "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
	"bad-name":           "HTTP/1.1 200 OK\r\nX(Bad): 1\r\nContent-Length: 5\r\n\r\nhello",
	// Streamed, so the header has gone to the client when the body fails:
	// the client must see the body cut short, never a complete answer.
	"short-stream": "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nhello",
	"bad-chunk":    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
}

// Pattern returns a reader of n bytes that /bytes/{n} sends and a client
// can check: byte i is i mod 251.
func Pattern(n int64) io.Reader {
	return io.LimitReader(&pattern{}, n)
}

type pattern struct{ i int64 }

// patternBytes is the pattern from offset 0, a whole number of periods long.
var patternBytes = func() []byte {
	b := make([]byte, 251*256)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

func (p *pattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		n += copy(b[n:], patternBytes[(p.i+int64(n))%251:])
	}
	p.i += int64(n)
	return n, nil
}

// Echo is what /echo answers: the request exactly as the backend received it.
type Echo struct {
	Backend string      `json:"backend"`
	Client  string      `json:"client"` // the client's address: the peer's, or a PROXY protocol header's
	Method  string      `json:"method"`
	URI     string      `json:"uri"` // the request-target, byte for byte
	Proto   string      `json:"proto"`
	Headers [][2]string `json:"headers"` // in order, repeated names kept
	Body    string      `json:"body"`
}

func (s *Server) echo(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	e := Echo{
		Backend: s.opts.Name,
		Client:  ctx.RemoteAddr().String(),
		Method:  string(h.Method()),
		URI:     string(h.RequestURI()),
		Proto:   string(h.Protocol()),
		Body:    string(ctx.Request.Body()),
	}
	// The raw header block, so the echo shows the headers byte for byte
	// as they arrived (fasthttp's own accessors would merge Cookie lines).
	for line := range bytes.SplitSeq(h.RawHeaders(), []byte("\r\n")) {
		if k, v, ok := bytes.Cut(line, []byte(":")); ok {
			e.Headers = append(e.Headers, [2]string{string(k), string(bytes.TrimLeft(v, " \t"))})
		}
	}
	out, _ := json.Marshal(e)
	ctx.SetContentType("application/json")
	ctx.SetBody(out)
}

// Get returns the values of a header in an Echo, matching the name without
// regard to case.
func (e *Echo) Get(name string) []string {
	var out []string
	for _, kv := range e.Headers {
		if bytes.EqualFold([]byte(kv[0]), []byte(name)) {
			out = append(out, kv[1])
		}
	}
	return out
}
