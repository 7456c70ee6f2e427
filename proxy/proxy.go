// Package proxy is fastlb's request path: a fasthttp handler that checks the
// request, rewrites its headers, picks a backend, forwards, retries where it
// is safe, and maps failures to 502, 503 and 504.
package proxy

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"fastlb/balancer"
	"fastlb/config"
	"fastlb/internal/header"
	"fastlb/upstream"
)

// Settings are the parts of a Proxy that a reload can change: the pools
// and the routes to them.
type Settings struct {
	// Default takes the requests no route matches, when it has backends;
	// else they get 404.
	Default *Pool
	// Pools are every pool, Default included.
	Pools  []*Pool
	Routes []Route
	// RateLimit applies to the requests of routes without their own, and
	// to those no route takes.
	RateLimit config.RateLimit
	// TunnelIdleTimeout ends an upgraded (WebSocket) connection after that
	// long without a byte in either direction; 0 keeps it open.
	TunnelIdleTimeout time.Duration
}

// Options configure a Proxy.
type Options struct {
	Logger *slog.Logger
	// Metrics receives fastlb_retries_total and fastlb_no_backend_total;
	// nil keeps them in a set of the proxy's own.
	Metrics *metrics.Set
	// AccessLog, when not nil, gets a line for every request.
	AccessLog *AccessLog
	// MaxRequestBody and ClientReadTimeout are the server's
	// max_request_body and client_read_timeout, which the proxy applies to
	// streamed request bodies; 0: no limit.
	MaxRequestBody    int
	ClientReadTimeout time.Duration
}

// settings are Settings prepared for the request path.
type settings struct {
	Settings
	routes routes
	limit  *limit // the top level's; nil: none
}

// Proxy routes requests to its pools and forwards them to their backends.
// It is safe for concurrent use; ServeHTTP takes no lock and, on success,
// allocates nothing.
type Proxy struct {
	settings  atomic.Pointer[settings]
	logger    *slog.Logger
	accessLog atomic.Pointer[AccessLog]
	retries   *metrics.Counter
	noBackend *metrics.Counter
	noRoute   *metrics.Counter
	restuck   *metrics.Counter
	upgrades  *metrics.Counter
	tunnels   tunnels

	queued        *metrics.Counter
	queueTimeouts *metrics.Counter

	metrics *metrics.Set
	limits  limits

	maxBody           int
	clientReadTimeout time.Duration

	idPrefix idPrefix // random per process, so request ids differ across restarts
	idSeq    atomic.Uint64

	// retryBudget holds retries in tenths: every request adds budgetEarn,
	// every retry spends budgetCost, so retries stay near 20% of requests
	// (with a burst of budgetCap/budgetCost), and a failing fleet is not
	// hit with a multiple of its load.
	retryBudget  atomic.Int64
	budgetDenied *metrics.Counter
}

const (
	budgetEarn = 2
	budgetCost = 10
	budgetCap  = 100 * budgetCost
)

// earnRetry credits the budget for one request. It writes only when the
// budget is not full, so a healthy fleet costs one atomic load.
func (p *Proxy) earnRetry() {
	if p.retryBudget.Load() < budgetCap {
		p.retryBudget.Add(budgetEarn)
	}
}

// spendRetry takes one retry from the budget, or reports that there is none.
func (p *Proxy) spendRetry() bool {
	for {
		b := p.retryBudget.Load()
		if b < budgetCost {
			p.budgetDenied.Inc()
			return false
		}
		if p.retryBudget.CompareAndSwap(b, b-budgetCost) {
			return true
		}
	}
}

