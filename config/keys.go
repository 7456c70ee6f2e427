package config

import (
	"encoding/json"
	"reflect"
	"slices"
	"time"
)

// Reload tells what a reload does with a changed key.
type Reload uint8

const (
	// Reloadable: a reload puts the new value in force.
	Reloadable Reload = iota
	// Restart: the value in force stays until a restart; a reload reports
	// the key as needing one.
	Restart
)

// Key is one top-level key of the configuration file: how it is decoded
// and checked, how GET /api/v1/config shows its value, and what a reload
// does with a change. Keys holds every one, and the decoder (Load, Parse,
// and so -check), the configuration view and the reload all read it, so
// that a key known to one cannot be missing from another. Defaults gives
// every key's default.
type Key struct {
	Name   string
	Reload Reload
	// View is the value in force as the admin API shows it: durations as
	// strings, sizes in bytes, secrets redacted, absent objects null.
	// Decoding the view gives the same configuration, secrets aside.
	View func(c *Config) any
	// Same reports whether b changes nothing that Reload governs. For
	// "tls" that is the listener (port, bind, versions, redirect): its
	// certificates are read again on every reload, by package tlsconf.
	Same func(a, b *Config) bool
	// Keep sets dst's value to src's: what a reload keeps of a Restart
	// key's value in force (for "tls", the listener, with dst's
	// certificates).
	Keep func(dst, src *Config)

	// PerPool tells that a pool of "pools" may set the key too; the
	// value in c's embedded Pool is then that pool's.
	PerPool bool

	decode func(d *decoder, c *Config) func(path string, raw json.RawMessage)
	// check reports what is wrong with the key's value, once decoded, at
	// path (the key's name, or "pools.NAME.key"); nil: nothing beyond its
	// type. Rules across keys are validate's.
	check func(d *decoder, c *Config, path string)
}

// Redacted stands for a secret in the configuration view.
const Redacted = "(redacted)"

