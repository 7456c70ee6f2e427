// Package config loads, defaults and validates fastlb's JSON configuration file.
//
// Loading runs in four steps: decode (goccy/go-json), defaults, validation and
// precomputation. Every problem is reported with the JSON path of the value at
// fault ("backends[2].url: ..."), and all problems of a file are reported at
// once. After Load returns, a Config does no I/O and is never modified; callers
// share it read-only between goroutines.
package config

import (
	"math"
	"net/netip"
	"strconv"
	"time"
)

// Strategy names accepted by the "strategy" key.
const (
	StrategyRoundRobin = "round-robin"
	StrategyLeastConn  = "least-conn"
	StrategyRandomTwo  = "random-two"
)

// Strategies are the strategy names, the default first.
var Strategies = []string{StrategyRoundRobin, StrategyLeastConn, StrategyRandomTwo}

// Health-check methods accepted by the "health_check_method" key.
const (
	CheckTCP  = "tcp"
	CheckHTTP = "http"
)

// Limits of numeric settings.
const (
	MaxWeight  = 1000
	MaxRetries = 10
)

// Config is a validated configuration. The zero value is not useful: build one
// with Load or Parse, which fill in every default.
type Config struct {
	Port      int    // client-facing HTTP port
	Bind      string // address the client-facing listener binds
	AdminPort int    // admin API port
	AdminBind string // address the admin API binds

	// AdminToken guards the admin API when not empty: every route but
	// /healthz needs "Authorization: Bearer AdminToken". It comes from
	// admin_token or from the file admin_token_file names (read at load).
	AdminToken     string
	AdminTokenFile string
	AdminPersist   bool // write admin API changes back to the configuration file

	ClientReadTimeout time.Duration // limit for reading a client's request
	ClientIdleTimeout time.Duration // how long an idle keep-alive client connection is kept
	// ParkIdleAfter is how long a plain keep-alive client connection waits
	// for its next request holding its serving goroutine and buffers,
	// before it gives them back and waits parked; 0: never parked.
	ParkIdleAfter   time.Duration
	ShutdownTimeout time.Duration // how long graceful shutdown waits for in-flight requests

	MaxClientConns int // concurrent client connections per listener, 0 for no limit; more are answered 503 and closed
	MaxHeaderBytes int // largest request header block accepted (431 above it)
	MaxRequestBody int // largest request body accepted (413 above it)

	// TLS is nil when the file has no "tls" object: no HTTPS listener.
	TLS        *TLS
	BackendTLS BackendTLS

	LogLevel  string // debug, info, warn or error
	AccessLog string // "off", "stderr" or a file path

	ProxyProtocol ProxyProtocol
	// RateLimit limits requests per client, or per value of a header; a
	// route may set its own.
	RateLimit RateLimit
	// MaxConnsPerClient is how many connections one client address may
	// hold open; 0: no limit.
	MaxConnsPerClient int

	// Cluster is nil when the file has no "cluster" object: the backends
	// are the file's alone.
	Cluster *Cluster

	// Pool is the pool named "default": the top-level backends and the
	// keys every other pool inherits from.
	Pool
	// Pools are the named pools, in file order.
	Pools []Pool
	// Routes send requests to pools, in file order (which does not decide
	// which route wins: see the SPEC's section 7).
	Routes []Route
}

// DefaultPool names the pool of the top-level backends.
const DefaultPool = "default"

// Pool is a set of backends and how requests are balanced over them: the
// top level's ("default") or one of "pools". Any key a named pool leaves
// out takes the top level's value (within an object, key by key).
type Pool struct {
	Name     string
	Strategy string // one of the Strategy* constants

	BackendTimeout time.Duration // limit for a whole proxied request to one backend
	ConnectTimeout time.Duration // limit for opening a connection to a backend
	// QueueTimeout is how long a request waits for room while every
	// backend it may go to is at max_conns, before it is answered 503;
	// 0: not at all.
	QueueTimeout time.Duration
	Retries      int // further attempts on another backend after a failed one

	HealthCheckFrequency time.Duration
	HealthCheckMethod    string // CheckTCP or CheckHTTP
	HealthCheck          HealthCheck

	Sticky  Sticky
	Outlier Outlier
	// SlowStart is how long a backend that comes back (healthy again,
	// ejection over, added, or out of maint) takes to ramp up to its full
	// weight; 0: at once.
	SlowStart time.Duration
	// SendProxyProtocol is "off", "v1" or "v2": the PROXY protocol header
	// each backend connection starts with.
	SendProxyProtocol string

	Backends []Backend
}