// New returns a proxy with the given settings. The caller connects each
// pool's policy, hash and cookie table to its upstream pool (PoolFor does).
func New(s Settings, opts Options) *Proxy {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	p := &Proxy{
		logger:       opts.Logger,
		retries:      opts.Metrics.NewCounter("fastlb_retries_total"),
		noBackend:    opts.Metrics.NewCounter("fastlb_no_backend_total"),
		noRoute:      opts.Metrics.NewCounter("fastlb_no_route_total"),
		restuck:      opts.Metrics.NewCounter("fastlb_sticky_rebalanced_total"),
		budgetDenied: opts.Metrics.NewCounter("fastlb_retry_budget_exhausted_total"),
		upgrades:     opts.Metrics.NewCounter("fastlb_upgrades_total"),

		queued:        opts.Metrics.NewCounter("fastlb_queued_total"),
		queueTimeouts: opts.Metrics.NewCounter("fastlb_queue_timeouts_total"),

		maxBody:           opts.MaxRequestBody,
		clientReadTimeout: opts.ClientReadTimeout,
		metrics:           opts.Metrics,
	}
	var open atomic.Int64
	p.tunnels = tunnels{open: map[*tunnel]struct{}{}, count: func(d int) { open.Add(int64(d)) }}
	opts.Metrics.NewGauge("fastlb_upgraded_connections", func() float64 { return float64(open.Load()) })
	opts.Metrics.NewGauge("fastlb_queued_requests", func() float64 {
		n := 0
		for _, pl := range p.settings.Load().Pools {
			n += pl.Upstream.Waiting()
		}
		return float64(n)
	})
	p.retryBudget.Store(budgetCap)
	p.Reconfigure(s)
	p.SetAccessLog(opts.AccessLog)
	p.idPrefix = newIDPrefix()
	return p
}

// SetAccessLog starts (or, with nil, stops) logging every request to l.
func (p *Proxy) SetAccessLog(l *AccessLog) { p.accessLog.Store(l) }

// AccessLog is the access log in use, or nil.
func (p *Proxy) AccessLog() *AccessLog { return p.accessLog.Load() }

// Reconfigure switches to new settings. Requests already running finish
// with the old ones.
func (p *Proxy) Reconfigure(s Settings) {
	for _, pl := range s.Pools {
		pl.sticky = newSticky(pl.Sticky)
	}
	p.limits.mu.Lock()
	defer p.limits.mu.Unlock()
	kept := map[limitKey]*limit{}
	top := p.limits.get(kept, p.metrics, "", &s.RateLimit)
	st := &settings{Settings: s, limit: top}
	st.routes = newRoutes(s.Routes, func(r *config.Route) *limit {
		if r.RateLimit == nil {
			return top
		}
		return p.limits.get(kept, p.metrics, r.Label(), r.RateLimit)
	})
	p.limits.byKey = kept
	p.settings.Store(st)
}

// Settings are the settings in use.
func (p *Proxy) Settings() Settings { return p.settings.Load().Settings }

// ServeHTTP handles one client request.
func (p *Proxy) ServeHTTP(ctx *fasthttp.RequestCtx) {
	start := ctx.Time() // the server read the clock just before calling
	var out served
	p.serve(ctx, start, &out)
	if out.route != nil {
		out.route.rewriteResponse(&ctx.Response.Header)
	}
	if l := p.accessLog.Load(); l != nil {
		l.Log(ctx, &out, start, time.Now())
	}
}

// served is what became of a request: the route it took (nil: none), the
// pool it went to (nil: none), and the backend that answered last (nil:
// none did).
type served struct {
	route   *route
	pool    *Pool
	backend *upstream.Backend
}