// Keys lists every top-level key, in the order the SPEC gives them.
var Keys = []Key{
	scalar("port", Restart, func(c *Config) *int { return &c.Port }, (*decoder).intTo, plain[int], (*decoder).port),
	scalar("bind", Restart, func(c *Config) *string { return &c.Bind }, (*decoder).stringTo, plain[string], (*decoder).bindAddr),
	scalar("admin_port", Restart, func(c *Config) *int { return &c.AdminPort }, (*decoder).intTo, plain[int], (*decoder).port),
	scalar("admin_bind", Restart, func(c *Config) *string { return &c.AdminBind }, (*decoder).stringTo, plain[string], (*decoder).bindAddr),
	scalar("admin_token", Reloadable, func(c *Config) *string { return &c.AdminToken }, (*decoder).stringTo, secret, nil),
	scalar("admin_token_file", Reloadable, func(c *Config) *string { return &c.AdminTokenFile }, (*decoder).stringTo, plain[string], nil),
	scalar("admin_persist", Reloadable, func(c *Config) *bool { return &c.AdminPersist }, (*decoder).boolTo, plain[bool], nil),
	perPool(scalar("strategy", Reloadable, func(c *Config) *string { return &c.Strategy }, (*decoder).stringTo, plain[string], (*decoder).strategy)),
	perPool(scalar("backend_timeout", Reloadable, func(c *Config) *time.Duration { return &c.BackendTimeout }, (*decoder).durationTo, duration, (*decoder).positive)),
	perPool(scalar("connect_timeout", Reloadable, func(c *Config) *time.Duration { return &c.ConnectTimeout }, (*decoder).durationTo, duration, (*decoder).positive)),
	scalar("client_read_timeout", Restart, func(c *Config) *time.Duration { return &c.ClientReadTimeout }, (*decoder).durationTo, duration, (*decoder).positive),
	scalar("client_idle_timeout", Restart, func(c *Config) *time.Duration { return &c.ClientIdleTimeout }, (*decoder).durationTo, duration, (*decoder).positive),
	scalar("park_idle_after", Restart, func(c *Config) *time.Duration { return &c.ParkIdleAfter }, (*decoder).durationTo, duration, nil),
	scalar("shutdown_timeout", Reloadable, func(c *Config) *time.Duration { return &c.ShutdownTimeout }, (*decoder).durationTo, duration, nil),
	perPool(scalar("queue_timeout", Reloadable, func(c *Config) *time.Duration { return &c.QueueTimeout }, (*decoder).durationTo, duration, nil)),
	perPool(scalar("retries", Reloadable, func(c *Config) *int { return &c.Retries }, (*decoder).intTo, plain[int], between(0, MaxRetries))),
	scalar("max_client_conns", Restart, func(c *Config) *int { return &c.MaxClientConns }, (*decoder).intTo, plain[int], between(0, 10_000_000)),
	scalar("max_header_bytes", Restart, func(c *Config) *int { return &c.MaxHeaderBytes }, (*decoder).sizeTo, plain[int], (*decoder).headerBytes),
	scalar("max_request_body", Restart, func(c *Config) *int { return &c.MaxRequestBody }, (*decoder).sizeTo, plain[int], (*decoder).requestBody),
	perPool(scalar("health_check_frequency", Reloadable, func(c *Config) *time.Duration { return &c.HealthCheckFrequency }, (*decoder).durationTo, duration, (*decoder).positive)),
	perPool(scalar("health_check_method", Reloadable, func(c *Config) *string { return &c.HealthCheckMethod }, (*decoder).stringTo, plain[string], (*decoder).checkMethod)),
	perPool(object("health_check", Reloadable, func(c *Config) *HealthCheck { return &c.HealthCheck }, (*decoder).healthCheck, viewHealthCheck, (*decoder).checkHealth)),
	perPool(object("sticky", Reloadable, func(c *Config) *Sticky { return &c.Sticky }, (*decoder).stickyObject, viewSticky, (*decoder).sticky)),
	{
		Name: "tls", Reload: Restart,
		decode: func(d *decoder, c *Config) func(string, json.RawMessage) {
			return func(p string, raw json.RawMessage) { c.TLS = d.tlsObject(p, raw) }
		},
		View:  func(c *Config) any { return viewTLS(c.TLS) },
		Same:  func(a, b *Config) bool { return sameListener(a.TLS, b.TLS) },
		Keep:  keepListener,
		check: func(d *decoder, c *Config, _ string) { d.tls(c) },
	},
	object("backend_tls", Restart, func(c *Config) *BackendTLS { return &c.BackendTLS }, (*decoder).backendTLS, viewBackendTLS, nil),
	perPool(object("outlier", Reloadable, func(c *Config) *Outlier { return &c.Outlier }, (*decoder).outlier, viewOutlier, (*decoder).checkOutlier)),
	perPool(scalar("send_proxy_protocol", Reloadable, func(c *Config) *string { return &c.SendProxyProtocol }, (*decoder).stringTo, plain[string], (*decoder).sendProxy)),
	perPool(scalar("slow_start", Reloadable, func(c *Config) *time.Duration { return &c.SlowStart }, (*decoder).durationTo, duration, nil)),
	object("proxy_protocol", Reloadable, func(c *Config) *ProxyProtocol { return &c.ProxyProtocol }, (*decoder).proxyProtocolObject, viewProxyProtocol, (*decoder).proxyProtocol),
	object("rate_limit", Reloadable, func(c *Config) *RateLimit { return &c.RateLimit }, (*decoder).rateLimitObject, viewRateLimit, (*decoder).rateLimit),
	scalar("max_conns_per_client", Reloadable, func(c *Config) *int { return &c.MaxConnsPerClient }, (*decoder).intTo, plain[int], between(0, 1_000_000)),
	{
		Name: "cluster", Reload: Restart,
		decode: func(d *decoder, c *Config) func(string, json.RawMessage) {
			return func(p string, raw json.RawMessage) { c.Cluster = d.clusterObject(p, raw) }
		},
		View:  func(c *Config) any { return viewCluster(c.Cluster) },
		Same:  func(a, b *Config) bool { return reflect.DeepEqual(a.Cluster, b.Cluster) },
		Keep:  func(dst, src *Config) { dst.Cluster = src.Cluster },
		check: func(d *decoder, c *Config, path string) { d.cluster(path, c.Cluster) },
	},
	scalar("log_level", Reloadable, func(c *Config) *string { return &c.LogLevel }, (*decoder).stringTo, plain[string], (*decoder).logLevel),
	scalar("access_log", Reloadable, func(c *Config) *string { return &c.AccessLog }, (*decoder).stringTo, plain[string], (*decoder).accessLog),
	{
		// A reload applies the file's backends to the pool, which reports
		// what changed on its own (upstream.Diff).
		Name: "backends", Reload: Reloadable, PerPool: true,
		decode: func(d *decoder, c *Config) func(string, json.RawMessage) {
			return func(p string, raw json.RawMessage) { c.Backends = d.backends(p, raw) }
		},
		View:  func(c *Config) any { return ViewBackends(c.Backends) },
		Same:  func(a, b *Config) bool { return slices.Equal(a.Backends, b.Backends) },
		Keep:  func(dst, src *Config) { dst.Backends = src.Backends },
		check: func(d *decoder, c *Config, path string) { d.checkBackends(path, c.Backends) },
	},
	{
		// Pools that stay keep their backends' state; a reload reports
		// each pool's changes (adminapi.ReloadResult).
		Name: "pools", Reload: Reloadable,
		decode: func(d *decoder, c *Config) func(string, json.RawMessage) {
			return func(p string, raw json.RawMessage) { d.pools = d.object(p, raw) }
		},
		// View: viewPools, set by init (it reads Keys).
		Same: func(a, b *Config) bool { return reflect.DeepEqual(a.Pools, b.Pools) },
		Keep: func(dst, src *Config) { dst.Pools = src.Pools },
	},
	{
		Name: "routes", Reload: Reloadable,
		decode: func(d *decoder, c *Config) func(string, json.RawMessage) {
			return func(p string, raw json.RawMessage) { c.Routes = d.routes(p, raw) }
		},
		View:  func(c *Config) any { return ViewRoutes(c.Routes) },
		Same:  func(a, b *Config) bool { return reflect.DeepEqual(a.Routes, b.Routes) },
		Keep:  func(dst, src *Config) { dst.Routes = src.Routes },
		check: func(d *decoder, c *Config, _ string) { d.checkRoutes(c) },
	},
}

