// Package upstream is the one home of backend state: each Backend's
// connection pool, counters, health and admin state, and the Pool's immutable
// snapshot of the backend set.
//
// The request path reads a Snapshot with one atomic load and takes no lock.
// Every change (health flip, passive failure, admin call, reload) goes through
// the Pool's methods, which build a new Snapshot and publish it with one
// atomic store.
package upstream

import (
	"bufio"
	"crypto/tls"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/config"
)

// State is a backend's admin state.
type State uint32

const (
	StateActive State = iota // takes traffic when healthy and weighted
	StateDrain               // takes no new requests; in-flight ones finish
	StateMaint               // takes no requests at all and is not health-checked
)

func (s State) String() string {
	switch s {
	case StateActive:
		return "active"
	case StateDrain:
		return "drain"
	case StateMaint:
		return "maint"
	}
	return "unknown"
}

// noCopy makes `go vet` report copies of structs that embed it.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}

// CheckResult is the outcome of one active health check.
type CheckResult struct {
	At      time.Time
	OK      bool
	Latency time.Duration
	Err     string // empty when OK
}

// Backend is one upstream server. It is safe for concurrent use and must not
// be copied. Its identity fields never change; its weight, state and health
// change only through the Pool that owns it.
type Backend struct {
	_ noCopy

	ID     string // admin API name
	URL    string // as configured
	Scheme string // "http", "https", "h2c" or "h2"
	Addr   string // host:port dialled

	// Client is the backend's one connection pool. fasthttp's own retries
	// are off: the proxy decides whether and where to retry.
	Client *fasthttp.HostClient
	t      *transport // Client's

	maxConns int64 // 0 = unlimited
	room     *room // the pool's; Release wakes a request waiting in it

	// Hot counters, written on every request.
	active   atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	// staleConns counts reused connections that failed before answering
	// (see transport.RoundTrip).
	staleConns atomic.Uint64
	codes      [500]atomic.Uint64 // answers by status, 100..599
	latency    histogram

	checksOK     atomic.Uint64
	checksFailed atomic.Uint64

	// Control state, written by the Pool.
	weight    atomic.Int32
	state     atomic.Uint32
	healthy   atomic.Bool
	checked   atomic.Bool  // a first health check has reported
	riseCount atomic.Int32 // consecutive successful checks while down
	fallCount atomic.Int32 // consecutive failed checks while up
	connFails atomic.Int32 // consecutive failed connections on the request path
	lastCheck atomic.Pointer[CheckResult]
	removed   atomic.Bool // no longer in the Pool

	out outlierState // outlier detection and slow start

	// h2 is an HTTP/2 backend's transport (h2c://, h2://), which Client
	// is not used for; nil for the others.
	h2 *http.Transport
}

// ClientOptions are the HostClient settings shared by every backend.
type ClientOptions struct {
	ConnectTimeout time.Duration // limit for dialling; Pool.SetConnectTimeout changes it later
	// BackendTimeout bounds one attempt: sending the request and reading
	// the response, or each read of a streamed response body. 0: none.
	// Pool.SetBackendTimeout changes it later.
	BackendTimeout time.Duration
	MaxHeaderBytes int // largest response header accepted from a backend
	// TLS is the base configuration of https:// backends; each backend
	// clones it with its own ServerName. nil: system roots, verification on.
	TLS *tls.Config
}

// room is where requests wait while every backend they may go to is at
// max_conns. A backend with a limit that finishes a request while one
// waits hands it a token; the waiter then picks again. Channel receivers
// are served in order, so waiters are served first come, first served.
type room struct {
	waiting atomic.Int32
	tokens  chan struct{}
}

// clientSettings are a pool's ClientOptions as its backends read them.
type clientSettings struct {
	room           room
	connectTimeout atomic.Int64
	backendTimeout atomic.Int64
	// sendProxy is the PROXY protocol version each connection starts
	// with, 1 or 2; 0: none (send_proxy_protocol).
	sendProxy      atomic.Int32
	maxHeaderBytes int
	tls            *tls.Config

	// The backends share one dialer, whose DNS cache is by address, and
	// the buffers of their requests. A HostClient's own would be one per
	// backend: a dialer's cache cleaner lives a minute after its last
	// dial, and each backend would keep buffers of its own, which a
	// backend added and removed under load allocates anew and keeps
	// reachable until its connections have closed.
	dialer           fasthttp.TCPDialer
	readers, writers sync.Pool
	smallWriters     sync.Pool // of writeSize(false), for requests without a body
}