// serve forwards the request and notes in out where it went. start is when
// the request arrived.
func (p *Proxy) serve(ctx *fasthttp.RequestCtx, start time.Time, out *served) {
	req := &ctx.Request
	if !isHTTP1(req.Header.Protocol()) {
		p.logger.Debug("request refused", "client", ctx.RemoteAddr().String(), "cause", "HTTP version not supported")
		ctx.SetConnectionClose()
		writeError(ctx, fasthttp.StatusHTTPVersionNotSupported)
		return
	}
	seen, err := header.CheckFields(req.Header.RawHeaders())
	if err != nil {
		p.logger.Debug("request refused", "client", ctx.RemoteAddr().String(), "cause", err.Error())
		ctx.SetConnectionClose()
		writeError(ctx, fasthttp.StatusBadRequest)
		return
	}
	var body *clientBody
	hasBody := req.IsBodyStream()
	if hasBody {
		var err error
		if body, err = p.takeBody(ctx); err != nil {
			p.refuseBody(ctx, err)
			return
		}
	}
	st := p.settings.Load()
	pl, lim := st.Default, st.limit
	if rt := st.routes.match(req); rt != nil {
		out.route, pl, lim = rt, rt.pool, rt.limit
	} else if pl != nil && len(pl.Upstream.Snapshot().All) == 0 {
		pl = nil
	}
	if lim != nil && !lim.allow(ctx, start) {
		return
	}
	if pl == nil {
		p.noRoute.Inc()
		p.logger.Debug("no route", "host", string(req.Header.Host()), "uri", string(req.Header.RequestURI()))
		writeNoRoute(ctx)
		return
	}
	out.pool = pl
	var key stickyKey
	if pl.sticky.Mode != config.StickyOff {
		key = pl.sticky.key(ctx) // before X-Forwarded-For changes
	}
	upgrade := upgradeOf(&req.Header)
	// "TE: trailers" is hop-by-hop but for HTTP/2 backends, which gRPC
	// needs it sent to (RFC 9113 section 8.2.2).
	teTrailers := seen&header.FieldTE != 0 && bytes.EqualFold(bytes.TrimSpace(req.Header.PeekBytes(headerTE)), trailers)
	header.RemoveHopByHop(&req.Header, seen)
	// HTTP/1.0 without keep-alive: fastlb still keeps its backend
	// connection open.
	req.Header.ResetConnectionClose()
	// The server has already answered the expectation (the client is
	// sending); the backend must not wait to invite the body.
	req.Header.Del("Expect")
	setForwarded(ctx, seen)
	p.setRequestID(&req.Header, seen)
	if out.route != nil && out.route.hasRules {
		out.route.rewriteRequest(&req.Header)
	}

	p.earnRetry()
	resp := &ctx.Response
	isTLS := ctx.IsTLS()
	noHost := len(req.Header.Host()) == 0
	var tried balancer.Tried
	last := &out.backend
	defer p.countRestick(&key, last)
	var queued time.Time
	for {
		b := p.pick(pl, &key, tried)
		if b == nil && tried.Len() == 0 && p.queue(pl, &queued) {
			continue
		}
		if b == nil {
			if tried.Len() == 0 {
				p.noBackend.Inc()
				cause := "none is healthy and active"
				if pl.Upstream.Snapshot().Full() {
					cause = "every one is at max_conns"
				}
				p.logger.Warn("no backend available", "cause", cause, "status", fasthttp.StatusServiceUnavailable,
					"method", string(req.Header.Method()), "uri", string(req.Header.RequestURI()), "pool", pl.Name)
				writeError(ctx, fasthttp.StatusServiceUnavailable)
			}
			// Otherwise the last failure's answer is already written.
			return
		}
		if tried.Len() > 0 {
			p.retries.Inc()
		}
		tried.Add(b)
		*last = b
		if wantTLS := b.Scheme == "https"; wantTLS != isTLS && !b.IsH2() {
			req.URI().SetScheme(b.Scheme)
			isTLS = wantTLS
		}
		if noHost {
			// An HTTP/1.0 request may come without Host; the backend
			// gets its own address, as nginx sends by default.
			req.SetHost(b.Addr)
		}
		var err error
		// The first attempt starts when the request arrived, unless its
		// body or the queue kept it: no need to read the clock again.
		attempt := start
		if tried.Len() > 1 || hasBody || !queued.IsZero() {
			attempt = time.Now()
		}

		if upgrade != nil && b.IsH2() {
			p.logger.Warn("upgrade refused", "backend", b.ID, "cause", "an HTTP/2 backend takes no HTTP/1.1 upgrade", "status", fasthttp.StatusBadGateway)
			writeError(ctx, fasthttp.StatusBadGateway)
			return
		}
		if upgrade != nil {
			err = p.serveUpgrade(ctx, st, pl, b, upgrade)
			if err == nil || err == errNotSwitched {
				b.Observe(resp.StatusCode(), time.Since(attempt))
				pl.Upstream.Answered(b, resp.StatusCode())
				if pl.sticky.insertsCookie() && b != key.cookie {
					pl.sticky.setCookie(ctx, b)
				}
				return
			}
		} else if b.IsH2() {
			err = b.DoH2(req, resp, teTrailers)
		} else if v := b.SendsProxy(); v != 0 {
			err = b.DoProxied(req, resp, upstream.ProxyHeader(v, ctx.RemoteAddr(), ctx.LocalAddr()))
		} else {
			err = b.Client.Do(req, resp)
		}
		if err == nil {
			b.Observe(resp.StatusCode(), time.Since(attempt))
			pl.Upstream.Answered(b, resp.StatusCode())
			break
		}
		if errors.Is(err, upstream.ErrFull) {
			// Another request took its last slot since the pick: not an
			// attempt. Pick again; the queue follows when none has room.
			tried.Drop()
			*last = tried.Last()
			continue
		}
		if body != nil && body.err != nil {
			// The client failed, not the backend: it stopped sending,
			// sent too much, or sent a malformed chunk.
			p.refuseBody(ctx, body.err)
			return
		}
		f := classify(err)
		b.Observe(f.status, time.Since(attempt))
		pl.Upstream.RequestFailed(b, f.connFailure, f.connFailure || f.timeout, err.Error())
		// A streamed body is sent again only if none of it was sent.
		resendable := body == nil || body.sent == 0
		retry := tried.Len() <= pl.Retries && resendable && (f.nothingSent || (!f.timeout && upstream.Idempotent(req))) && p.spendRetry()
		p.logger.Warn("backend request failed", "backend", b.ID, "cause", f.cause, "error", err.Error(),
			"status", f.status, "method", string(req.Header.Method()), "uri", string(req.Header.RequestURI()),
			"attempt", tried.Len(), "retry", retry, "pool", pl.Name)
		writeError(ctx, f.status)
		if !retry {
			return
		}
	}
	if resp.IsBodyStream() {
		if s, ok := resp.BodyStream().(upstream.Pacer); ok {
			// The server's write timeout then bounds each write of
			// the body, not the whole download.
			s.Pace(ctx.Conn(), p.clientReadTimeout)
		}
	}
	if pl.sticky.insertsCookie() && *last != key.cookie {
		pl.sticky.setCookie(ctx, *last)
	}
}

