package proxy

import (
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/balancer"
	"fastlb/config"
	"fastlb/routing"
	"fastlb/upstream"
)

// Pool is one pool as the request path uses it: its backends and how they
// are balanced. It belongs to one Settings, given to New or Reconfigure
// once, which prepares it; it is not changed after.
type Pool struct {
	Name     string
	Upstream *upstream.Pool
	Policy   balancer.Policy // picks backends for requests without a sticky key
	Retries  int             // further attempts on other backends
	// QueueTimeout is how long a request waits for room while every
	// backend it may go to is at max_conns; 0: it gets 503 at once.
	QueueTimeout time.Duration
	Sticky       Sticky

	sticky *sticky // Sticky prepared for the request path
}

// Route sends the requests it matches to Pool.
type Route struct {
	Config config.Route
	Pool   *Pool
}

// route is a Route prepared for the request path.
type route struct {
	label    []byte // in the access log
	pool     *Pool
	limit    *limit // nil: none
	strip    int    // length of the prefix to strip; 0: none
	setReq   []headerValue
	delReq   [][]byte
	setResp  []headerValue
	hasRules bool
}

type headerValue struct{ name, value []byte }

func newRoute(r Route) route {
	rt := route{label: []byte(r.Config.Label()), pool: r.Pool}
	if r.Config.StripPrefix {
		rt.strip = len(r.Config.PathPrefix)
	}
	for _, h := range r.Config.SetRequestHeaders {
		rt.setReq = append(rt.setReq, headerValue{[]byte(h.Name), []byte(h.Value)})
	}
	for _, name := range r.Config.RemoveRequestHeaders {
		rt.delReq = append(rt.delReq, []byte(name))
	}
	for _, h := range r.Config.SetResponseHeaders {
		rt.setResp = append(rt.setResp, headerValue{[]byte(h.Name), []byte(h.Value)})
	}
	rt.hasRules = len(rt.setReq)+len(rt.delReq) > 0
	return rt
}

// routes are the routes of one Settings, with their table.
type routes struct {
	table *routing.Table
	all   []route
}

// newRoutes prepares rs; limitOf gives each its rate limit.
func newRoutes(rs []Route, limitOf func(r *config.Route) *limit) routes {
	cfgs := make([]config.Route, len(rs))
	all := make([]route, len(rs))
	for i, r := range rs {
		cfgs[i] = r.Config
		all[i] = newRoute(r)
		all[i].limit = limitOf(&r.Config)
	}
	return routes{table: routing.New(cfgs), all: all}
}

// match returns the route of the request, or nil, and strips the route's
// prefix from the request's path when it says so.
func (rs *routes) match(req *fasthttp.Request) *route {
	if len(rs.all) == 0 {
		return nil
	}
	h := &req.Header
	uri := h.RequestURI()
	host, path, pathStart := routing.Target(uri, h.Host())
	i := rs.table.Match(host, path)
	if i < 0 {
		return nil
	}
	rt := &rs.all[i]
	if rt.strip > 0 {
		stripPrefix(req, uri, pathStart, rt.strip)
	}
	return rt
}

// stripPrefix removes the n bytes of the path's prefix from the request
// target uri (req's), keeping one leading "/" and the query as they were.
func stripPrefix(req *fasthttp.Request, uri []byte, pathStart, n int) {
	rest := uri[pathStart:] // an absolute-form target without a path: nothing to strip
	if len(rest) > 0 && rest[0] == '/' {
		rest = rest[n:]
	}
	var buf [1024]byte
	b := append(buf[:0], uri[:pathStart]...)
	if len(rest) == 0 || rest[0] != '/' {
		b = append(b, '/')
	}
	b = append(b, rest...)
	// The request's, not its header's: a URI the server parsed already
	// must be parsed again from the new target.
	req.SetRequestURIBytes(b)
}

// rewriteRequest applies the route's request header rules.
func (rt *route) rewriteRequest(h *fasthttp.RequestHeader) {
	for _, name := range rt.delReq {
		h.DelBytes(name)
	}
	for _, kv := range rt.setReq {
		h.DelBytes(kv.name) // every line of it: the rule's value is the only one
		h.SetCanonical(kv.name, kv.value)
	}
}

// rewriteResponse applies the route's response header rules.
func (rt *route) rewriteResponse(h *fasthttp.ResponseHeader) {
	for _, kv := range rt.setResp {
		h.DelBytes(kv.name)
		h.SetCanonical(kv.name, kv.value)
	}
}

// PoolFor builds the request path's view of the pool pc configures over
// up: a new policy and, for the sticky modes, a Maglev table or a cookie
// table keyed with pc.Sticky.CookieSecret (or with secret when the file
// sets none), each watching up. unwatch detaches them once they are no
// longer in use.
func PoolFor(pc *config.Pool, up *upstream.Pool, secret []byte) (_ *Pool, unwatch func(), err error) {
	policy, err := balancer.New(pc.Strategy)
	if err != nil {
		return nil, nil, err
	}
	cancels := []func(){up.Watch(policy.Update)}
	st := pc.Sticky
	sticky := Sticky{Mode: st.Mode, Header: st.Header, Cookie: st.Cookie, CookieInsert: st.CookieInsert,
		CookieMaxAge: st.CookieMaxAge, Trusted: st.Trusted}
	switch {
	case st.Mode == config.StickyCookie && st.CookieInsert:
		if st.CookieSecret != "" {
			secret = []byte(st.CookieSecret)
		}
		sticky.Cookies = balancer.NewCookies(secret)
		cancels = append(cancels, up.Watch(sticky.Cookies.Update))
	case st.Mode != config.StickyOff:
		sticky.Hash = balancer.NewHash()
		sticky.Hash.SetBalanceFactor(st.BalanceFactor)
		cancels = append(cancels, up.Watch(sticky.Hash.Update))
	}
	unwatch = func() {
		for _, c := range cancels {
			c()
		}
	}
	return &Pool{Name: pc.Name, Upstream: up, Policy: policy, Retries: pc.Retries, QueueTimeout: pc.QueueTimeout,
		Sticky: sticky}, unwatch, nil
}

// SettingsFor builds the settings cfg asks for: a Pool (PoolFor) for each
// of cfg's pools over the upstream pool that upstreams returns for its
// name, and the routes to them. unwatch detaches every pool's watches once
// the settings are no longer in use.
func SettingsFor(cfg *config.Config, upstreams func(name string) *upstream.Pool, secret []byte) (s Settings, unwatch func(), err error) {
	var cancels []func()
	unwatch = func() {
		for _, c := range cancels {
			c()
		}
	}
	byName := map[string]*Pool{}
	for _, pc := range cfg.AllPools() {
		p, cancel, err := PoolFor(pc, upstreams(pc.Name), secret)
		if err != nil {
			unwatch()
			return Settings{}, nil, err
		}
		cancels = append(cancels, cancel)
		byName[pc.Name] = p
		s.Pools = append(s.Pools, p)
	}
	s.Default = byName[config.DefaultPool]
	for _, r := range cfg.Routes {
		s.Routes = append(s.Routes, Route{Config: r, Pool: byName[r.Pool]})
	}
	s.TunnelIdleTimeout = cfg.ClientIdleTimeout
	s.RateLimit = cfg.RateLimit
	return s, unwatch, nil
}