func init() {
	Keys[slices.IndexFunc(Keys, func(k Key) bool { return k.Name == "pools" })].View = viewPools
}

// View is the whole configuration c as GET /api/v1/config shows it: every
// key of Keys, secrets redacted.
func View(c *Config) map[string]any {
	out := make(map[string]any, len(Keys))
	for _, k := range Keys {
		out[k.Name] = k.View(c)
	}
	return out
}

// scalar is the Key of a value decoded by dec into the field f points to,
// and checked by check (nil: nothing beyond its type).
func scalar[T comparable](name string, r Reload, f func(*Config) *T, dec func(*decoder, *T) func(string, json.RawMessage), view func(T) any, check func(*decoder, string, T)) Key {
	k := Key{
		Name: name, Reload: r,
		decode: func(d *decoder, c *Config) func(string, json.RawMessage) { return dec(d, f(c)) },
		View:   func(c *Config) any { return view(*f(c)) },
		Same:   func(a, b *Config) bool { return *f(a) == *f(b) },
		Keep:   func(dst, src *Config) { *f(dst) = *f(src) },
	}
	if check != nil {
		k.check = func(d *decoder, c *Config, path string) { check(d, path, *f(c)) }
	}
	return k
}

// perPool marks k as a key a pool may set.
func perPool(k Key) Key {
	k.PerPool = true
	return k
}

// object is the Key of an object decoded by dec into the struct f points to.
func object[T any](name string, r Reload, f func(*Config) *T, dec func(*decoder, string, json.RawMessage, *T), view func(*T) any, check func(*decoder, string, *T)) Key {
	k := Key{
		Name: name, Reload: r,
		decode: func(d *decoder, c *Config) func(string, json.RawMessage) {
			return func(p string, raw json.RawMessage) { dec(d, p, raw, f(c)) }
		},
		View: func(c *Config) any { return view(f(c)) },
		Same: func(a, b *Config) bool { return reflect.DeepEqual(*f(a), *f(b)) },
		Keep: func(dst, src *Config) { *f(dst) = *f(src) },
	}
	if check != nil {
		k.check = func(d *decoder, c *Config, path string) { check(d, path, f(c)) }
	}
	return k
}

func plain[T any](v T) any         { return v }
func duration(d time.Duration) any { return d.String() }
func secret(s string) any          { return redact(s) }

// redact is Redacted for a secret that is set, and "" for one that is not.
func redact(s string) string {
	if s == "" {
		return ""
	}
	return Redacted
}

func viewBackendTLS(b *BackendTLS) any {
	return map[string]any{"ca_file": b.CAFile, "insecure_skip_verify": b.InsecureSkipVerify}
}

func viewHealthCheck(hc *HealthCheck) any {
	return map[string]any{
		"path": hc.Path, "expect_status": hc.ExpectStatus, "timeout": hc.Timeout.String(), "rise": hc.Rise, "fall": hc.Fall,
	}
}

