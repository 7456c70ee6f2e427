package config

// Validation: the rules a decoded configuration must satisfy.

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// validate checks a decoded configuration: each key by its own rules
// (Key.check), then the rules across keys.
func (d *decoder) validate(c *Config) {
	for _, k := range Keys {
		if k.check != nil {
			k.check(d, c, k.Name)
		}
	}
	d.checkPools(c)
	if c.Port == c.AdminPort {
		d.fail("admin_port", "must differ from port (%d)", c.Port)
	}
	d.adminToken(c)
}

// between is the check of an integer that must be lo..hi.
func between(lo, hi int) func(*decoder, string, int) {
	return func(d *decoder, path string, v int) {
		if v < lo || v > hi {
			d.fail(path, "must be %d..%d, not %d", lo, hi, v)
		}
	}
}

func (d *decoder) strategy(path, s string) {
	if !slices.Contains(Strategies, s) {
		d.fail(path, "unknown strategy %q (use %q, %q or %q)", s, StrategyRoundRobin, StrategyLeastConn, StrategyRandomTwo)
	}
}

func (d *decoder) headerBytes(path string, n int) {
	if n < 1<<10 || n > 1<<20 {
		d.fail(path, "must be between 1KiB and 1MiB, not %d bytes", n)
	}
}

func (d *decoder) requestBody(path string, n int) {
	if n < 1 {
		d.fail(path, "must be at least 1 byte")
	}
}

func (d *decoder) checkMethod(path, m string) {
	switch m {
	case CheckTCP, CheckHTTP:
	default:
		d.fail(path, "unknown method %q (use %q or %q)", m, CheckTCP, CheckHTTP)
	}
}

func (d *decoder) logLevel(path, l string) {
	switch l {
	case "debug", "info", "warn", "error":
	default:
		d.fail(path, "unknown level %q (use debug, info, warn or error)", l)
	}
}

func (d *decoder) accessLog(path, s string) {
	if s == "" {
		d.fail(path, `must be "off", "stderr" or a file path`)
	}
}

func (d *decoder) checkHealth(path string, hc *HealthCheck) {
	d.positive(path+".timeout", hc.Timeout)
	if !strings.HasPrefix(hc.Path, "/") || strings.ContainsAny(hc.Path, " \t\r\n") {
		d.fail(path+".path", "must be a request path starting with \"/\", not %q", hc.Path)
	}
	if r, err := parseStatusRanges(hc.ExpectStatus); err != nil {
		d.fail(path+".expect_status", "%v", err)
	} else {
		hc.Expect = r
	}
	if hc.Rise < 1 || hc.Rise > 100 {
		d.fail(path+".rise", "must be 1..100, not %d", hc.Rise)
	}
	if hc.Fall < 1 || hc.Fall > 100 {
		d.fail(path+".fall", "must be 1..100, not %d", hc.Fall)
	}
}

func (d *decoder) checkOutlier(path string, o *Outlier) {
	if o.Consecutive5xx < 0 || o.Consecutive5xx > 1000 {
		d.fail(path+".consecutive_5xx", "must be 0 (off) to 1000, not %d", o.Consecutive5xx)
	}
	if o.ConsecutiveGatewayErrors < 0 || o.ConsecutiveGatewayErrors > 1000 {
		d.fail(path+".consecutive_gateway_errors", "must be 0 (off) to 1000, not %d", o.ConsecutiveGatewayErrors)
	}
	d.positive(path+".interval", o.Interval)
	d.positive(path+".base_ejection_time", o.BaseEjectionTime)
	if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
		d.fail(path+".max_ejection_percent", "must be 0..100, not %d", o.MaxEjectionPercent)
	}
}

// checkBackends checks every backend of a pool (at path), and that no two
// share an id.
func (d *decoder) checkBackends(path string, backends []Backend) {
	ids := make(map[string]int, len(backends))
	for i := range backends {
		b := &backends[i]
		p := fmt.Sprintf("%s[%d]", path, i)
		if !d.checkBackend(p, b) {
			continue
		}
		if j, dup := ids[b.ID]; dup {
			d.fail(p+".id", "duplicate id %q (also %s[%d]; give each backend its own \"id\")", b.ID, path, j)
		} else {
			ids[b.ID] = i
		}
	}
}

// checkBackend validates b and fills its derived fields; it reports whether
// b's URL and id are good.
func (d *decoder) checkBackend(path string, b *Backend) bool {
	resolved := b.resolve()
	if resolved != nil {
		d.fail(join(path, "url"), "%v", resolved)
	}
	if err := CheckWeight(b.Weight); err != nil {
		d.fail(join(path, "weight"), "%v", err)
	}
	if b.MaxConns < 0 {
		d.fail(join(path, "max_conns"), "must be 0 (unlimited) or more, not %d", b.MaxConns)
	}
	if err := checkState(&b.State); err != nil {
		d.fail(join(path, "state"), "%v", err)
	}
	if resolved != nil {
		return false
	}
	if err := CheckID(b.ID); err != nil {
		d.fail(join(path, "id"), "%v", err)
		return false
	}
	return true
}

