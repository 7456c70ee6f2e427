package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A pool takes every key it leaves out from the top level, wherever the
// top-level key is in the file, and within an object key by key.
func TestPoolInherits(t *testing.T) {
	c, err := Parse([]byte(`{
	  "pools": {"api": {"backends": ["http://a:1"], "strategy": "least-conn", "health_check": {"path": "/ready"},
	                    "retries": 0}},
	  "backend_timeout": "7s", "health_check": {"path": "/", "rise": 5}, "retries": 3,
	  "sticky": {"mode": "ip", "trusted_proxies": ["10.0.0.0/8"]},
	  "backends": ["http://d:1"]
	}`))
	if err != nil {
		t.Fatal(err)
	}
	api := c.PoolNamed("api")
	if api == nil || len(c.AllPools()) != 2 || c.AllPools()[0].Name != DefaultPool {
		t.Fatalf("pools %+v", c.AllPools())
	}
	if api.Strategy != StrategyLeastConn || c.Strategy != StrategyRoundRobin {
		t.Errorf("strategy %q, top level %q", api.Strategy, c.Strategy)
	}
	if api.BackendTimeout != 7*time.Second || api.Retries != 0 || c.Retries != 3 {
		t.Errorf("backend_timeout %v retries %d (top %d)", api.BackendTimeout, api.Retries, c.Retries)
	}
	if api.HealthCheck.Path != "/ready" || api.HealthCheck.Rise != 5 || c.HealthCheck.Path != "/" {
		t.Errorf("health_check %+v, top level %+v", api.HealthCheck, c.HealthCheck)
	}
	if api.Sticky.Mode != StickyIP || len(api.Sticky.Trusted) != 1 || len(api.HealthCheck.Expect) != 1 {
		t.Errorf("derived values not filled in: sticky %+v expect %v", api.Sticky, api.HealthCheck.Expect)
	}
	if len(api.Backends) != 1 || api.Backends[0].Addr != "a:1" || len(c.Backends) != 1 || c.Backends[0].Addr != "d:1" {
		t.Errorf("backends %+v, top level %+v", api.Backends, c.Backends)
	}
	if c.PoolNamed("nope") != nil || c.PoolNamed(DefaultPool) != &c.Pool {
		t.Error("PoolNamed")
	}
}

