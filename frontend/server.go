// Package frontend is fastlb's client side: it owns the listeners, accepts
// connections (trying again when accepting fails for want of descriptors
// or memory), holds max_client_conns, serves each connection with
// fasthttp's Server.ServeConn, parks keep-alive connections idle longer
// than park_idle_after, recovers a panic of the handler, and drains
// connections at shutdown. What a request means is the handler's (proxy).
package frontend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"fastlb/config"
	"fastlb/internal/slogf"
	"fastlb/internal/sock"
)

// Options are a Server's limits and timeouts, from the configuration.
type Options struct {
	MaxConns       int           // max_client_conns: more are answered 503 and closed; 0 for no limit
	ParkIdleAfter  time.Duration // park_idle_after: 0 never parks
	IdleTimeout    time.Duration // client_idle_timeout
	ReadTimeout    time.Duration // client_read_timeout, also the time to write an answer
	MaxHeaderBytes int
	MaxRequestBody int
	// ErrorHandler answers a request fasthttp could not read.
	ErrorHandler func(ctx *fasthttp.RequestCtx, err error)
	// Panics counts the handler's recovered panics; nil counts nothing.
	Panics *metrics.Counter
	// Returned counts the times memory was returned after a burst (see
	// releaseAfter); nil counts nothing.
	Returned *metrics.Counter
	// AfterBurst, if set, is called when a burst has passed, before memory
	// is returned: for what else the burst left behind (the backends' idle
	// connections).
	AfterBurst func()
	Logger     *slog.Logger
	// Edge are the checks a connection passes before it is served.
	Edge Edge
	// Clients counts connections per client address for
	// Edge.MaxConnsPerClient; servers that share a limit share one. nil:
	// the server's own.
	Clients *Clients
	// Metrics receives fastlb_client_conns_refused_total{reason} and the
	// HTTP/2 metrics; nil: a set of the server's own.
	Metrics *metrics.Set
	// HTTP2 serves the TLS connections that choose h2 by ALPN (the TLS
	// configuration must offer it) with HTTP/2.
	HTTP2 bool
}

// Server serves the connections of its listeners with one handler. Its
// methods are safe for concurrent use.
type Server struct {
	fs        *fasthttp.Server // plain connections', whose waits for a request end at park_idle_after
	fsTLS     *fasthttp.Server // TLS connections', never parked
	handler   fasthttp.RequestHandler
	opts      Options
	parkAfter time.Duration // 0: connections are not parked
	slack     time.Duration // of the deadlines of a request being served (see sock.LazyDeadline)
	logger    *slog.Logger

	draining atomic.Bool  // answers carry Connection: close (see ShutdownWithContext)
	open     atomic.Int64 // connections accepted and not closed, tunnels included
	tunnels  atomic.Int64 // hijacked (upgraded) connections not closed
	parked   atomic.Int64 // connections waiting parked (waitParked)
	busy     atomic.Int64 // connections in a turn of fasthttp's (see conn)
	busyPeak atomic.Int64 // the most in a turn at once since watchMemory last looked

	setOnce sync.Once
	set     atomic.Pointer[parkSet] // nil until a connection parks, or if there can be none

	h2      *h2Server // nil without HTTP2
	edge    atomic.Pointer[Edge]
	clients *Clients
	refused map[string]*metrics.Counter // by reason

	workers  workers
	watching sync.Once
	stop     chan struct{} // closed by ShutdownWithContext: watchMemory ends

	mu       sync.Mutex
	lns      []*listener
	conns    map[*conn]struct{} // open and not hijacked
	stopping bool               // set by ShutdownWithContext once it closes idle connections
}

// New returns a server that answers requests with handler.
func New(handler fasthttp.RequestHandler, o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{handler: handler, opts: o, logger: o.Logger, conns: make(map[*conn]struct{}), stop: make(chan struct{})}
	s.edge.Store(&o.Edge)
	if s.clients = o.Clients; s.clients == nil {
		s.clients = NewClients()
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
		s.opts.Metrics = o.Metrics
	}
	s.refused = map[string]*metrics.Counter{}
	for _, r := range []string{RefusedMaxClientConns, RefusedMaxConnsPerClient, RefusedProxyProtocol} {
		s.refused[r] = o.Metrics.GetOrCreateCounter(`fastlb_client_conns_refused_total{reason="` + r + `"}`)
	}
	idle := o.IdleTimeout
	if o.ParkIdleAfter > 0 && (idle <= 0 || o.ParkIdleAfter < idle) {
		s.parkAfter = o.ParkIdleAfter
		// fasthttp ends a turn whose connection waited this long for its
		// next request; the connection then waits parked (see serveTurns).
		idle = o.ParkIdleAfter
	}
	s.slack = sock.Slack(o.ReadTimeout)
	s.fs = s.newFasthttp(idle)
	s.fsTLS = s.newFasthttp(o.IdleTimeout)
	if o.HTTP2 {
		s.enableHTTP2()
	}
	return s
}