func (d *decoder) sticky(path string, st *Sticky) {
	switch st.Mode {
	case StickyOff, StickyIP, StickyCookie:
	case StickyHeader:
		if st.Header == "" {
			d.fail(path+".header", `must name a header when sticky.mode is "header"`)
		}
	default:
		d.fail(path+".mode", "unknown mode %q (use %q, %q, %q or %q)", st.Mode, StickyOff, StickyIP, StickyHeader, StickyCookie)
	}
	if st.Header != "" && !isToken(st.Header) {
		d.fail(path+".header", "%q is not a valid header name", st.Header)
	}
	if !isToken(st.Cookie) {
		d.fail(path+".cookie", "%q is not a valid cookie name", st.Cookie)
	}
	if st.CookieSecret != "" && len(st.CookieSecret) < 16 {
		d.fail(path+".cookie_secret", "must be at least 16 characters (or empty for a random one at each start)")
	}
	if st.BalanceFactor != 0 && (st.BalanceFactor < 1 || st.BalanceFactor > 100) {
		d.fail(path+".balance_factor", "must be 0 (off) or between 1 and 100, such as 1.25; not %g", st.BalanceFactor)
	}
	st.Trusted = d.cidrs(path+".trusted_proxies", st.TrustedProxies)
}

func (d *decoder) proxyProtocol(path string, p *ProxyProtocol) {
	p.TrustedNets = d.cidrs(path+".trusted", p.Trusted)
	d.positive(path+".timeout", p.Timeout)
	if p.Accept && len(p.Trusted) == 0 {
		d.fail(path+".trusted", "needs the addresses of the proxies in front when accept is true: a header from any peer would let every client choose its address")
	}
}

func (d *decoder) rateLimit(path string, r *RateLimit) {
	r.Header = ""
	switch name, isHeader := strings.CutPrefix(r.Key, "header:"); {
	case r.Key == RateKeyIP:
	case isHeader && isToken(name):
		r.Header = http.CanonicalHeaderKey(name)
	default:
		d.fail(path+".key", `must be "ip" or "header:NAME" with a header name, not %q`, r.Key)
	}
	if r.Rate < 0 || r.Rate > 1e9 || math.IsNaN(r.Rate) {
		d.fail(path+".rate", "must be 0 (off) to 1e9 requests a second, not %g", r.Rate)
	}
	if r.Burst < 0 || r.Burst > 1e9 {
		d.fail(path+".burst", "must be 0 (one second's worth) to 1e9, not %d", r.Burst)
	}
	if r.MaxKeys < 1 || r.MaxKeys > 10_000_000 {
		d.fail(path+".max_keys", "must be 1..10000000, not %d", r.MaxKeys)
	}
}

// cluster checks "cluster": a name, etcd URLs, a prefix, and credential
// files that can be read (the password is read here).
func (d *decoder) cluster(path string, c *Cluster) {
	if c == nil {
		return
	}
	if c.Name == "" || len(c.Name) > 64 || strings.Trim(c.Name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != "" {
		d.fail(path+".name", "must name this instance: 1 to 64 letters, digits, \".\", \"-\" or \"_\", not %q", c.Name)
	}
	e := &c.Etcd
	if len(e.Endpoints) == 0 {
		d.fail(path+".etcd.endpoints", "needs at least one etcd URL such as \"http://127.0.0.1:2379\"")
	}
	for i, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			d.fail(fmt.Sprintf("%s.etcd.endpoints[%d]", path, i), "%q is not an etcd URL such as \"http://10.0.0.5:2379\"", ep)
		}
	}
	if !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") || len(e.Prefix) < 2 {
		d.fail(path+".etcd.prefix", "must start and end with \"/\", such as \"/fastlb/\", not %q", e.Prefix)
	}
	d.positive(path+".etcd.dial_timeout", e.DialTimeout)
	e.Password = ""
	if e.PasswordFile != "" {
		data, err := os.ReadFile(e.PasswordFile)
		if err != nil {
			d.fail(path+".etcd.password_file", "cannot read: %v", errors.Unwrap(err))
		} else {
			e.Password = strings.TrimSpace(string(data))
		}
		if e.Username == "" {
			d.fail(path+".etcd.username", "is required with password_file")
		}
	}
	for _, f := range []struct{ key, file string }{{"ca_file", e.CAFile}, {"cert_file", e.CertFile}, {"key_file", e.KeyFile}} {
		if f.file == "" {
			continue
		}
		if _, err := os.ReadFile(f.file); err != nil {
			d.fail(path+".etcd."+f.key, "cannot read: %v", errors.Unwrap(err))
		}
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		d.fail(path+".etcd.cert_file", "cert_file and key_file go together")
	}
}

func (d *decoder) sendProxy(path, v string) {
	switch v {
	case "off", "v1", "v2":
	default:
		d.fail(path, `must be "off", "v1" or "v2", not %q`, v)
	}
}

