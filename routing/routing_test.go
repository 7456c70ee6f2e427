package routing

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"fastlb/config"
)

// routesOf parses routes through config, as fastlb does, so that the table
// sees validated, normalised routes. Each route's name is its pool.
func routesOf(t testing.TB, js string) []config.Route {
	t.Helper()
	var pools []string
	for i := range 64 {
		pools = append(pools, fmt.Sprintf(`"p%d": {}`, i))
	}
	c, err := config.Parse([]byte(`{"pools": {` + strings.Join(pools, ",") + `}, "routes": ` + js + `}`))
	if err != nil {
		t.Fatal(err)
	}
	return c.Routes
}

const example = `[
  {"host": "api.example.com", "path_prefix": "/v1/", "pool": "p1"},
  {"host": "api.example.com", "pool": "p2"},
  {"host": "*.example.com", "pool": "p3"},
  {"host": "*.eu.example.com", "pool": "p4"},
  {"host": "*.eu.example.com", "path_prefix": "/static/", "pool": "p5"},
  {"path_prefix": "/static/", "pool": "p6"},
  {"path_prefix": "/static/img/", "pool": "p7"},
  {"path_prefix": "/", "pool": "p8"},
  {"host": "only.example.org", "path_prefix": "/x", "pool": "p9"},
  {"host": "[2001:db8::1]", "pool": "p10"},
  {"host": "10.0.0.1", "pool": "p11"}
]`

func TestMatch(t *testing.T) {
	routes := routesOf(t, example)
	tb := New(routes)
	cases := []struct {
		host, path, want string // want: the pool, "" for no route
	}{
		{"api.example.com", "/v1/users", "p1"},
		{"API.Example.COM", "/v1/users", "p1"},      // case-insensitive host
		{"api.example.com:8080", "/v1/users", "p1"}, // port ignored
		{"api.example.com.", "/v1/users", "p1"},     // trailing dot
		{"api.example.com", "/v1", "p2"},            // byte-exact prefix: /v1/ does not match /v1
		{"api.example.com", "/V1/users", "p2"},      // nor /V1/
		{"api.example.com", "/static/a.css", "p2"},  // the exact host wins over a longer prefix elsewhere
		{"www.example.com", "/", "p3"},
		{"a.b.example.com", "/", "p3"},  // one label or more
		{"example.com", "/", "p8"},      // a wildcard needs at least one label
		{".example.com", "/", "p8"},     // and a non-empty one
		{"x.eu.example.com", "/", "p4"}, // the longest wildcard
		{"x.eu.example.com", "/static/", "p5"},
		{"x.eu.example.com", "/static/img/", "p5"}, // host first, then prefix
		{"other.org", "/static/img/a.png", "p7"},   // the longest prefix
		{"other.org", "/static/a", "p6"},
		{"other.org", "/static", "p8"},
		{"", "/static/a", "p6"},               // no Host
		{"only.example.org", "/y", "p8"},      // host routes without a matching prefix fall through
		{"only.example.org", "/xyz", "p9"},    // byte-exact prefix
		{"[2001:DB8::1]:443", "/", "p10"},     // IPv6 literal with a port
		{"10.0.0.1:80", "/", "p11"},           // IPv4 literal
		{strings.Repeat("a", 300), "/", "p8"}, // too long for a host name
		{"api.example.com", "*", "p2"},        // asterisk form: host-only routes
		{"www.example.org", "*", ""},          // nothing
		{"xexample.com", "/", "p8"},           // a suffix without its dot
	}
	for _, tc := range cases {
		t.Run(tc.host+tc.path, func(t *testing.T) {
			got := ""
			if i := tb.Match([]byte(tc.host), []byte(tc.path)); i >= 0 {
				got = routes[i].Pool
			}
			if got != tc.want {
				t.Errorf("Match(%q, %q) = %q, want %q", tc.host, tc.path, got, tc.want)
			}
			if ref := reference(routes, tc.host, tc.path); ref != got {
				t.Errorf("reference says %q", ref)
			}
		})
	}
	if New(nil).Match([]byte("a"), []byte("/")) != -1 {
		t.Error("an empty table matched")
	}
}