// newFasthttp returns the fasthttp server of s that ends a wait for the
// next request after idle.
func (s *Server) newFasthttp(idle time.Duration) *fasthttp.Server {
	o := s.opts
	return &fasthttp.Server{
		Handler:                      s.handle,
		ErrorHandler:                 o.ErrorHandler,
		ReadBufferSize:               o.MaxHeaderBytes,
		WriteBufferSize:              16 << 10,
		MaxRequestBodySize:           o.MaxRequestBody,
		StreamRequestBody:            true,
		Concurrency:                  math.MaxInt32, // MaxConns is the limit, held at accept
		ReadTimeout:                  o.ReadTimeout,
		WriteTimeout:                 o.ReadTimeout,
		IdleTimeout:                  idle,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		SecureErrorLogMessage:        true,
		Logger:                       slogf.Debug(o.Logger),
		ConnState:                    s.connState,
		// No TCPKeepalive: connections have the probes their listening
		// socket gives them (cmd/fastlb's listenConfig). ReduceMemoryUsage
		// is left off: a connection idle for long gives its buffers back
		// by parking, and one between two close requests keeps them.
	}
}

// handle is the handler as fasthttp calls it: a panic is recovered, and
// while the server drains every answer closes its connection.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	defer func() {
		if v := recover(); v != nil {
			s.recovered(ctx, v)
		}
	}()
	s.handler(ctx)
	if s.draining.Load() && !ctx.Hijacked() {
		ctx.SetConnectionClose()
	}
}

// recovered answers a request whose handler panicked with 500 and closes its
// connection: what the handler left half done is not trusted with another
// request. An upgrade the handler had begun is not carried out.
func (s *Server) recovered(ctx *fasthttp.RequestCtx, v any) {
	if c := s.opts.Panics; c != nil {
		c.Inc()
	}
	s.logger.Error("panic serving a request; answered 500", "panic", fmt.Sprint(v),
		"method", string(ctx.Method()), "uri", string(ctx.RequestURI()), "client", ctx.RemoteAddr().String(),
		"stack", string(debug.Stack()))
	ctx.Hijack(nil)
	resp := &ctx.Response
	resp.Reset()
	resp.SetConnectionClose()
	resp.SetStatusCode(fasthttp.StatusInternalServerError)
	resp.Header.SetContentType("text/plain; charset=utf-8")
	resp.SetBodyString("500 Internal Server Error\n")
}

// connState follows fasthttp's account of a connection: active once a
// request's first byte arrived, idle once its answer is sent. fasthttp
// calls it from the goroutine serving the connection.
func (s *Server) connState(nc net.Conn, state fasthttp.ConnState) {
	var c *conn
	switch x := nc.(type) {
	case *conn:
		c = x
	case *tlsConn:
		c = x.c
	default:
		return
	}
	switch state {
	case fasthttp.StateActive:
		if c.answered {
			c.quiet = 0 // a request within park_idle_after of the last answer
		}
		c.state.Store(int32(state))
	case fasthttp.StateIdle:
		c.answered = true
		c.state.Store(int32(state))
	case fasthttp.StateHijacked:
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.tunnels.Add(1)
		if c.state.Swap(int32(state)) == stateClosed {
			s.tunnels.Add(-1) // the tunnel closed it already
		}
	}
}

// Serve accepts plain connections on ln and serves them until ln is closed
// (then it returns nil) or accepting fails for good.
func (s *Server) Serve(ln net.Listener) error { return s.serveListener(ln, nil) }

// ServeTLS is Serve for connections that speak TLS with cfg.
func (s *Server) ServeTLS(ln net.Listener, cfg *tls.Config) error { return s.serveListener(ln, cfg) }

func (s *Server) serveListener(ln net.Listener, cfg *tls.Config) error {
	l := &listener{Listener: ln, retry: newAcceptRetry(s.logger)}
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		return nil
	}
	s.lns = append(s.lns, l)
	s.mu.Unlock()
	s.watching.Do(func() { go s.watchMemory(s.stop) })
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.draining.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.admit(nc, cfg)
	}
}

// admit serves a new connection, or refuses it if max_client_conns are
// open. What else it must pass (Edge) and a TLS handshake take place in the
// connection's goroutine.
func (s *Server) admit(nc net.Conn, cfg *tls.Config) {
	if n := s.open.Add(1); s.opts.MaxConns > 0 && n > int64(s.opts.MaxConns) {
		s.open.Add(-1)
		s.countRefused(RefusedMaxClientConns)
		go refuse(nc, cfg)
		return
	}
	c := &conn{srv: s}
	c.Init(nc)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	e := s.edge.Load()
	switch {
	case cfg != nil:
		go s.admitted(c, e, func(c *conn) {
			c.direct = true
			s.serving(1)
			s.fsTLS.ServeConn(&tlsConn{Conn: tls.Server(c, cfg), c: c}) //nolint:errcheck // fasthttp closes it and answers what it could not serve
			s.serving(-1)
		})
	case e.on():
		go s.admitted(c, e, nil)
	default:
		s.run(c)
	}
}