func newClientSettings(o ClientOptions) *clientSettings {
	c := &clientSettings{maxHeaderBytes: o.MaxHeaderBytes, tls: o.TLS,
		room: room{tokens: make(chan struct{}, 64)},
		// Concurrency 0: unlimited. KeepAlive -1: no TCP keep-alive
		// probes, as HAProxy (no srvtcpka) and nginx
		// (proxy_socket_keepalive off) have it by default. Go's dialer
		// would set them with four setsockopt calls per connection, and
		// they could never fire: pooled connections close after 4 s idle
		// (MaxIdleConnDuration), before the first probe at 15 s, and
		// backend_timeout bounds a request's waits.
		dialer: fasthttp.TCPDialer{DNSCacheDuration: time.Minute, KeepAlive: -1},
	}
	c.connectTimeout.Store(int64(o.ConnectTimeout))
	c.backendTimeout.Store(int64(o.BackendTimeout))
	return c
}

// Sizes of the buffers of a backend request. The writer of a request with
// a body holds the request whose body is held in memory (up to
// StreamThreshold) in one write: split over two, its end reaches the
// backend in a segment of its own and wakes it a second time. A request
// without a body takes a writer of the header's size: a burst of requests
// in flight at once then holds a fifth of the memory.
func (c *clientSettings) readSize() int { return max(c.maxHeaderBytes, 4096) }
func (c *clientSettings) writeSize(body bool) int {
	if !body {
		return c.readSize()
	}
	return StreamThreshold + c.readSize()
}

// reader lends a buffered reader of conn; putReader takes it back.
func (c *clientSettings) reader(conn net.Conn) *bufio.Reader {
	if br, ok := c.readers.Get().(*bufio.Reader); ok {
		br.Reset(conn)
		return br
	}
	return bufio.NewReaderSize(conn, c.readSize())
}

func (c *clientSettings) putReader(br *bufio.Reader) {
	br.Reset(nil)
	c.readers.Put(br)
}

// writer lends a buffered writer to conn for a request with a body or
// without; putWriter takes it back.
func (c *clientSettings) writer(conn net.Conn, body bool) *bufio.Writer {
	pool := c.writerPool(body)
	if bw, ok := pool.Get().(*bufio.Writer); ok {
		bw.Reset(conn)
		return bw
	}
	return bufio.NewWriterSize(conn, c.writeSize(body))
}

func (c *clientSettings) putWriter(bw *bufio.Writer, body bool) {
	bw.Reset(nil)
	c.writerPool(body).Put(bw)
}

func (c *clientSettings) writerPool(body bool) *sync.Pool {
	if body {
		return &c.writers
	}
	return &c.smallWriters
}

func newBackend(c config.Backend, opts *clientSettings) *Backend {
	b := &Backend{ID: c.ID, URL: c.URL, Scheme: c.Scheme, Addr: c.Addr, maxConns: int64(c.MaxConns), room: &opts.room}
	b.weight.Store(int32(c.Weight))
	st, _ := parseState(c.State)
	b.state.Store(uint32(st))
	b.Client = newHostClient(c, opts)
	b.t = &transport{b: b, opts: opts}
	b.Client.Transport = b.t
	if c.Scheme == "h2c" || c.Scheme == "h2" {
		b.h2 = newH2Transport(c, opts)
	}
	return b
}

// CloseIdleConnections closes b's idle connections.
func (b *Backend) CloseIdleConnections() {
	b.Client.CloseIdleConnections()
	if b.h2 != nil {
		b.h2.CloseIdleConnections()
	}
}

// parseState maps a config state to its State; "" is active.
func parseState(s string) (State, bool) {
	for _, st := range []State{StateActive, StateDrain, StateMaint} {
		if st.String() == s {
			return st, true
		}
	}
	return StateActive, s == ""
}

// ParseState maps "active", "drain" and "maint" to their State.
func ParseState(s string) (State, bool) {
	if s == "" {
		return 0, false
	}
	return parseState(s)
}