// queue waits for room when no backend could be picked because every one
// the request may go to is at max_conns, for at most QueueTimeout from the
// first wait (*since). It reports whether to pick again.
func (p *Proxy) queue(pl *Pool, since *time.Time) bool {
	if pl.QueueTimeout <= 0 || !pl.Upstream.Snapshot().Limited() {
		return false // nothing to wait for
	}
	now := time.Now()
	if since.IsZero() {
		*since = now
		p.queued.Inc()
	}
	// WaitForRoom also returns at once when a backend made room since the
	// pick.
	left := pl.QueueTimeout - now.Sub(*since)
	if left <= 0 || !pl.Upstream.WaitForRoom(left) {
		p.queueTimeouts.Inc()
		return false
	}
	return true
}

// pick chooses the backend for one attempt: the one the request is sticky
// to while it can take it, else the policy's choice. It notes in key which
// backend the request was sticky to, for countRestick.
func (p *Proxy) pick(pl *Pool, key *stickyKey, tried balancer.Tried) *upstream.Backend {
	switch {
	case key.cookie != nil:
		if b := key.cookie; b.StickyOK() && b.HasRoom() && !tried.Has(b) {
			return b
		}
	case key.hasHash:
		b, primary := pl.sticky.Hash.PickKey(key.hash, tried)
		if tried.Len() == 0 {
			key.owner, key.moved = b, !primary
		}
		if b != nil {
			return b
		}
	}
	return pl.Policy.Pick(tried)
}

// countRestick counts a sticky request that did not end on the backend its
// cookie or key names (fastlb_sticky_rebalanced_total).
func (p *Proxy) countRestick(key *stickyKey, last **upstream.Backend) {
	target := key.cookie
	if key.hasHash {
		target = key.owner
	}
	if key.moved || target != nil && *last != target {
		p.restuck.Inc()
	}
}