// The order of the routes in the file changes no answer.
func TestMatchOrderIndependent(t *testing.T) {
	routes := routesOf(t, example)
	requests := [][2]string{}
	for _, h := range []string{"api.example.com", "x.eu.example.com", "www.example.com", "other.org", "only.example.org", ""} {
		for _, p := range []string{"/", "/v1/", "/v1/a", "/static/", "/static/img/x", "/x", "/xyz", "*"} {
			requests = append(requests, [2]string{h, p})
		}
	}
	want := map[[2]string]string{}
	tb := New(routes)
	for _, r := range requests {
		if i := tb.Match([]byte(r[0]), []byte(r[1])); i >= 0 {
			want[r] = routes[i].Pool
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		shuffled := append([]config.Route(nil), routes...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		tb := New(shuffled)
		for _, r := range requests {
			got := ""
			if i := tb.Match([]byte(r[0]), []byte(r[1])); i >= 0 {
				got = shuffled[i].Pool
			}
			if got != want[r] {
				t.Fatalf("shuffled: %q %q went to %q, not %q", r[0], r[1], got, want[r])
			}
		}
		order := Order(shuffled)
		var names []string
		for _, i := range order {
			names = append(names, shuffled[i].Pool)
		}
		if got := strings.Join(names, " "); got != "p11 p10 p1 p2 p9 p5 p4 p3 p7 p6 p8" {
			t.Fatalf("Order gives %s", got)
		}
	}
}

func TestTarget(t *testing.T) {
	cases := []struct {
		uri, hostHeader, host, path string
		start                       int
	}{
		{"/a/b?x=1", "h.example", "h.example", "/a/b", 0},
		{"/a/b#f", "h.example", "h.example", "/a/b", 0},
		{"http://abs.example/a?x", "h.example", "abs.example", "/a", 18},
		{"HTTPS://u:p@abs.example:8443/a", "", "abs.example:8443", "/a", 28},
		{"http://abs.example", "h", "abs.example", "/", 18},
		{"http://abs.example?q", "h", "abs.example", "/", 18},
		{"*", "h.example", "h.example", "*", 0},
		{"ftp://x/y", "h", "h", "ftp://x/y", 0},
		{"", "h", "h", "", 0},
	}
	for _, tc := range cases {
		host, path, start := Target([]byte(tc.uri), []byte(tc.hostHeader))
		if string(host) != tc.host || string(path) != tc.path || start != tc.start {
			t.Errorf("Target(%q, %q) = %q %q %d, want %q %q %d", tc.uri, tc.hostHeader, host, path, start, tc.host, tc.path, tc.start)
		}
	}
}

// reference is the SPEC's rule written the slow way: of the routes whose
// host and prefix match, the most specific host, then the longest prefix.
// It returns the route's pool, "" for none.
func reference(routes []config.Route, host, path string) string {
	if i := referenceIndex(routes, host, path); i >= 0 {
		return routes[i].Pool
	}
	return ""
}

func referenceIndex(routes []config.Route, host, path string) int {
	var buf [maxHost]byte
	h, ok := normalHost(buf[:0], []byte(host))
	best, bestRank := -1, [2]int{-1, -1}
	for i, r := range routes {
		hostRank := -1
		switch {
		case r.Host == "":
			hostRank = 0
		case !ok || len(h) == 0:
		case strings.HasPrefix(r.Host, "*."):
			if len(h) > len(r.Host)-1 && strings.HasSuffix(string(h), r.Host[1:]) {
				hostRank = len(r.Host)
			}
		case string(h) == r.Host:
			hostRank = 1 << 20
		}
		if hostRank < 0 || !strings.HasPrefix(path, r.PathPrefix) {
			continue
		}
		rank := [2]int{hostRank, len(r.PathPrefix)}
		if rank[0] > bestRank[0] || rank[0] == bestRank[0] && rank[1] > bestRank[1] {
			best, bestRank = i, rank
		}
	}
	return best
}

// randomRoutes makes n distinct routes over a small alphabet, so that
// hosts, wildcards and prefixes overlap often.
func randomRoutes(rng *rand.Rand, n int) string {
	labels := []string{"a", "b", "ab", "example", "com"}
	paths := []string{"/", "/a", "/a/", "/ab", "/a/b", "/b", "/b/a/", "/%41", "/a/b/c"}
	seen := map[string]bool{}
	var items []string
	for len(items) < n {
		var host string
		switch rng.IntN(3) {
		case 1:
			host = labels[rng.IntN(len(labels))] + "." + labels[rng.IntN(len(labels))]
		case 2:
			host = "*." + labels[rng.IntN(len(labels))]
		}
		prefix := ""
		if rng.IntN(3) > 0 || host == "" {
			prefix = paths[rng.IntN(len(paths))]
		}
		if seen[host+" "+prefix] {
			continue
		}
		seen[host+" "+prefix] = true
		items = append(items, fmt.Sprintf(`{"host": %q, "path_prefix": %q, "pool": "p%d"}`, host, prefix, len(items)%64))
	}
	return "[" + strings.Join(items, ",") + "]"
}

// FuzzMatch checks the table against the reference on random route sets
// and requests.
func FuzzMatch(f *testing.F) {
	f.Add(uint64(1), "a.example", "/a/b")
	f.Add(uint64(2), "x.ab.com:80", "/a/")
	f.Add(uint64(3), "", "*")
	f.Fuzz(func(t *testing.T, seed uint64, host, path string) {
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		routes := routesOf(t, randomRoutes(rng, 1+rng.IntN(20)))
		got := New(routes).Match([]byte(host), []byte(path))
		if want := referenceIndex(routes, host, path); got != want {
			t.Fatalf("%q %q went to route %d, reference %d (%+v)", host, path, got, want, routes)
		}
	})
}

func TestMatchRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	hosts := []string{"a.example", "x.ab.com", "ab.com", "b.a", "B.A:1", "example", "q.example", ""}
	paths := []string{"/", "/a", "/a/b/c/d", "/ab", "/b/a/x", "/%41", "*", ""}
	for range 200 {
		routes := routesOf(t, randomRoutes(rng, 1+rng.IntN(30)))
		tb := New(routes)
		for _, h := range hosts {
			for _, p := range paths {
				got := ""
				if i := tb.Match([]byte(h), []byte(p)); i >= 0 {
					got = routes[i].Host + " " + routes[i].PathPrefix
				}
				want := ""
				if i := referenceIndex(routes, h, p); i >= 0 {
					want = routes[i].Host + " " + routes[i].PathPrefix
				}
				if got != want {
					t.Fatalf("%q %q: %q, reference %q", h, p, got, want)
				}
			}
		}
	}
}

// BenchmarkRoute matches requests against tables of 10, 1,000 and 10,000
// routes: exact hosts with and without prefixes, wildcards, and routes
// without a host; half the requests hit an exact host, the others a
// wildcard or fall through to a prefix.
func BenchmarkRoute(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("routes-%d", n), func(b *testing.B) {
			var items []string
			for i := range n {
				switch i % 4 {
				case 0:
					items = append(items, fmt.Sprintf(`{"host": "svc%d.example.com", "pool": "p%d"}`, i, i%64))
				case 1:
					items = append(items, fmt.Sprintf(`{"host": "svc%d.example.com", "path_prefix": "/api/v%d/", "pool": "p%d"}`, i-1, i%7, i%64))
				case 2:
					items = append(items, fmt.Sprintf(`{"host": "*.tenant%d.example.net", "pool": "p%d"}`, i, i%64))
				case 3:
					items = append(items, fmt.Sprintf(`{"path_prefix": "/static/%d/", "pool": "p%d"}`, i, i%64))
				}
			}
			routes := routesOf(b, "["+strings.Join(items, ",")+"]")
			tb := New(routes)
			type req struct{ host, path []byte }
			var reqs []req
			for i := range 64 {
				k := (i * 37) % n
				reqs = append(reqs,
					req{[]byte(fmt.Sprintf("SVC%d.example.com:443", k-k%4)), []byte("/api/v1/users/42")},
					req{[]byte(fmt.Sprintf("www.tenant%d.example.net", k-k%4+2)), []byte("/index.html")},
					req{[]byte("unknown.example.org"), []byte(fmt.Sprintf("/static/%d/app.js", k-k%4+3))},
					req{[]byte("unknown.example.org"), []byte("/nothing/here")})
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					r := reqs[i%len(reqs)]
					tb.Match(r.host, r.path)
					i++
				}
			})
		})
	}
}