func newHostClient(c config.Backend, opts *clientSettings) *fasthttp.HostClient {
	maxConns := c.MaxConns
	if maxConns == 0 {
		maxConns = math.MaxInt32 // "unlimited"; fasthttp's default caps at 512
	}
	var hc *fasthttp.HostClient
	hc = &fasthttp.HostClient{
		Addr: c.Addr,
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			// timeout is what is left of the request's deadline (0: none).
			if ct := time.Duration(opts.connectTimeout.Load()); ct > 0 && (timeout <= 0 || ct < timeout) {
				timeout = ct
			}
			if timeout <= 0 {
				timeout = fasthttp.DefaultDialTimeout
			}
			c, err := opts.dialer.DialDualStackTimeout(addr, timeout)
			if err != nil {
				return nil, err
			}
			bc := &backendConn{opts: opts}
			bc.Init(c)
			if hc.IsTLS && opts.sendProxy.Load() != 0 {
				// The PROXY protocol header goes before the TLS
				// handshake: the handshake is left to the first write,
				// which follows the header (transport.roundTrip).
				return tls.Client(bc, hc.TLSConfig), nil
			}
			return bc, nil
		},
		MaxConns:                      maxConns,
		MaxConnWaitTimeout:            0, // a full backend is reported at once; the proxy tries another
		MaxIdleConnDuration:           4 * time.Second,
		ConnPoolStrategy:              fasthttp.LIFO,
		ReadBufferSize:                opts.readSize(), // fastlb's transport takes its buffers from opts
		WriteBufferSize:               opts.writeSize(true),
		DisablePathNormalizing:        true,
		DisableHeaderNamesNormalizing: false,
		NoDefaultUserAgentHeader:      true,
		MaxIdemponentCallAttempts:     1,
		RetryIfErr: func(*fasthttp.Request, int, error) (bool, bool) {
			return false, false
		},
		SecureErrorLogMessage: true,
	}
	if c.Scheme == "https" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if opts.tls != nil {
			cfg = opts.tls.Clone()
		}
		// Set explicitly: fasthttp would otherwise derive it from Addr.
		cfg.ServerName = c.Host
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
		hc.IsTLS = true
		hc.TLSConfig = cfg
		// Bounds the TLS handshake, which fasthttp otherwise leaves open-ended.
		hc.WriteTimeout = time.Minute
	}
	return hc
}

// Weight is the backend's current weight, 0..config.MaxWeight.
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// State is the backend's current admin state.
func (b *Backend) State() State { return State(b.state.Load()) }

// Healthy reports the backend's last health verdict.
func (b *Backend) Healthy() bool { return b.healthy.Load() }

// Active is the number of requests in flight to the backend.
func (b *Backend) Active() int64 { return b.active.Load() }

// Requests is the number of requests sent to the backend since it was added.
func (b *Backend) Requests() uint64 { return b.requests.Load() }

// Failures is the number of requests to the backend that failed.
func (b *Backend) Failures() uint64 { return b.failures.Load() }

// StaleConns is the number of reused keep-alive connections to the backend
// that failed before answering; the requests on them were sent again on
// fresh connections where that was safe.
func (b *Backend) StaleConns() uint64 { return b.staleConns.Load() }

// LastCheck is the backend's latest health-check result, nil before the first.
func (b *Backend) LastCheck() *CheckResult { return b.lastCheck.Load() }

// HasRoom reports whether the backend is below its max_conns limit.
func (b *Backend) HasRoom() bool {
	return b.maxConns == 0 || b.active.Load() < b.maxConns
}

// TryAcquire counts a request as in flight and sent if the backend is
// below its max_conns limit, and reports whether it did; Release must
// follow. HasRoom, which the balancers ask, only advises: two requests may
// both see the last slot free, and TryAcquire admits one of them.
func (b *Backend) TryAcquire() bool {
	for {
		n := b.active.Load()
		if b.maxConns > 0 && n >= b.maxConns {
			return false
		}
		if b.active.CompareAndSwap(n, n+1) {
			b.requests.Add(1)
			return true
		}
	}
}

// Acquire counts a request as in flight and sent; Release must follow.
func (b *Backend) Acquire() {
	b.active.Add(1)
	b.requests.Add(1)
}

// Release ends a request counted by Acquire. For a backend with a
// max_conns limit it wakes a request waiting for room, if one waits.
func (b *Backend) Release() {
	b.active.Add(-1)
	if b.maxConns > 0 && b.room.waiting.Load() > 0 {
		select {
		case b.room.tokens <- struct{}{}:
		default: // enough wake-ups are pending already
		}
	}
}

// Full reports whether the backend would take new requests but is at its
// max_conns limit.
func (b *Backend) Full() bool {
	return b.eligible() && !b.HasRoom()
}

// Observe records the status of an answer from (or on behalf of) the
// backend and how long the attempt took. It allocates nothing.
func (b *Backend) Observe(status int, d time.Duration) {
	if status >= 100 && status < 600 {
		b.codes[status-100].Add(1)
	}
	b.latency.observe(d)
}

// Drained reports whether the backend is draining and has no request in
// flight: it can be taken away.
func (b *Backend) Drained() bool {
	return b.State() == StateDrain && b.Active() == 0
}

// MaxConns is the backend's limit of requests in flight; 0 is unlimited.
func (b *Backend) MaxConns() int { return int(b.maxConns) }

// eligible reports whether the backend may take new, non-sticky requests.
func (b *Backend) eligible() bool {
	return b.State() == StateActive && b.StickyOK()
}

// StickyOK reports whether the backend may take a request of a client
// sticky to it: healthy, not ejected, weighted, in the pool, and active or
// draining.
func (b *Backend) StickyOK() bool {
	st := b.State()
	return (st == StateActive || st == StateDrain) && b.Healthy() && !b.out.ejected.Load() && b.Weight() > 0 && !b.removed.Load()
}