// Cluster holds the "cluster" object: a fleet sharing its backends and
// secrets through etcd.
type Cluster struct {
	Name string // this instance's, unique in the fleet
	Etcd Etcd
	// CacheFile, when set, keeps the last state applied from etcd, served
	// when etcd cannot be reached at start.
	CacheFile string
}

// Etcd holds "cluster.etcd": how to reach the store.
type Etcd struct {
	Endpoints   []string      // URLs, http:// or https://
	Prefix      string        // under which every key lives, ending in "/"
	DialTimeout time.Duration // for each call to etcd
	Username    string
	// PasswordFile holds the password (read at load into Password).
	PasswordFile string
	Password     string
	CAFile       string // PEM bundle to verify https:// endpoints
	CertFile     string // client certificate, with KeyFile
	KeyFile      string
}

// ProxyProtocol holds the "proxy_protocol" object: PROXY protocol headers
// read from the peers in front (a TCP load balancer).
type ProxyProtocol struct {
	Accept  bool
	Trusted []string // as written; TrustedNets parsed
	// TrustedNets are the peers whose header is read (and required).
	TrustedNets []netip.Prefix
	Timeout     time.Duration // for the header to arrive
}

// Rate-limit keys other than "header:NAME".
const RateKeyIP = "ip"

// RateLimit holds a "rate_limit" object: a token bucket per key.
type RateLimit struct {
	Key     string  // RateKeyIP or "header:NAME"
	Rate    float64 // tokens a second; 0: off
	Burst   int     // bucket size; 0: one second's worth, at least 1
	MaxKeys int     // keys held at most; the least recently seen go first
	// Header is NAME of "header:NAME", canonical; "" for RateKeyIP.
	Header string
}

// On reports whether the limit applies.
func (r *RateLimit) On() bool { return r.Rate > 0 }

// Bucket is the bucket size in force: Burst, or one second's worth.
func (r *RateLimit) Bucket() int {
	if r.Burst > 0 {
		return r.Burst
	}
	return max(1, int(math.Ceil(r.Rate)))
}

// AllPools returns the default pool, then the named pools in file order.
func (c *Config) AllPools() []*Pool {
	out := make([]*Pool, 0, 1+len(c.Pools))
	out = append(out, &c.Pool)
	for i := range c.Pools {
		out = append(out, &c.Pools[i])
	}
	return out
}

// PoolNamed returns the pool of that name, or nil.
func (c *Config) PoolNamed(name string) *Pool {
	if name == DefaultPool {
		return &c.Pool
	}
	for i := range c.Pools {
		if c.Pools[i].Name == name {
			return &c.Pools[i]
		}
	}
	return nil
}

// Route sends the requests it matches to a pool, rewriting them on the way.
type Route struct {
	// Name labels the route in metrics and logs; empty: its index in
	// "routes", in decimal (see Label).
	Name string
	// Host is "" (any host), a lower-case name, or a wildcard "*.suffix".
	Host string
	// PathPrefix is "" (any path) or a prefix starting with "/", matched
	// byte for byte against the raw path.
	PathPrefix  string
	Pool        string
	StripPrefix bool // remove PathPrefix from the path sent to the backend
	// SetRequestHeaders and SetResponseHeaders set headers, in file
	// order; RemoveRequestHeaders removes them. Names are canonical.
	SetRequestHeaders    []HeaderValue
	RemoveRequestHeaders []string
	SetResponseHeaders   []HeaderValue
	// RateLimit is the route's own limit; nil: the top level's.
	RateLimit *RateLimit

	index int
}

// Label is what names the route in metrics and logs: its name, else its
// index in "routes".
func (r *Route) Label() string {
	if r.Name != "" {
		return r.Name
	}
	return strconv.Itoa(r.index)
}

// HeaderValue is one header a route sets.
type HeaderValue struct {
	Name, Value string
}

// Sticky modes accepted by "sticky.mode".
const (
	StickyOff    = "off"
	StickyIP     = "ip"
	StickyHeader = "header"
	StickyCookie = "cookie"
)

// Sticky holds the "sticky" object: session affinity.
type Sticky struct {
	Mode          string        // one of the Sticky* constants
	Cookie        string        // cookie name in cookie mode
	CookieInsert  bool          // fastlb sets the cookie (else it hashes the application's)
	CookieMaxAge  time.Duration // Max-Age of the inserted cookie; 0 = a session cookie
	CookieSecret  string        // key of the inserted cookie's value; empty = random at start
	Header        string        // header name in header mode
	BalanceFactor float64       // bounded loads: 0 = off, else at least 1
	// TrustedProxies are the peers whose X-Forwarded-For is believed in ip
	// mode, as written; Trusted holds them parsed.
	TrustedProxies []string
	Trusted        []netip.Prefix
}