// countRefused counts a connection refused for reason.
func (s *Server) countRefused(reason string) { s.refused[reason].Inc() }

// refuse answers a connection over max_client_conns with 503 and closes it.
func refuse(nc net.Conn, cfg *tls.Config) {
	if cfg != nil {
		nc = tls.Server(nc, cfg)
	}
	nc.SetDeadline(time.Now().Add(time.Second)) //nolint:errcheck // the write fails instead
	nc.Write(tooManyConns)                      //nolint:errcheck // closed next either way
	nc.Close()
}

// tooManyConns is the answer on a connection over max_client_conns.
var tooManyConns = func() []byte {
	body := "503 Service Unavailable: too many client connections\n"
	return []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body)
}()

// OpenConnections is the number of client connections open, parked ones
// included, upgraded ones (tunnels) not.
func (s *Server) OpenConnections() int { return int(s.open.Load() - s.tunnels.Load()) }

// Parked is the number of connections waiting parked for their next
// request.
func (s *Server) Parked() int { return int(s.parked.Load()) }

// Shutdown is ShutdownWithContext without a time limit.
func (s *Server) Shutdown() error { return s.ShutdownWithContext(context.Background()) }

// drainIdle is how long a keep-alive connection may stay idle, after a
// shutdown began, before it is closed without an answer. A client in the
// middle of its work sends its next request within a round trip and its
// own processing of the last answer, milliseconds; a browser fetching a
// page's parts, within a few hundred. Closing a connection at that moment
// would fail the request it is already sending, since nothing tells the
// client before it writes. One idle for a second is between bursts: it is
// closed, as nginx and HAProxy close idle connections when they stop.
const drainIdle = time.Second

// ShutdownWithContext stops accepting and, for drainIdle (less once no
// connection is left, or when ctx ends sooner), answers every request with
// Connection: close, so that a client sending its next request on a
// keep-alive connection gets its answer and is told to go elsewhere rather
// than finding the connection closed under it. Then it closes the
// connections left idle, parked ones included, and waits for the requests
// still in flight, until ctx ends (then it returns ctx.Err()). Upgraded
// connections are not waited for: they are their tunnels'.
func (s *Server) ShutdownWithContext(ctx context.Context) error {
	s.mu.Lock()
	first := !s.draining.Swap(true)
	lns := s.lns
	s.lns = nil
	if first {
		close(s.stop)
	}
	s.mu.Unlock()
	for _, l := range lns {
		l.Close() //nolint:errcheck // Serve returns
	}
	var h2done chan error
	if s.h2 != nil && first {
		// GOAWAY on every HTTP/2 connection now; their streams finish.
		h2done = make(chan error, 1)
		go func() { h2done <- s.h2.shutdown(ctx) }()
	}
	drained := s.waitClosed(ctx, drainIdle)
	s.closeParked()
	s.workers.stop()
	if !drained {
		s.mu.Lock()
		s.stopping = true
		var idle []*conn
		for c := range s.conns {
			if st := c.state.Load(); st != int32(fasthttp.StateActive) {
				idle = append(idle, c)
			}
		}
		s.mu.Unlock()
		for _, c := range idle {
			c.close() //nolint:errcheck // its goroutine sees the connection end
		}
	}
	if h2done != nil {
		<-h2done
	}
	if !s.waitClosed(ctx, 0) {
		return ctx.Err()
	}
	return nil
}

// waitClosed waits until no connection is open (then it reports true), ctx
// ends, or d passes (if not 0).
func (s *Server) waitClosed(ctx context.Context, d time.Duration) bool {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.OpenConnections() > 0 {
		select {
		case <-tick.C:
		case <-timeout:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// RetryAccepts returns ln with its accepts tried again as a Server's are
// (see acceptRetry), failures logged to logger: for a listener served by
// another server (the admin API).
func RetryAccepts(ln net.Listener, logger *slog.Logger) net.Listener {
	return &listener{Listener: ln, retry: newAcceptRetry(logger)}
}

// FromConfig returns the Options the configuration sets; the caller adds
// the ErrorHandler, Panics, Logger, Metrics and Clients.
func FromConfig(cfg *config.Config) Options {
	return Options{
		MaxConns:       cfg.MaxClientConns,
		ParkIdleAfter:  cfg.ParkIdleAfter,
		IdleTimeout:    cfg.ClientIdleTimeout,
		ReadTimeout:    cfg.ClientReadTimeout,
		MaxHeaderBytes: cfg.MaxHeaderBytes,
		MaxRequestBody: cfg.MaxRequestBody,
		Edge:           EdgeOf(cfg),
	}
}

// EdgeOf returns the Edge the configuration sets.
func EdgeOf(cfg *config.Config) Edge {
	pp := cfg.ProxyProtocol
	return Edge{ProxyProtocol: pp.Accept, Trusted: pp.TrustedNets, HeaderTimeout: pp.Timeout,
		MaxConnsPerClient: cfg.MaxConnsPerClient}
}