func viewSticky(st *Sticky) any {
	proxies := st.TrustedProxies
	if proxies == nil {
		proxies = []string{}
	}
	return map[string]any{
		"mode": st.Mode, "cookie": st.Cookie, "cookie_insert": st.CookieInsert, "cookie_max_age": st.CookieMaxAge.String(),
		"cookie_secret": redact(st.CookieSecret), "header": st.Header, "balance_factor": st.BalanceFactor,
		"trusted_proxies": proxies,
	}
}

func viewTLS(t *TLS) any {
	if t == nil {
		return nil
	}
	certs := make([]map[string]any, len(t.Certificates))
	for i, c := range t.Certificates {
		certs[i] = map[string]any{"cert_file": c.CertFile, "key_file": c.KeyFile}
	}
	return map[string]any{
		"port": t.Port, "bind": t.Bind, "certificates": certs, "min_version": t.MinVersion, "redirect_http": t.RedirectHTTP,
		"http2": t.HTTP2,
	}
}

func viewCluster(c *Cluster) any {
	if c == nil {
		return nil
	}
	e := c.Etcd
	endpoints := e.Endpoints
	if endpoints == nil {
		endpoints = []string{}
	}
	return map[string]any{
		"name": c.Name, "cache_file": c.CacheFile,
		"etcd": map[string]any{"endpoints": endpoints, "prefix": e.Prefix, "dial_timeout": e.DialTimeout.String(),
			"username": e.Username, "password_file": e.PasswordFile, "ca_file": e.CAFile, "cert_file": e.CertFile,
			"key_file": e.KeyFile},
	}
}

func viewProxyProtocol(p *ProxyProtocol) any {
	trusted := p.Trusted
	if trusted == nil {
		trusted = []string{}
	}
	return map[string]any{"accept": p.Accept, "trusted": trusted, "timeout": p.Timeout.String()}
}

func viewRateLimit(r *RateLimit) any {
	return map[string]any{"key": r.Key, "rate": r.Rate, "burst": r.Burst, "max_keys": r.MaxKeys}
}

func viewOutlier(o *Outlier) any {
	return map[string]any{
		"consecutive_5xx": o.Consecutive5xx, "consecutive_gateway_errors": o.ConsecutiveGatewayErrors,
		"interval": o.Interval.String(), "base_ejection_time": o.BaseEjectionTime.String(),
		"max_ejection_percent": o.MaxEjectionPercent,
	}
}

// BackendView is a backend as the configuration file holds it, for the
// configuration view and the admin API's write-back.
type BackendView struct {
	URL      string `json:"url"`
	Weight   int    `json:"weight"`
	ID       string `json:"id,omitempty"`
	MaxConns int    `json:"max_conns,omitempty"`
	State    string `json:"state,omitempty"`
}

// ViewBackendList is backends as BackendViews, every field given.
func ViewBackendList(backends []Backend) []BackendView {
	out := make([]BackendView, len(backends))
	for i, b := range backends {
		out[i] = BackendView{URL: b.URL, Weight: b.Weight, ID: b.ID, MaxConns: b.MaxConns, State: b.State}
	}
	return out
}

// ViewBackends renders backends as the configuration file holds them (see
// ViewBackend).
func ViewBackends(backends []Backend) []any {
	out := make([]any, len(backends))
	for i, b := range backends {
		out[i] = ViewBackend(BackendView{URL: b.URL, Weight: b.Weight, ID: b.ID, MaxConns: b.MaxConns, State: b.State}, b.Addr)
	}
	return out
}

// ViewBackend renders one backend: its URL string when nothing else
// differs from the defaults, else the object, without the id when it is
// addr, the host:port it defaults to, and without the state when active.
func ViewBackend(b BackendView, addr string) any {
	if b.ID == addr {
		b.ID = ""
	}
	if b.State == StateActive {
		b.State = ""
	}
	if b.ID == "" && b.Weight == 1 && b.MaxConns == 0 && b.State == "" {
		return b.URL
	}
	return b
}

// sameListener reports whether two "tls" objects need the same HTTPS
// listener: both absent, or the same port, bind, minimum version and
// redirect. Certificates can change without a restart.
func sameListener(a, b *TLS) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Port == b.Port && a.Bind == b.Bind && a.MinVersion == b.MinVersion && a.RedirectHTTP == b.RedirectHTTP &&
		a.HTTP2 == b.HTTP2
}

// keepListener keeps the listener settings of src in dst, and dst's
// certificates when both have a listener.
func keepListener(dst, src *Config) {
	if dst.TLS == nil || src.TLS == nil {
		dst.TLS = src.TLS
		return
	}
	t := *src.TLS
	t.Certificates = dst.TLS.Certificates
	dst.TLS = &t
}
