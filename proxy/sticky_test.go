package proxy

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"fastlb/upstream"
)

// metric reads a metric of the harness's metrics set or of its pool.
func (h *harness) metric(name string) string {
	var b bytes.Buffer
	h.metrics.WritePrometheus(&b)
	h.pool.WriteMetrics(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return "missing"
}

func TestStickyHeader(t *testing.T) {
	h := startHarness(t, `"sticky": {"mode": "header", "header": "X-User"}`, 1, 1, 1)
	owner := map[string]string{}
	for round := range 4 {
		for u := range 30 {
			user := fmt.Sprint("user-", u)
			resp, _ := h.do("GET", "/", "", "X-User", user)
			b := resp.Header.Get("X-Backend")
			if round == 0 {
				owner[user] = b
			} else if owner[user] != b {
				t.Fatalf("%s moved from %s to %s", user, owner[user], b)
			}
		}
	}
	spread := map[string]int{}
	for _, b := range owner {
		spread[b]++
	}
	if len(spread) != 3 {
		t.Errorf("30 users reached %d backends: %v", len(spread), spread)
	}
	// Without the header: the normal strategy.
	seen := map[string]bool{}
	for range 6 {
		_, b := h.get("/")
		seen[b] = true
	}
	if len(seen) != 3 {
		t.Errorf("requests without the header did not go round-robin: %v", seen)
	}
	if got := h.metric("fastlb_sticky_rebalanced_total"); got != "0" {
		t.Errorf("rebalanced = %s, want 0", got)
	}
}

func TestStickyHeaderBackendDown(t *testing.T) {
	h := startHarness(t, `"sticky": {"mode": "header", "header": "X-User"}, "health_check": {"fall": 1}`, 1, 1, 1)
	resp, _ := h.do("GET", "/", "", "X-User", "alice")
	first := resp.Header.Get("X-Backend")
	for i, b := range h.backends {
		if b.Name() == first {
			h.backends[i].SetHealthy(false)
			h.pool.ReportCheck(h.pool.Snapshot().Lookup(b.Name()), upstream.CheckResult{OK: false, Err: "test"})
		}
	}
	resp, _ = h.do("GET", "/", "", "X-User", "alice")
	second := resp.Header.Get("X-Backend")
	if resp.StatusCode != 200 || second == first {
		t.Fatalf("with %s down alice got %d from %s", first, resp.StatusCode, second)
	}
	resp, _ = h.do("GET", "/", "", "X-User", "alice")
	if resp.Header.Get("X-Backend") != second {
		t.Error("the fallback is not sticky")
	}
	if got := h.metric("fastlb_sticky_rebalanced_total"); got != "2" {
		t.Errorf("rebalanced = %s, want 2", got)
	}
	h.pool.ReportCheck(h.pool.Snapshot().Lookup(first), upstream.CheckResult{OK: true})
	h.pool.ReportCheck(h.pool.Snapshot().Lookup(first), upstream.CheckResult{OK: true})
	resp, _ = h.do("GET", "/", "", "X-User", "alice")
	if resp.Header.Get("X-Backend") != first {
		t.Error("alice did not return to her backend once it was back")
	}
}

// TestStickyIP uses raw requests whose X-Forwarded-For the harness's own
// peer (127.0.0.1) may or may not be trusted to send.
func TestStickyIP(t *testing.T) {
	backendFor := func(h *harness, xff string) string {
		out := h.raw("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: " + xff + "\r\nConnection: close\r\n\r\n")
		_, after, _ := strings.Cut(out, "X-Backend: ")
		name, _, _ := strings.Cut(after, "\r\n")
		return name
	}
	t.Run("untrusted peer: the peer is the client", func(t *testing.T) {
		h := startHarness(t, `"sticky": {"mode": "ip"}`, 1, 1, 1, 1, 1)
		first := backendFor(h, "203.0.113.1")
		for i := range 20 {
			if got := backendFor(h, fmt.Sprintf("198.51.100.%d", i)); got != first {
				t.Fatalf("X-Forwarded-For from an untrusted peer changed the backend: %s, then %s", first, got)
			}
		}
	})
	t.Run("trusted peer: rightmost untrusted address", func(t *testing.T) {
		h := startHarness(t, `"sticky": {"mode": "ip", "trusted_proxies": ["127.0.0.0/8", "10.0.0.0/8"]}`, 1, 1, 1, 1, 1)
		seen := map[string]bool{}
		for i := range 40 {
			client := fmt.Sprintf("198.51.100.%d", i)
			want := backendFor(h, client)
			seen[want] = true
			// A spoofed left part and trusted hops on the right do not matter.
			if got := backendFor(h, "6.6.6.6, "+client+", 10.1.2.3"); got != want {
				t.Fatalf("%s via a trusted hop went to %s, directly to %s", client, got, want)
			}
			if got := backendFor(h, client+",10.9.9.9"); got != want {
				t.Fatalf("%s: %s vs %s", client, got, want)
			}
		}
		if len(seen) < 4 {
			t.Errorf("40 clients reached only %v", seen)
		}
		// Garbage in the chain: the last good address (the trusted hop) is used,
		// consistently.
		if a, b := backendFor(h, "198.51.100.1, junk, 10.0.0.7"), backendFor(h, "198.51.100.2, junk, 10.0.0.7"); a != b {
			t.Errorf("garbage in X-Forwarded-For: %s vs %s", a, b)
		}
	})
}

func cookieOf(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestStickyCookieInsert(t *testing.T) {
	h := startHarness(t, `"sticky": {"mode": "cookie", "cookie": "lb", "cookie_max_age": "1h"}`, 1, 1, 1)
	resp, _ := h.do("GET", "/", "")
	c := cookieOf(resp, "lb")
	if c == nil {
		t.Fatalf("no sticky cookie on the first response: %v", resp.Header.Values("Set-Cookie"))
	}
	raw := resp.Header.Get("Set-Cookie")
	for _, attr := range []string{"HttpOnly", "SameSite=Lax", "Path=/", "max-age=3600"} {
		if !strings.Contains(strings.ToLower(raw), strings.ToLower(attr)) {
			t.Errorf("Set-Cookie %q lacks %s", raw, attr)
		}
	}
	if strings.Contains(strings.ToLower(raw), "secure") {
		t.Errorf("Secure on plain HTTP: %q", raw)
	}
	owner := resp.Header.Get("X-Backend")
	for _, b := range h.backends {
		if b.Name() == owner && (strings.Contains(c.Value, "127.0.0.1") || strings.Contains(c.Value, b.Addr()[strings.LastIndex(b.Addr(), ":")+1:])) {
			t.Errorf("cookie value %q reveals the backend's address %s", c.Value, b.Addr())
		}
	}
	for i := range 20 {
		resp, _ := h.do("GET", "/", "", "Cookie", "lb="+c.Value)
		if got := resp.Header.Get("X-Backend"); got != owner {
			t.Fatalf("request %d with the cookie went to %s, not %s", i, got, owner)
		}
		if len(resp.Header.Values("Set-Cookie")) != 0 {
			t.Fatalf("cookie set again although it is valid: %v", resp.Header.Values("Set-Cookie"))
		}
	}

	// Garbage and forged values are treated as absent: a new cookie.
	for _, v := range []string{"garbage", "v1.AAAAAAAAAAAAAAAA", `"` + c.Value + `x"`, ""} {
		resp, _ := h.do("GET", "/", "", "Cookie", "lb="+v)
		if resp.StatusCode != 200 || cookieOf(resp, "lb") == nil {
			t.Errorf("cookie %q: status %d, no new cookie", v, resp.StatusCode)
		}
	}
	// Quoted values are accepted.
	if resp, _ := h.do("GET", "/", "", "Cookie", `other=1; lb="`+c.Value+`"`); resp.Header.Get("X-Backend") != owner {
		t.Error("a quoted cookie value was not recognised")
	}

	// The sticky backend dies: another serves, and a new cookie is set.
	for _, b := range h.backends {
		if b.Name() == owner {
			b.Close()
		}
	}
	resp, _ = h.do("GET", "/", "", "Cookie", "lb="+c.Value)
	nc := cookieOf(resp, "lb")
	if resp.StatusCode != 200 || resp.Header.Get("X-Backend") == owner || nc == nil || nc.Value == c.Value {
		t.Fatalf("sticky backend dead: status %d from %s, new cookie %v", resp.StatusCode, resp.Header.Get("X-Backend"), nc)
	}
	newOwner := resp.Header.Get("X-Backend")
	for range 5 {
		if resp, _ := h.do("GET", "/", "", "Cookie", "lb="+nc.Value); resp.Header.Get("X-Backend") != newOwner {
			t.Fatal("the new cookie does not stick")
		}
	}
	if got := h.metric("fastlb_sticky_rebalanced_total"); got == "0" {
		t.Error("re-stick not counted")
	}
}

func TestStickyCookieForwardedUnchanged(t *testing.T) {
	h := startHarness(t, `"sticky": {"mode": "cookie"}`, 1)
	out := h.raw("GET /echo HTTP/1.1\r\nHost: h\r\nCookie: b=\"q v\"; fastlb=v1.xyz\r\nCookie: c=3\r\nConnection: close\r\n\r\n")
	if !strings.Contains(out, `["Cookie","b=\"q v\"; fastlb=v1.xyz"]`) || !strings.Contains(out, `["Cookie","c=3"]`) {
		t.Errorf("Cookie headers rewritten:\n%s", out)
	}
}

func TestStickyCookieDrainAndMaint(t *testing.T) {
	h := startHarness(t, `"sticky": {"mode": "cookie"}`, 1, 1)
	resp, _ := h.do("GET", "/", "")
	c := cookieOf(resp, "fastlb")
	owner := resp.Header.Get("X-Backend")
	h.pool.SetState(owner, upstream.StateDrain)
	for range 5 {
		if resp, _ := h.do("GET", "/", "", "Cookie", "fastlb="+c.Value); resp.Header.Get("X-Backend") != owner {
			t.Fatal("a draining backend lost a sticky client")
		}
	}
	for range 5 {
		if _, b := h.get("/"); b == owner {
			t.Fatal("a draining backend took a new client")
		}
	}
	h.pool.SetState(owner, upstream.StateMaint)
	resp, _ = h.do("GET", "/", "", "Cookie", "fastlb="+c.Value)
	if resp.Header.Get("X-Backend") == owner || cookieOf(resp, "fastlb") == nil {
		t.Error("maint: the client was not moved with a new cookie")
	}
}

func TestStickyCookieHashed(t *testing.T) {
	h := startHarness(t, `"sticky": {"mode": "cookie", "cookie": "SESSION", "cookie_insert": false}`, 1, 1, 1)
	owner := map[string]string{}
	for round := range 3 {
		for s := range 20 {
			v := fmt.Sprint("sess-", s)
			resp, _ := h.do("GET", "/", "", "Cookie", "theme=dark; SESSION="+v)
			if len(resp.Header.Values("Set-Cookie")) != 0 {
				t.Fatal("fastlb set a cookie with cookie_insert false")
			}
			b := resp.Header.Get("X-Backend")
			if round == 0 {
				owner[v] = b
			} else if owner[v] != b {
				t.Fatalf("session %s moved", v)
			}
		}
	}
	if len(map[string]bool{owner["sess-0"]: true, owner["sess-1"]: true, owner["sess-2"]: true, owner["sess-3"]: true, owner["sess-4"]: true, owner["sess-5"]: true}) < 2 {
		t.Errorf("sessions all on one backend: %v", owner)
	}
}

func TestPeekCookie(t *testing.T) {
	tests := []struct {
		cookies []string
		want    string
		found   bool
	}{
		{[]string{"lb=abc"}, "abc", true},
		{[]string{"a=1; lb=abc; c=3"}, "abc", true},
		{[]string{"a=1", "lb = abc "}, "abc", true},
		{[]string{`lb="abc"`}, "abc", true},
		{[]string{"xlb=1; lbx=2"}, "", false},
		{[]string{"lb"}, "", false},
		{[]string{"lb="}, "", false}, // an empty value is no value
		{nil, "", false},
	}
	for _, tt := range tests {
		var h fasthttp.RequestHeader
		for _, c := range tt.cookies {
			h.Add("Cookie", c)
		}
		got := peekCookie(&h, []byte("lb"))
		if string(got) != tt.want || (got != nil) != tt.found {
			t.Errorf("peekCookie(%q) = %q (found %v), want %q (%v)", tt.cookies, got, got != nil, tt.want, tt.found)
		}
	}
}

func FuzzPeekCookie(f *testing.F) {
	f.Add("a=1; lb=abc; c=3")
	f.Add(`lb="x"`)
	f.Fuzz(func(t *testing.T, line string) {
		var h fasthttp.RequestHeader
		h.Add("Cookie", line)
		stored := string(h.Peek("Cookie")) // fasthttp may sanitize what Add got
		v := peekCookie(&h, []byte("lb"))
		if v != nil && !strings.Contains(stored, string(v)) {
			t.Fatalf("value %q not in %q", v, stored)
		}
	})
}

// TestStickyAllocations holds sticky requests to 0 allocations.
func TestStickyAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	for _, mode := range []string{`"mode": "ip"`, `"mode": "header", "header": "User-Agent"`, `"mode": "cookie"`} {
		h := startHarness(t, `"sticky": {`+mode+`, "balance_factor": 1.5}`, 1, 1)
		r := newReqCtx()
		handler := h.proxy.ServeHTTP
		r.serve(t, handler)
		if n := testing.AllocsPerRun(300, func() { r.serve(t, handler) }); n != 0 {
			t.Errorf("%s: %.2f allocations per request", mode, n)
		}
	}
}
