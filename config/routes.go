package config

// Pools and routes (SPEC section 7): decoding, inheritance from the top
// level, validation and the configuration view.

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	json "github.com/goccy/go-json"
)

// resolvePools decodes the members of "pools" (kept by the decoder while
// it walked the top level) into c.Pools. Each pool starts as a copy of the
// top level's settings, without its backends, and its own keys replace
// what they name (within an object, key by key): so the top-level keys
// count wherever they appear in the file.
func (d *decoder) resolvePools(c *Config) {
	seen := map[string]bool{}
	for _, m := range d.pools {
		path := "pools." + m.key
		if seen[m.key] {
			d.fail(path, "pool appears more than once")
			continue
		}
		seen[m.key] = true
		if err := CheckPoolName(m.key); err != nil {
			d.fail(path, "%v", err)
			continue
		}
		tmp := *c
		tmp.Pool.Name = m.key
		tmp.Backends = []Backend{}
		set := map[string]bool{}
		var fields []field
		for _, k := range Keys {
			if k.PerPool {
				dec := k.decode(d, &tmp)
				name := k.Name
				fields = append(fields, field{name, func(p string, raw json.RawMessage) { set[name] = true; dec(p, raw) }})
			}
		}
		d.apply(path, d.object(path, m.value), fields)
		c.Pools = append(c.Pools, tmp.Pool)
		d.poolKeys = append(d.poolKeys, set)
	}
}

// checkPools checks each pool's keys. A key the pool inherits was checked
// at the top level: its check runs again only to fill in the pool's
// derived values (parsed status ranges, CIDRs), its problems not repeated.
func (d *decoder) checkPools(c *Config) {
	for i := range c.Pools {
		tmp := *c
		tmp.Pool = c.Pools[i]
		for _, k := range Keys {
			if !k.PerPool || k.check == nil {
				continue
			}
			path := "pools." + tmp.Pool.Name + "." + k.Name
			if i < len(d.poolKeys) && !d.poolKeys[i][k.Name] && k.Name != "backends" {
				k.check(&decoder{}, &tmp, path)
				continue
			}
			k.check(d, &tmp, path)
		}
		c.Pools[i] = tmp.Pool
	}
}

// CheckPoolName is the rule for a pool's name: [a-z0-9_-]{1,64}, and not
// "default", which names the top-level backends.
func CheckPoolName(name string) error {
	if name == DefaultPool {
		return fmt.Errorf("the name %q is reserved for the top-level backends", DefaultPool)
	}
	if !isName(name) {
		return fmt.Errorf("%q is not a pool name: use 1 to 64 of a-z, 0-9, \"_\" and \"-\"", name)
	}
	return nil
}

// isName reports whether s is 1 to 64 of [a-z0-9_-].
func isName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (d *decoder) routes(path string, raw json.RawMessage) []Route {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		d.fail(path, `must be an array of route objects such as {"host": "example.com", "pool": "web"}`)
		return nil
	}
	if len(items) == 0 {
		return nil
	}
	out := make([]Route, len(items))
	for i, item := range items {
		p := fmt.Sprintf("%s[%d]", path, i)
		r := &out[i]
		r.index = i
		d.apply(p, d.object(p, item), []field{
			{"name", d.stringTo(&r.Name)},
			{"host", d.stringTo(&r.Host)},
			{"path_prefix", d.stringTo(&r.PathPrefix)},
			{"pool", d.stringTo(&r.Pool)},
			{"strip_prefix", d.boolTo(&r.StripPrefix)},
			{"set_request_headers", d.headerValues(&r.SetRequestHeaders)},
			{"remove_request_headers", d.stringsTo(&r.RemoveRequestHeaders)},
			{"set_response_headers", d.headerValues(&r.SetResponseHeaders)},
			{"rate_limit", func(p string, raw json.RawMessage) { d.routeLimits = append(d.routeLimits, later{i, p, raw}) }},
		})
	}
	return out
}

// later is a member decoded once the top level is: a route's rate_limit,
// which starts from the top level's.
type later struct {
	i    int
	path string
	raw  json.RawMessage
}

// resolveRouteLimits decodes each route's rate_limit over a copy of the
// top level's, key by key.
func (d *decoder) resolveRouteLimits(c *Config) {
	for _, l := range d.routeLimits {
		if l.i >= len(c.Routes) {
			continue
		}
		rl := c.RateLimit
		d.rateLimitObject(l.path, l.raw, &rl)
		c.Routes[l.i].RateLimit = &rl
	}
}