// A route's rate_limit starts from the top level's, key by key.
func TestRouteRateLimitInherits(t *testing.T) {
	c, err := Parse([]byte(`{"pools": {"api": {}}, "routes": [
	  {"host": "a.example", "pool": "api", "rate_limit": {"rate": 5}},
	  {"host": "b.example", "pool": "api"}],
	  "rate_limit": {"key": "header:x-user", "rate": 100, "burst": 50, "max_keys": 10}}`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Routes[0].RateLimit
	if r == nil || r.Rate != 5 || r.Burst != 50 || r.MaxKeys != 10 || r.Header != "X-User" || c.Routes[1].RateLimit != nil {
		t.Errorf("route limits %+v %+v", r, c.Routes[1].RateLimit)
	}
	if (&RateLimit{Rate: 2.5}).Bucket() != 3 || (&RateLimit{Rate: 0.1}).Bucket() != 1 || (&RateLimit{Rate: 5, Burst: 2}).Bucket() != 2 {
		t.Error("Bucket")
	}
}

// The original file has one pool, "default", and no routes.
func TestSeedHasDefaultPoolOnly(t *testing.T) {
	c, err := Parse([]byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Pools) != 0 || len(c.Routes) != 0 || c.Name != DefaultPool || len(c.Backends) != 3 {
		t.Errorf("pools %v routes %v name %q backends %d", c.Pools, c.Routes, c.Name, len(c.Backends))
	}
}

func TestRoutesNormalized(t *testing.T) {
	c, err := Parse([]byte(`{"pools": {"web": {"backends": []}}, "routes": [
	  {"host": "WWW.Example.COM.", "pool": "web", "set_request_headers": {"x-api-version": "1"},
	   "remove_request_headers": ["x-debug"], "set_response_headers": {"strict-transport-security": "max-age=1"}},
	  {"host": "[2001:DB8::1]", "pool": "web"},
	  {"path_prefix": "/static/", "pool": "default", "name": "static"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Routes[0]
	if r.Host != "www.example.com" || r.SetRequestHeaders[0].Name != "X-Api-Version" ||
		r.RemoveRequestHeaders[0] != "X-Debug" || r.SetResponseHeaders[0].Name != "Strict-Transport-Security" {
		t.Errorf("route %+v", r)
	}
	if c.Routes[1].Host != "[2001:db8::1]" {
		t.Errorf("host %q", c.Routes[1].Host)
	}
	if c.Routes[0].Label() != "0" || c.Routes[2].Label() != "static" {
		t.Errorf("labels %q %q", c.Routes[0].Label(), c.Routes[2].Label())
	}
}

// Every mistake in pools and routes is an error naming its JSON path.
func TestPoolAndRouteErrors(t *testing.T) {
	const pools = `"pools": {"api": {"backends": ["http://a:1"]}}, `
	cases := []struct {
		name, js string
		want     []string // each in the problems, as "path: message"
	}{
		{"unknown pool", `{"routes": [{"host": "a.example", "pool": "nope"}]}`, []string{`routes[0].pool: no pool "nope"`}},
		{"no pool", `{"routes": [{"host": "a.example"}]}`, []string{`routes[0].pool: is required`}},
		{"neither host nor prefix", `{` + pools + `"routes": [{"pool": "api"}]}`, []string{`routes[0]: needs "host", "path_prefix" or both`}},
		{"same host and prefix", `{` + pools + `"routes": [{"host": "a.example", "path_prefix": "/x/", "pool": "api"},
		  {"host": "b.example", "pool": "api"}, {"host": "A.example", "path_prefix": "/x/", "pool": "default"}]}`,
			[]string{`routes[2]: matches the same host "a.example" and path_prefix "/x/" as routes[0]`}},
		{"same prefix, no host", `{` + pools + `"routes": [{"path_prefix": "/x", "pool": "api"}, {"path_prefix": "/x", "pool": "api"}]}`,
			[]string{`routes[1]: matches the same host "" and path_prefix "/x" as routes[0]`}},
		{"pool name", `{"pools": {"Api": {"backends": []}}}`, []string{`pools.Api: "Api" is not a pool name`}},
		{"pool name long", `{"pools": {"` + strings.Repeat("a", 65) + `": {}}}`, []string{`is not a pool name`}},
		{"pool default", `{"pools": {"default": {"backends": []}}}`, []string{`pools.default: the name "default" is reserved`}},
		{"pool twice", `{"pools": {"a": {}, "a": {}}}`, []string{`pools.a: pool appears more than once`}},
		{"pool unknown key", `{"pools": {"a": {"port": 1}}}`, []string{`pools.a.port: unknown key`}},
		{"pool bad value", `{"pools": {"a": {"strategy": "fastest", "retries": 99, "backends": ["ftp://x"]}}}`,
			[]string{`pools.a.strategy: unknown strategy "fastest"`, `pools.a.retries: must be 0..10`, `pools.a.backends[0].url:`}},
		{"pool duplicate backend", `{"pools": {"a": {"backends": ["http://x:1", "http://x:1"]}}}`,
			[]string{`pools.a.backends[1].id: duplicate id "x:1" (also pools.a.backends[0]`}},
		{"pool sticky", `{"pools": {"a": {"sticky": {"mode": "header"}}}}`, []string{`pools.a.sticky.header: must name a header`}},
		{"pools not an object", `{"pools": []}`, []string{`pools: must be an object`}},
		{"routes not an array", `{"routes": {}}`, []string{`routes: must be an array`}},
		{"hop-by-hop set", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "set_request_headers": {"connection": "close"}}]}`,
			[]string{`routes[0].set_request_headers.connection: Connection is a hop-by-hop or framing header`}},
		{"framing set", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "set_response_headers": {"Content-Length": "1"}}]}`,
			[]string{`routes[0].set_response_headers.Content-Length: Content-Length is a hop-by-hop`}},
		{"hop-by-hop removed", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "remove_request_headers": ["X-Ok", "TE"]}]}`,
			[]string{`routes[0].remove_request_headers[1]: Te is a hop-by-hop`}},
		{"cookie set", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "set_request_headers": {"cookie": "a=b"}, "set_response_headers": {"Set-Cookie": "a=b"}}]}`,
			[]string{`routes[0].set_request_headers.cookie: Cookie cannot be set`, `routes[0].set_response_headers.Set-Cookie: Set-Cookie cannot be set`}},
		{"bad header name", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "set_request_headers": {"X Y": "1"}}]}`,
			[]string{`routes[0].set_request_headers.X Y: "X Y" is not a valid header name`}},
		{"header twice", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "set_request_headers": {"X-A": "1", "x-a": "2"}}]}`,
			[]string{`routes[0].set_request_headers.x-a: set more than once`}},
		{"header value", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "set_request_headers": {"X-A": "1\r\nX-B: 2"}}]}`,
			[]string{`routes[0].set_request_headers.X-A: the value must not contain CR, LF or NUL`}},
		{"header value type", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "set_request_headers": {"X-A": 1}}]}`,
			[]string{`routes[0].set_request_headers.X-A: must be a string`}},
		{"prefix without slash", `{` + pools + `"routes": [{"path_prefix": "v1/", "pool": "api"}]}`, []string{`routes[0].path_prefix: "v1/" must start with "/"`}},
		{"prefix with query", `{` + pools + `"routes": [{"path_prefix": "/a?b", "pool": "api"}]}`, []string{`routes[0].path_prefix: "/a?b" holds a byte`}},
		{"wildcard inside", `{` + pools + `"routes": [{"host": "a.*.example", "pool": "api"}]}`, []string{`routes[0].host: "a.*.example": a wildcard may only be the whole first label`}},
		{"wildcard partial", `{` + pools + `"routes": [{"host": "*a.example", "pool": "api"}]}`, []string{`a wildcard may only be the whole first label`}},
		{"wildcard alone", `{` + pools + `"routes": [{"host": "*", "pool": "api"}]}`, []string{`a wildcard may only be the whole first label`}},
		{"wildcard last", `{` + pools + `"routes": [{"host": "example.*", "pool": "api"}]}`, []string{`a wildcard may only be the whole first label`}},
		{"host with port", `{` + pools + `"routes": [{"host": "a.example:8080", "pool": "api"}]}`, []string{`routes[0].host: "a.example:8080": give the host without a port`}},
		{"host empty label", `{` + pools + `"routes": [{"host": "a..example", "pool": "api"}]}`, []string{`routes[0].host: "a..example" is not a host name`}},
		{"host bad byte", `{` + pools + `"routes": [{"host": "a/b", "pool": "api"}]}`, []string{`is not a host name`}},
		{"strip without prefix", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "strip_prefix": true}]}`, []string{`routes[0].strip_prefix: needs a path_prefix`}},
		{"route name", `{` + pools + `"routes": [{"name": "1st", "host": "a.example", "pool": "api"}]}`, []string{`routes[0].name: "1st" is not a route name`}},
		{"route name twice", `{` + pools + `"routes": [{"name": "a", "host": "a.example", "pool": "api"}, {"name": "a", "host": "b.example", "pool": "api"}]}`,
			[]string{`routes[1].name: "a" also names routes[0]`}},
		{"trusted not a CIDR", `{"proxy_protocol": {"accept": true, "trusted": ["10.0.0.0/8", "nope"]}}`,
			[]string{`proxy_protocol.trusted[1]: "nope" is not a CIDR`}},
		{"accept without trusted", `{"proxy_protocol": {"accept": true}}`, []string{`proxy_protocol.trusted: needs the addresses of the proxies in front`}},
		{"header timeout", `{"proxy_protocol": {"timeout": "0s"}}`, []string{`proxy_protocol.timeout: must be greater than 0`}},
		{"rate key", `{"rate_limit": {"key": "cookie:x", "rate": 1}}`, []string{`rate_limit.key: must be "ip" or "header:NAME"`}},
		{"rate header name", `{"rate_limit": {"key": "header:a b", "rate": 1}}`, []string{`rate_limit.key: must be "ip" or "header:NAME"`}},
		{"rate negative", `{"rate_limit": {"rate": -1, "burst": -2, "max_keys": 0}}`,
			[]string{`rate_limit.rate: must be 0 (off) to 1e9`, `rate_limit.burst: must be 0`, `rate_limit.max_keys: must be 1..10000000`}},
		{"rate type", `{"rate_limit": {"rate": "10/s"}}`, []string{`rate_limit.rate: must be a number`}},
		{"route rate", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "rate_limit": {"key": "ipv4", "rate": 5}}]}`,
			[]string{`routes[0].rate_limit.key: must be "ip" or "header:NAME"`}},
		{"route rate unknown key", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "rate_limit": {"per": "ip"}}]}`,
			[]string{`routes[0].rate_limit.per: unknown key`}},
		{"send proxy", `{"send_proxy_protocol": "v3", "pools": {"a": {"send_proxy_protocol": true}}}`,
			[]string{`send_proxy_protocol: must be "off", "v1" or "v2", not "v3"`, `pools.a.send_proxy_protocol: must be a string`}},
		{"conns per client", `{"max_conns_per_client": -1}`, []string{`max_conns_per_client: must be 0..1000000`}},
		{"cluster", `{"cluster": {"name": "", "etcd": {"endpoints": ["10.0.0.5:2379", "ftp://x"], "prefix": "fastlb",
		  "password_file": "/nonexistent/pw", "ca_file": "/nonexistent/ca.pem", "cert_file": "/nonexistent/c.pem"}}}`,
			[]string{`cluster.name: must name this instance`, `cluster.etcd.endpoints[0]: "10.0.0.5:2379" is not an etcd URL`,
				`cluster.etcd.endpoints[1]: "ftp://x" is not an etcd URL`, `cluster.etcd.prefix: must start and end with "/"`,
				`cluster.etcd.password_file: cannot read: no such file or directory`, `cluster.etcd.username: is required with password_file`,
				`cluster.etcd.ca_file: cannot read`, `cluster.etcd.cert_file: cert_file and key_file go together`}},
		{"cluster without endpoints", `{"cluster": {"name": "a"}}`, []string{`cluster.etcd.endpoints: needs at least one etcd URL`}},
		{"route unknown key", `{` + pools + `"routes": [{"host": "a.example", "pool": "api", "prefix": "/"}]}`, []string{`routes[0].prefix: unknown key`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.js))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a configuration error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("problems\n%v\nlack %q", err, w)
				}
			}
		})
	}
}
