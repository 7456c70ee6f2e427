package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"fastlb/config"
	"fastlb/internal/header"
	"fastlb/testbackends"
)

// startRouted starts one backend per name and fastlb configured by js, in
// which each {NAME} stands for that backend's URL.
func startRouted(t *testing.T, names []string, js string) *harness {
	t.Helper()
	h := &harness{t: t, logs: &syncBuffer{}, access: &syncBuffer{}}
	for _, name := range names {
		s, err := startStable(testbackends.Options{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		h.backends = append(h.backends, s)
		js = strings.ReplaceAll(js, "{"+name+"}", s.URL())
	}
	cfg, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatalf("config %s: %v", js, err)
	}
	h.start(cfg)
	return h
}

const routedConfig = `{"port": 1, "admin_port": 2,
  "backends": ["{web}"],
  "pools": {
    "api": {"strategy": "least-conn", "backends": ["{api}"]},
    "shop": {"backends": ["{shop}"]},
    "static": {"backends": ["{static}"]}
  },
  "routes": [
    {"name": "api", "host": "api.example.com", "path_prefix": "/v1/", "pool": "api", "strip_prefix": true,
     "set_request_headers": {"X-Api-Version": "1", "X-Forwarded-Proto": "https"}, "remove_request_headers": ["X-Debug"],
     "set_response_headers": {"Strict-Transport-Security": "max-age=63072000", "Server": "edge"}},
    {"host": "*.shop.example", "pool": "shop"},
    {"path_prefix": "/static/", "pool": "static"},
    {"host": "strip.example", "path_prefix": "/p", "pool": "api", "strip_prefix": true}
  ]}`

func TestRouting(t *testing.T) {
	h := startRouted(t, []string{"web", "api", "shop", "static"}, routedConfig)
	cases := []struct {
		host, path, want string
	}{
		{"api.example.com", "/v1/users", "api"},
		{"API.Example.COM:8080", "/v1/users", "api"}, // any case, port ignored
		{"api.example.com", "/v1", "web"},            // byte for byte: /v1/ does not match /v1
		{"api.example.com", "/V1/users", "web"},
		{"api.example.com", "/static/a.css", "static"}, // no api.example.com route matches: the host-less one does
		{"www.shop.example", "/cart", "shop"},
		{"a.b.shop.example", "/", "shop"},
		{"shop.example", "/", "web"}, // a wildcard needs a label in front
		{"other.example", "/static/app.js", "static"},
		{"other.example", "/", "web"}, // no route: the default pool
	}
	for _, tc := range cases {
		t.Run(tc.host+tc.path, func(t *testing.T) {
			resp, _ := h.do("GET", tc.path, "", "Host", tc.host)
			if got := resp.Header.Get("X-Backend"); resp.StatusCode != 200 || got != tc.want {
				t.Errorf("status %d from %q, want 200 from %q", resp.StatusCode, got, tc.want)
			}
		})
	}
}

// strip_prefix keeps one leading "/" and the query; the header rules set,
// replace and remove what they name, after fastlb's own headers.
func TestRouteRewrites(t *testing.T) {
	h := startRouted(t, []string{"web", "api", "shop", "static"}, routedConfig)
	resp, e := h.echo("GET", "/v1/echo?x=1&y=%2F", "", "Host", "api.example.com",
		"X-Debug", "1", "X-Api-Version", "0", "X-Api-Version", "9")
	if e.Backend != "api" || e.URI != "/echo?x=1&y=%2F" {
		t.Errorf("backend %q got %q", e.Backend, e.URI)
	}
	var versions, protos []string
	for _, kv := range e.Headers {
		switch http.CanonicalHeaderKey(kv[0]) {
		case "X-Debug":
			t.Errorf("X-Debug reached the backend")
		case "X-Api-Version":
			versions = append(versions, kv[1])
		case "X-Forwarded-Proto":
			protos = append(protos, kv[1])
		}
	}
	if strings.Join(versions, ",") != "1" || strings.Join(protos, ",") != "https" {
		t.Errorf("X-Api-Version %v, X-Forwarded-Proto %v", versions, protos)
	}
	if resp.Header.Get("Strict-Transport-Security") != "max-age=63072000" || resp.Header.Get("Server") != "edge" {
		t.Errorf("response headers %v", resp.Header)
	}
	// Another route's answer carries none of them.
	if resp, _ := h.do("GET", "/", "", "Host", "www.shop.example"); resp.Header.Get("Strict-Transport-Security") != "" {
		t.Errorf("a rule of another route applied: %v", resp.Header)
	}

	for _, tc := range []struct{ path, want string }{
		{"/pecho?q", "/echo?q"},      // the prefix "/p" is byte-exact: a "/" is put back
		{"/p/echo", "/echo"},         // the one leading "/" is kept
		{"/p//echo", "//echo"},       // and no more taken away
		{"/p?echo", "/?echo"},        // nothing left of the path: "/"
		{"/p/echo%2Fx", "/echo%2Fx"}, // encoded bytes kept
	} {
		_, b := h.do("GET", tc.path, "", "Host", "strip.example")
		if !strings.Contains(b, fmt.Sprintf(`"uri":%q`, tc.want)) && !strings.Contains(b, fmt.Sprintf(`"uri": %q`, tc.want)) {
			// Not an /echo path at the backend: it answers its plain page;
			// the access log tells what was sent.
			h.accessLog.flush()
			if !strings.Contains(h.access.String(), fmt.Sprintf(`"uri":%q`, tc.want)) {
				t.Errorf("%s: sent as something else than %q:\n%s\n%s", tc.path, tc.want, b, h.access)
			}
		}
	}

	// An absolute-form target routes by its authority, not by Host.
	out := h.raw("GET http://api.example.com/v1/echo?z HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n")
	if !strings.Contains(out, `"backend":"api"`) || !strings.Contains(out, `"uri":"/echo?z"`) {
		t.Errorf("absolute-form request:\n%s", out)
	}
	// Without a prefix stripped, too; the backend gets the authority as Host.
	out = h.raw("GET http://www.shop.example/echo HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n")
	if !strings.Contains(out, `"backend":"shop"`) || !strings.Contains(out, `"uri":"/echo"`) || !strings.Contains(out, `["Host","www.shop.example"]`) {
		t.Errorf("absolute-form request:\n%s", out)
	}
}

// Without default backends, a request no route takes gets 404 and is
// counted; the access log names the pool and route of every request.
func TestNoRoute(t *testing.T) {
	h := startRouted(t, []string{"api"}, `{"port": 1, "admin_port": 2, "backends": [],
	  "pools": {"api": {"backends": ["{api}"]}},
	  "routes": [{"host": "api.example.com", "pool": "api"}, {"name": "ping", "path_prefix": "/ping", "pool": "api"}]}`)
	resp, body := h.do("GET", "/", "", "Host", "www.example.com")
	if resp.StatusCode != 404 || strings.TrimSpace(body) != `{"error": "no route"}` || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%d %q %v", resp.StatusCode, body, resp.Header)
	}
	if got := h.metric("fastlb_no_route_total"); got != "1" {
		t.Errorf("fastlb_no_route_total %s", got)
	}
	h.do("GET", "/", "", "Host", "api.example.com")
	h.do("GET", "/ping", "", "Host", "x")
	h.accessLog.flush()
	var lines []struct {
		Status int     `json:"status"`
		Pool   *string `json:"pool"`
		Route  *string `json:"route"`
	}
	for _, l := range strings.Split(strings.TrimSpace(h.access.String()), "\n") {
		var e struct {
			Status int     `json:"status"`
			Pool   *string `json:"pool"`
			Route  *string `json:"route"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		lines = append(lines, e)
	}
	str := func(p *string) string {
		if p == nil {
			return "null"
		}
		return *p
	}
	var got []string
	for _, l := range lines {
		got = append(got, fmt.Sprintf("%d %s %s", l.Status, str(l.Pool), str(l.Route)))
	}
	if strings.Join(got, "; ") != "404 null null; 200 api 0; 200 api ping" {
		t.Errorf("access log: %v", got)
	}
}

// Each pool balances, checks and fails on its own: a pool whose backend is
// down answers 503 while the others serve.
func TestPoolsApart(t *testing.T) {
	h := startRouted(t, []string{"web", "a1", "a2"}, `{"port": 1, "admin_port": 2,
	  "backends": ["{web}"],
	  "pools": {"api": {"backends": ["{a1}", "{a2}"], "sticky": {"mode": "header", "header": "X-User"}},
	            "gone": {"backends": ["http://127.0.0.1:1"], "retries": 0}},
	  "routes": [{"path_prefix": "/api/", "pool": "api"},
	             {"path_prefix": "/gone/", "pool": "gone", "set_response_headers": {"Cache-Control": "no-store"}}]}`)
	seen := map[string]int{}
	for range 10 {
		resp, _ := h.do("GET", "/api/x", "", "X-User", "alice")
		seen[resp.Header.Get("X-Backend")]++
	}
	if len(seen) != 1 || seen["web"] != 0 {
		t.Errorf("sticky by header within the pool: %v", seen)
	}
	if resp, _ := h.do("GET", "/gone/x", ""); resp.StatusCode != 503 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("a pool without a healthy backend: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ := h.do("GET", "/", ""); resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "web" {
		t.Errorf("default pool: %d %s", resp.StatusCode, resp.Header.Get("X-Backend"))
	}
	if got := h.metric(`fastlb_requests_total{pool="api",backend="` + h.backends[1].Addr() + `",code="200"}`); got == "" && h.metric(`fastlb_requests_total{pool="api",backend="`+h.backends[2].Addr()+`",code="200"}`) == "" {
		t.Errorf("no per-pool request series")
	}
}

// The request path with a route allocates nothing: matching, stripping
// and the header rules.
func TestRouteAllocs(t *testing.T) {
	cfg, err := config.Parse([]byte(`{"backends": [], "pools": {"api": {}}, "routes": [
	  {"host": "api.example.com", "path_prefix": "/v1/", "pool": "api", "strip_prefix": true,
	   "set_request_headers": {"X-Api-Version": "1"}, "remove_request_headers": ["X-Debug"],
	   "set_response_headers": {"Strict-Transport-Security": "max-age=1"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var rs []Route
	for _, r := range cfg.Routes {
		rs = append(rs, Route{Config: r, Pool: &Pool{Name: "api"}})
	}
	routes := newRoutes(rs, func(*config.Route) *limit { return nil })
	var req fasthttp.Request
	var resp fasthttp.Response
	n := testing.AllocsPerRun(200, func() {
		req.Header.SetRequestURI("/v1/users/42?full=1")
		req.Header.SetHost("API.example.com:443")
		req.Header.Set("X-Debug", "1")
		rt := routes.match(&req)
		if rt == nil {
			t.Fatal("no route")
		}
		rt.rewriteRequest(&req.Header)
		rt.rewriteResponse(&resp.Header)
	})
	if n != 0 {
		t.Errorf("%v allocations per routed request", n)
	}
	if string(req.Header.RequestURI()) != "/users/42?full=1" || string(req.Header.Peek("X-Api-Version")) != "1" || len(req.Header.Peek("X-Debug")) != 0 {
		t.Errorf("rewritten: %s", req.Header.String())
	}
}

// Every field the proxy treats as hop-by-hop is refused in a header rule,
// so a rule cannot undo what RemoveHopByHop did.
func TestHeaderRulesRefuseHopByHop(t *testing.T) {
	for _, name := range header.HopFields {
		for _, rule := range []string{
			`"set_request_headers": {"` + name + `": "x"}`,
			`"set_response_headers": {"` + name + `": "x"}`,
			`"remove_request_headers": ["` + name + `"]`,
		} {
			js := `{"pools": {"a": {}}, "routes": [{"host": "a.example", "pool": "a", ` + rule + `}]}`
			if _, err := config.Parse([]byte(js)); err == nil || !strings.Contains(err.Error(), "hop-by-hop") {
				t.Errorf("%s: %v", rule, err)
			}
		}
	}
}