// headerValues decodes an object of header names to string values, in
// file order.
func (d *decoder) headerValues(dst *[]HeaderValue) func(string, json.RawMessage) {
	return func(path string, raw json.RawMessage) {
		members := d.object(path, raw)
		out := make([]HeaderValue, 0, len(members))
		for _, m := range members {
			var v string
			if err := json.Unmarshal(m.value, &v); err != nil {
				d.fail(join(path, m.key), "must be a string, not %s", describe(m.value))
				continue
			}
			out = append(out, HeaderValue{Name: m.key, Value: v})
		}
		*dst = out
	}
}

// ruleForbidden are the fields a header rule may not touch: the hop-by-hop
// fields of RFC 9110 section 7.6.1 (and the obsolete Keep-Alive and
// Proxy-Connection), which belong to one connection, and the framing
// fields, which fastlb sets from the body it sends.
var ruleForbidden = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length",
}

// checkRoutes checks every route: its pool exists, it matches something,
// its host and prefix are well formed, no two routes match the same host
// and prefix, and its header rules touch only end-to-end fields.
func (d *decoder) checkRoutes(c *Config) {
	byMatch := map[string]int{}
	names := map[string]int{}
	for i := range c.Routes {
		r := &c.Routes[i]
		p := fmt.Sprintf("routes[%d]", i)
		if r.Name != "" {
			if !isName(r.Name) || r.Name[0] < 'a' || r.Name[0] > 'z' {
				d.fail(p+".name", "%q is not a route name: use 1 to 64 of a-z, 0-9, \"_\" and \"-\", starting with a letter", r.Name)
			} else if j, dup := names[r.Name]; dup {
				d.fail(p+".name", "%q also names routes[%d]", r.Name, j)
			} else {
				names[r.Name] = i
			}
		}
		switch {
		case r.Pool == "":
			d.fail(p+".pool", "is required: the pool the route sends requests to")
		case c.PoolNamed(r.Pool) == nil:
			d.fail(p+".pool", "no pool %q (define it under \"pools\", or use %q for the top-level backends)", r.Pool, DefaultPool)
		}
		hostOK, prefixOK := true, true
		if r.Host != "" {
			host, err := checkRouteHost(r.Host)
			if err != nil {
				d.fail(p+".host", "%v", err)
				hostOK = false
			} else {
				r.Host = host
			}
		}
		if r.PathPrefix != "" {
			if err := checkPathPrefix(r.PathPrefix); err != nil {
				d.fail(p+".path_prefix", "%v", err)
				prefixOK = false
			}
		}
		if r.Host == "" && r.PathPrefix == "" {
			d.fail(p, "needs \"host\", \"path_prefix\" or both: a route without either would match every request (send those to the top-level backends instead)")
			continue
		}
		if r.StripPrefix && r.PathPrefix == "" {
			d.fail(p+".strip_prefix", "needs a path_prefix to strip")
		}
		d.headerRules(p+".set_request_headers", r.SetRequestHeaders, "Cookie")
		d.headerRules(p+".set_response_headers", r.SetResponseHeaders, "Set-Cookie")
		for j, name := range r.RemoveRequestHeaders {
			canonical, err := ruleField(name)
			if err != nil {
				d.fail(fmt.Sprintf("%s.remove_request_headers[%d]", p, j), "%v", err)
				continue
			}
			r.RemoveRequestHeaders[j] = canonical
		}
		if r.RateLimit != nil {
			d.rateLimit(p+".rate_limit", r.RateLimit)
		}
		if !hostOK || !prefixOK {
			continue
		}
		key := r.Host + " " + r.PathPrefix
		if j, dup := byMatch[key]; dup {
			d.fail(p, "matches the same host %q and path_prefix %q as routes[%d]; give each its own, or merge them", r.Host, r.PathPrefix, j)
		} else {
			byMatch[key] = i
		}
	}
}

// headerRules checks and canonicalizes the headers a route sets; cannot
// is the cookie field, which a rule may not set either (fastlb's sticky
// cookies and the application's live there).
func (d *decoder) headerRules(path string, rules []HeaderValue, cannot string) {
	seen := map[string]bool{}
	for i := range rules {
		h := &rules[i]
		p := join(path, h.Name)
		canonical, err := ruleField(h.Name)
		if err == nil && canonical == cannot {
			err = fmt.Errorf("%s cannot be set by a header rule", cannot)
		}
		if err != nil {
			d.fail(p, "%v", err)
			continue
		}
		if seen[canonical] {
			d.fail(p, "set more than once (header names are case-insensitive)")
			continue
		}
		seen[canonical] = true
		h.Name = canonical
		if strings.ContainsAny(h.Value, "\r\n\x00") {
			d.fail(p, "the value must not contain CR, LF or NUL")
		}
	}
}