// TLS holds the "tls" object: the HTTPS listener.
type TLS struct {
	Port         int
	Bind         string
	Certificates []Certificate // the first is the default for clients without (or with unknown) SNI
	MinVersion   string        // "1.2" or "1.3"
	RedirectHTTP bool          // the plain port answers 308 to HTTPS
	// HTTP2 offers h2 by ALPN beside http/1.1 (requests over HTTP/2 take
	// the same path to HTTP/1.1 backends).
	HTTP2 bool
}

// Certificate is one certificate and key pair, PEM files.
type Certificate struct {
	CertFile string
	KeyFile  string
}

// BackendTLS holds the "backend_tls" object, for https:// backends.
type BackendTLS struct {
	CAFile             string // PEM bundle added to the system roots
	InsecureSkipVerify bool
}

// HealthCheck holds the "health_check" object.
type HealthCheck struct {
	Path         string        // request path of an HTTP check
	ExpectStatus string        // as written, e.g. "200-399"
	Expect       []StatusRange // ExpectStatus parsed
	Timeout      time.Duration // limit for one check
	Rise         int           // consecutive successes that mark a backend up
	Fall         int           // consecutive failures that mark a backend down
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Min, Max int }

// StatusOK reports whether code lies in one of the expected ranges.
func (h *HealthCheck) StatusOK(code int) bool {
	for _, r := range h.Expect {
		if code >= r.Min && code <= r.Max {
			return true
		}
	}
	return false
}

// Outlier holds the "outlier" object: passive ejection of backends that
// fail real traffic. A counter of 0 is off.
type Outlier struct {
	Consecutive5xx           int           // 5xx answers in a row that eject
	ConsecutiveGatewayErrors int           // failures in a row (refused, reset, malformed, timeout) that eject
	Interval                 time.Duration // each one without an ejection takes one off a backend's ejection count
	BaseEjectionTime         time.Duration // an ejection lasts this times the backend's ejection count (at most 10)
	MaxEjectionPercent       int           // of a pool's backends ejected at once, at most (at least one may be)
}

// Backend states accepted by a backend's "state" key.
const (
	StateActive = "active"
	StateDrain  = "drain"
	StateMaint  = "maint"
)

// Backend is one item of "backends", with its URL parsed.
type Backend struct {
	URL      string // as written
	Weight   int    // 0..MaxWeight; 0 takes no new traffic
	ID       string // name used by the admin API; defaults to Addr
	MaxConns int    // 0 means unlimited
	State    string // "active" (default), "drain" or "maint"; kept by the admin API's persistence

	Scheme string // "http", "https", "h2c" (HTTP/2 in clear) or "h2" (HTTP/2 over TLS)
	Host   string // host name or IP address, without port or brackets
	Addr   string // host:port to dial
}

// Defaults returns a Config holding every default of the SPEC and no backends.
func Defaults() *Config {
	c := &Config{
		Port:              8080,
		Bind:              "0.0.0.0",
		AdminPort:         8081,
		AdminBind:         "127.0.0.1",
		ClientReadTimeout: 30 * time.Second,
		ClientIdleTimeout: 120 * time.Second,
		ParkIdleAfter:     100 * time.Millisecond,
		ShutdownTimeout:   30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		MaxRequestBody:    64 << 20,
		LogLevel:          "info",
		AccessLog:         "off",
		ProxyProtocol:     ProxyProtocol{Timeout: 3 * time.Second},
		RateLimit:         RateLimit{Key: RateKeyIP, MaxKeys: 100_000},
	}
	c.Pool = Pool{
		Name:                 DefaultPool,
		Strategy:             StrategyRoundRobin,
		BackendTimeout:       10 * time.Second,
		ConnectTimeout:       2 * time.Second,
		QueueTimeout:         time.Second,
		Retries:              2,
		HealthCheckFrequency: 30 * time.Second,
		HealthCheckMethod:    CheckTCP,
		HealthCheck: HealthCheck{
			Path:         "/",
			ExpectStatus: "200-399",
			Expect:       []StatusRange{{200, 399}},
			Timeout:      2 * time.Second,
			Rise:         2,
			Fall:         3,
		},
		Sticky:            Sticky{Mode: StickyOff, Cookie: "fastlb", CookieInsert: true},
		SendProxyProtocol: "off",
		Outlier: Outlier{Consecutive5xx: 5, ConsecutiveGatewayErrors: 3, Interval: 10 * time.Second,
			BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 50},
	}
	return c
}