// failure is how a backend error is answered and counted.
type failure struct {
	status      int    // answer to the client when not retried
	cause       string // for the log
	nothingSent bool   // the request provably never reached the backend
	timeout     bool   // never retried
	connFailure bool   // counts towards marking the backend down at once
}

// classify maps an error of HostClient.Do to its answer. It is the one place
// that decides between 502, 503 and 504.
func classify(err error) failure {
	var dial *fasthttp.ErrDialWithUpstream
	var upgradeDial *dialError
	var netErr net.Error
	switch {
	case errors.Is(err, upstream.ErrStaleConn):
		// Sent again on fresh connections already where that was safe
		// (upstream.Idempotent); not evidence that the backend is down.
		return failure{status: fasthttp.StatusBadGateway, cause: "reused connection closed before a response"}
	case errors.As(err, &dial), errors.As(err, &upgradeDial), errors.Is(err, upstream.ErrCannotConnect):
		return failure{status: fasthttp.StatusBadGateway, cause: "cannot connect", nothingSent: true, connFailure: true}
	case errors.Is(err, fasthttp.ErrTLSHandshakeTimeout):
		return failure{status: fasthttp.StatusBadGateway, cause: "TLS handshake timed out", nothingSent: true, connFailure: true}
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return failure{status: fasthttp.StatusServiceUnavailable, cause: "backend at max_conns", nothingSent: true}
	case errors.Is(err, fasthttp.ErrTimeout), errors.As(err, &netErr) && netErr.Timeout():
		return failure{status: fasthttp.StatusGatewayTimeout, cause: "backend_timeout elapsed", timeout: true}
	case errors.Is(err, fasthttp.ErrConnectionClosed):
		return failure{status: fasthttp.StatusBadGateway, cause: "connection closed before a response", connFailure: true}
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		return failure{status: fasthttp.StatusBadGateway, cause: "response too large"}
	}
	return failure{status: fasthttp.StatusBadGateway, cause: "connection reset or invalid response", connFailure: true}
}

// isHTTP1 reports whether a request line's version is HTTP/1.x; fasthttp
// accepts any "HTTP/" version and speaks 1.1 to the backend.
func isHTTP1(proto []byte) bool {
	return len(proto) == len("HTTP/1.1") && string(proto[:len("HTTP/1.")]) == "HTTP/1." && proto[7] >= '0' && proto[7] <= '9'
}

var errorBodies = map[int]string{
	fasthttp.StatusHTTPVersionNotSupported:     "505 HTTP Version Not Supported\n",
	fasthttp.StatusBadRequest:                  "400 Bad Request\n",
	fasthttp.StatusRequestTimeout:              "408 Request Timeout\n",
	fasthttp.StatusRequestEntityTooLarge:       "413 Content Too Large\n",
	fasthttp.StatusRequestHeaderFieldsTooLarge: "431 Request Header Fields Too Large\n",
	fasthttp.StatusBadGateway:                  "502 Bad Gateway\n",
	fasthttp.StatusServiceUnavailable:          "503 Service Unavailable: no backend available\n",
	fasthttp.StatusGatewayTimeout:              "504 Gateway Timeout\n",
}

// writeNoRoute answers a request that no route takes.
func writeNoRoute(ctx *fasthttp.RequestCtx) {
	resp := &ctx.Response
	resp.SetStatusCode(fasthttp.StatusNotFound)
	resp.Header.SetContentType("application/json")
	resp.SetBodyString(`{"error": "no route"}` + "\n")
}

// writeError replaces the response with fastlb's own answer for status,
// keeping a decision to close the connection.
func writeError(ctx *fasthttp.RequestCtx, status int) {
	resp := &ctx.Response
	closeConn := resp.ConnectionClose()
	resp.Reset()
	if closeConn {
		resp.SetConnectionClose()
	}
	resp.SetStatusCode(status)
	resp.Header.SetContentType("text/plain; charset=utf-8")
	resp.SetBodyString(errorBodies[status])
}