// Match allocates nothing.
func TestMatchAllocs(t *testing.T) {
	tb := New(routesOf(t, example))
	host, path := []byte("X.EU.example.com:8443"), []byte("/static/img/a.png")
	uri := []byte("http://x.eu.example.com/static/?q")
	if n := testing.AllocsPerRun(100, func() {
		tb.Match(host, path)
		h, p, _ := Target(uri, nil)
		tb.Match(h, p)
	}); n != 0 {
		t.Errorf("%v allocations per match", n)
	}
	if !bytes.Equal(slash, []byte("/")) {
		t.Fatal("slash changed")
	}
}

// FuzzTarget: any request target and Host give a host and path that are
// parts of them, and a path start within the target.
func FuzzTarget(f *testing.F) {
	for _, s := range []string{"/a?b", "http://h/x", "HTTPS://u@h:1", "*", "http://", "https://[::1]:8/p#f", "x://y"} {
		f.Add(s, "host.example")
	}
	f.Fuzz(func(t *testing.T, uri, hostHeader string) {
		host, path, start := Target([]byte(uri), []byte(hostHeader))
		if start < 0 || start > len(uri) {
			t.Fatalf("path start %d outside %q", start, uri)
		}
		if !strings.Contains(uri, string(host)) && !strings.Contains(hostHeader, string(host)) {
			t.Fatalf("host %q from neither %q nor %q", host, uri, hostHeader)
		}
		if string(path) != "/" && !strings.HasPrefix(uri[start:], string(path)) {
			t.Fatalf("path %q is not at %d of %q", path, start, uri)
		}
		var buf [maxHost]byte
		normalHost(buf[:0], host)
	})
}