// cidrs parses a list of CIDRs (or single addresses) at path.
func (d *decoder) cidrs(path string, list []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range list {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				d.fail(fmt.Sprintf("%s[%d]", path, i), "%q is not a CIDR such as \"10.0.0.0/8\" or an IP address", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}

// tls checks the "tls" object's own values; the certificate files are read
// and paired by package tlsconf, which -check and startup also run.
func (d *decoder) tls(c *Config) {
	t := c.TLS
	if t == nil {
		return
	}
	d.port("tls.port", t.Port)
	d.bindAddr("tls.bind", t.Bind)
	if t.Port == c.Port || t.Port == c.AdminPort {
		d.fail("tls.port", "must differ from port and admin_port (%d)", t.Port)
	}
	switch t.MinVersion {
	case "1.2", "1.3":
	default:
		d.fail("tls.min_version", `must be "1.2" or "1.3", not %q`, t.MinVersion)
	}
	if len(t.Certificates) == 0 {
		d.fail("tls.certificates", "needs at least one certificate to serve HTTPS")
	}
	for i, cert := range t.Certificates {
		p := fmt.Sprintf("tls.certificates[%d]", i)
		if cert.CertFile == "" {
			d.fail(p+".cert_file", "is required")
		}
		if cert.KeyFile == "" {
			d.fail(p+".key_file", "is required")
		}
	}
}

// isToken reports whether s is a non-empty RFC 9110 token, as header and
// cookie names must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// adminToken reads admin_token_file and refuses an admin API open beyond
// loopback without a token.
func (d *decoder) adminToken(c *Config) {
	if c.AdminToken != "" && c.AdminTokenFile != "" {
		d.fail("admin_token_file", "set admin_token or admin_token_file, not both")
		return
	}
	if c.AdminTokenFile != "" {
		data, err := os.ReadFile(c.AdminTokenFile)
		if err != nil {
			d.fail("admin_token_file", "cannot read: %v", errors.Unwrap(err))
			return
		}
		c.AdminToken = strings.TrimSpace(string(data))
		if c.AdminToken == "" {
			d.fail("admin_token_file", "%s is empty", c.AdminTokenFile)
			return
		}
	}
	if strings.ContainsAny(c.AdminToken, " \t\r\n") {
		d.fail("admin_token", "must not contain white space")
	}
	if ip, err := netip.ParseAddr(c.AdminBind); err == nil && !ip.IsLoopback() && c.AdminToken == "" {
		d.fail("admin_bind", "%s is not a loopback address: set admin_token or admin_token_file so the admin API is not open to the network", c.AdminBind)
	}
}

func (d *decoder) port(path string, p int) {
	if p < 1 || p > 65535 {
		d.fail(path, "must be 1..65535, not %d", p)
	}
}

func (d *decoder) bindAddr(path, s string) {
	if _, err := netip.ParseAddr(s); err != nil {
		d.fail(path, "must be an IP address such as \"0.0.0.0\", \"127.0.0.1\" or \"::\", not %q", s)
	}
}

func (d *decoder) positive(path string, v time.Duration) {
	if v <= 0 {
		d.fail(path, "must be greater than 0")
	}
}

// CheckID reports whether id can name a backend: it appears in admin API
// paths, so it is limited to letters, digits and ".-_:[]" (the brackets for
// the default id of an IPv6 backend).
func CheckID(id string) error {
	if id == "" || len(id) > 128 {
		return errors.New("must be 1 to 128 characters")
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune(".-_:[]", r)
		if !ok {
			return fmt.Errorf("%q may hold only letters, digits and \".-_:[]\"", id)
		}
	}
	return nil
}

// checkState accepts a backend state, "" meaning active.
func checkState(s *string) error {
	if *s == "" {
		*s = StateActive
	}
	return CheckState(*s)
}

// CheckState is the rule for a backend's state, in the file and in the
// admin API.
func CheckState(s string) error {
	switch s {
	case StateActive, StateDrain, StateMaint:
		return nil
	}
	return fmt.Errorf("unknown state %q (use %q, %q or %q)", s, StateActive, StateDrain, StateMaint)
}

// CheckWeight is the rule for a backend's weight, in the file, in the
// admin API and in the pool.
func CheckWeight(w int) error {
	if w < 0 || w > MaxWeight {
		return fmt.Errorf("must be 0..%d, not %d", MaxWeight, w)
	}
	return nil
}

func parseStatusRanges(s string) ([]StatusRange, error) {
	bad := fmt.Errorf("invalid status list %q (use codes and ranges such as \"200-399\" or \"200,204\")", s)
	var out []StatusRange
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b, err2 := strconv.Atoi(strings.TrimSpace(hi))
		if err1 != nil || err2 != nil || a < 100 || b > 599 || a > b {
			return nil, bad
		}
		out = append(out, StatusRange{a, b})
	}
	return out, nil
}