// ruleField checks a header name of a rule and returns it canonical.
func ruleField(name string) (string, error) {
	if !isToken(name) {
		return "", fmt.Errorf("%q is not a valid header name", name)
	}
	canonical := http.CanonicalHeaderKey(name)
	for _, f := range ruleForbidden {
		if canonical == f {
			return "", fmt.Errorf("%s is a hop-by-hop or framing header, which fastlb manages: a header rule cannot touch it", canonical)
		}
	}
	return canonical, nil
}

// checkRouteHost checks a route's host and returns it in lower case
// without a trailing dot: a name, an IP address, or a wildcard whose "*"
// is the whole first label.
func checkRouteHost(host string) (string, error) {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if strings.HasPrefix(h, "[") {
		a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
		if err != nil || !strings.HasSuffix(h, "]") || !a.Is6() {
			return "", fmt.Errorf("%q is not a bracketed IPv6 address such as \"[2001:db8::1]\"", host)
		}
		return "[" + a.String() + "]", nil
	}
	name := strings.TrimPrefix(h, "*.")
	if strings.Contains(name, "*") || h == "*" {
		return "", fmt.Errorf("%q: a wildcard may only be the whole first label, as in \"*.example.com\"", host)
	}
	if strings.Contains(h, ":") {
		return "", fmt.Errorf("%q: give the host without a port (routes match whatever port the request came to)", host)
	}
	if len(name) > 253 {
		return "", fmt.Errorf("%q is longer than 253 characters", host)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("%q is not a host name: each label is 1 to 63 characters", host)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("%q is not a host name: labels hold a-z, 0-9, \"-\" and \"_\"", host)
			}
		}
	}
	return h, nil
}

// checkPathPrefix checks a route's path prefix: it starts with "/" and
// holds only bytes a request path can (no query, fragment or white space).
func checkPathPrefix(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q must start with \"/\"", p)
	}
	for _, c := range []byte(p) {
		if c <= ' ' || c == 0x7f || c == '?' || c == '#' {
			return fmt.Errorf("%q holds a byte a request path cannot (space, control, \"?\" or \"#\")", p)
		}
	}
	return nil
}

// viewPools shows each named pool with every key it has in force,
// inherited ones included.
func viewPools(c *Config) any {
	out := make(map[string]any, len(c.Pools))
	for i := range c.Pools {
		out[c.Pools[i].Name] = ViewPool(c, &c.Pools[i])
	}
	return out
}

// ViewPool shows a pool's keys as GET /api/v1/config does, its backends
// as the file holds them.
func ViewPool(c *Config, p *Pool) map[string]any {
	tmp := *c
	tmp.Pool = *p
	m := map[string]any{}
	for _, k := range Keys {
		if k.PerPool {
			m[k.Name] = k.View(&tmp)
		}
	}
	return m
}

// RouteView is a route as the configuration file holds it.
type RouteView struct {
	Name                 string       `json:"name,omitempty"`
	Host                 string       `json:"host,omitempty"`
	PathPrefix           string       `json:"path_prefix,omitempty"`
	Pool                 string       `json:"pool"`
	StripPrefix          bool         `json:"strip_prefix,omitempty"`
	SetRequestHeaders    HeaderValues `json:"set_request_headers,omitempty"`
	RemoveRequestHeaders []string     `json:"remove_request_headers,omitempty"`
	SetResponseHeaders   HeaderValues `json:"set_response_headers,omitempty"`
	RateLimit            any          `json:"rate_limit,omitempty"`
}

// HeaderValues are a route's header settings; they encode as a JSON object
// in their order.
type HeaderValues []HeaderValue

// MarshalJSON implements json.Marshaler.
func (hs HeaderValues) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, h := range hs {
		if i > 0 {
			b = append(b, ',')
		}
		k, _ := json.Marshal(h.Name)
		v, _ := json.Marshal(h.Value)
		b = append(append(append(b, k...), ':'), v...)
	}
	return append(b, '}'), nil
}

// ViewRoute renders one route as the file holds it.
func ViewRoute(r *Route) RouteView {
	v := RouteView{Name: r.Name, Host: r.Host, PathPrefix: r.PathPrefix, Pool: r.Pool, StripPrefix: r.StripPrefix,
		SetRequestHeaders: r.SetRequestHeaders, RemoveRequestHeaders: r.RemoveRequestHeaders,
		SetResponseHeaders: r.SetResponseHeaders}
	if r.RateLimit != nil {
		v.RateLimit = viewRateLimit(r.RateLimit)
	}
	return v
}

// ViewRoutes renders the routes in file order.
func ViewRoutes(routes []Route) []RouteView {
	out := make([]RouteView, len(routes))
	for i := range routes {
		out[i] = ViewRoute(&routes[i])
	}
	return out
}
