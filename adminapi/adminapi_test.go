package adminapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"fastlb/config"
	"fastlb/testbackends"
	"fastlb/upstream"
)

// runtime is a Runtime over a configuration file, reloading the way
// cmd/fastlb does for the backends.
type runtime struct {
	changing sync.Mutex // Exclusive and Reload
	mu       sync.Mutex
	path     string
	cfg      *config.Config
	pool     *upstream.Pool   // the default pool
	pools    []*upstream.Pool // every pool, the default first
}

// newRuntime makes a pool for each of cfg's pools.
func newRuntime(path string, cfg *config.Config, logger *slog.Logger) *runtime {
	r := &runtime{path: path, cfg: cfg}
	for _, pc := range cfg.AllPools() {
		r.pools = append(r.pools, upstream.NewPool(pc.Backends, upstream.Options{Name: pc.Name, Rise: 1, Fall: 1, Logger: logger}))
	}
	r.pool = r.pools[0]
	return r
}

func (r *runtime) Pools() []*upstream.Pool { return r.pools }

func (r *runtime) Fleet() Fleet { return nil }

func (r *runtime) Config() *config.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

func (r *runtime) Exclusive(fn func()) {
	r.changing.Lock()
	defer r.changing.Unlock()
	fn()
}

func (r *runtime) Reload() (*ReloadResult, error) {
	r.changing.Lock()
	defer r.changing.Unlock()
	next, err := config.Load(r.path)
	if err != nil {
		return nil, err
	}
	d := r.pool.Apply(next.Backends, nil)
	for _, p := range r.pools[1:] {
		if pc := next.PoolNamed(p.Name()); pc != nil {
			p.Apply(pc.Backends, nil)
		}
	}
	r.mu.Lock()
	r.cfg = next
	r.mu.Unlock()
	return &ReloadResult{Backends: d, Applied: []string{}, RestartRequired: []string{}}, nil
}

type adminHarness struct {
	t    *testing.T
	url  string
	rt   *runtime
	pool *upstream.Pool
}

func startAdmin(t *testing.T, js string) *adminHarness {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(js), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rt := newRuntime(path, cfg, logger)
	pool := rt.pool
	set := metrics.NewSet()
	set.NewCounter("fastlb_retries_total")
	api := New(Options{Runtime: rt, ConfigPath: path, Metrics: set, Version: "v-test", Started: time.Now(), Logger: logger})
	srv := api.NewServer()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Shutdown()
		for _, p := range rt.pools {
			p.Close()
		}
	})
	return &adminHarness{t: t, url: "http://" + ln.Addr().String(), rt: rt, pool: pool}
}

// call sends a request and returns the status and body.
func (h *adminHarness) call(method, path, body string, hdr ...string) (int, string, http.Header) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (h *adminHarness) backend(id string) Backend {
	h.t.Helper()
	code, body, _ := h.call("GET", "/api/v1/backends/"+id, "")
	if code != 200 {
		h.t.Fatalf("GET backend %s: %d %s", id, code, body)
	}
	var b Backend
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		h.t.Fatal(err)
	}
	return b
}

const twoBackends = `{"backends": ["http://127.0.0.1:9001", {"url": "http://127.0.0.1:9002", "weight": 3, "id": "big"}]}`

func TestRoutes(t *testing.T) {
	h := startAdmin(t, twoBackends)
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string // in the body
	}{
		{"healthz", "GET", "/healthz", "", 200, "ok"},
		{"metrics", "GET", "/metrics", "", 200, `fastlb_backend_weight{pool="default",backend="big"} 3`},
		{"process metrics", "GET", "/metrics", "", 200, "go_goroutines"},
		{"own metrics", "GET", "/metrics", "", 200, "fastlb_retries_total 0"},
		{"status", "GET", "/api/v1/status", "", 200, `"version": "v-test"`},
		{"list", "GET", "/api/v1/backends", "", 200, `"id": "127.0.0.1:9001"`},
		{"get", "GET", "/api/v1/backends/big", "", 200, `"weight": 3`},
		{"get percent-encoded", "GET", "/api/v1/backends/127.0.0.1%3A9001", "", 200, `"url": "http://127.0.0.1:9001"`},
		{"get unknown", "GET", "/api/v1/backends/nope", "", 404, `{"error":"no backend \"nope\""}`},
		{"unknown route", "GET", "/api/v2/status", "", 404, `"error":"no route for GET /api/v2/status"`},
		{"trailing slash", "GET", "/api/v1/backends/", "", 404, `"error"`},
		{"wrong method", "PUT", "/api/v1/backends", "{}", 405, `"error":"method PUT not allowed on /api/v1/backends`},
		{"wrong method on backend", "POST", "/api/v1/backends/big", "{}", 405, `"error"`},
		{"config", "GET", "/api/v1/config", "", 200, `"strategy": "round-robin"`},

		{"add", "POST", "/api/v1/backends", `{"url": "http://127.0.0.1:9003", "weight": 2, "id": "c"}`, 201, `"id": "c"`},
		{"add exists", "POST", "/api/v1/backends", `{"url": "http://127.0.0.1:9004", "id": "c"}`, 409, `already exists: \"c\"`},
		{"add default id exists", "POST", "/api/v1/backends", `{"url": "http://127.0.0.1:9001"}`, 409, `already exists`},
		{"add not JSON", "POST", "/api/v1/backends", `url=http://x`, 400, `"error":"invalid backend: must be a JSON object`},
		{"add bad JSON", "POST", "/api/v1/backends", `{"url": "http://x:1",}`, 400, `invalid JSON at line 1`},
		{"add not UTF-8", "POST", "/api/v1/backends", `{"url": "http://x:1", "id": "` + strings.Repeat("\xdb", 2000) + `"}`, 400, `not UTF-8`},
		{"add no url", "POST", "/api/v1/backends", `{"weight": 1}`, 400, `url: is required`},
		{"add bad url", "POST", "/api/v1/backends", `{"url": "ftp://x"}`, 400, `url: scheme of \"ftp://x\" must be http, https, h2c`},
		{"add bad weight", "POST", "/api/v1/backends", `{"url": "http://x:1", "weight": 5000}`, 400, `weight: must be 0..1000`},
		{"add unknown key", "POST", "/api/v1/backends", `{"url": "http://x:1", "wieght": 2}`, 400, `wieght: unknown key (did you mean \"weight\"?)`},
		{"add empty body", "POST", "/api/v1/backends", ``, 400, `must be a JSON object`},
		{"add array", "POST", "/api/v1/backends", `[{"url": "http://x:1"}]`, 400, `must be a JSON object`},

		{"patch weight", "PATCH", "/api/v1/backends/c", `{"weight": 7}`, 200, `"weight": 7`},
		{"patch state", "PATCH", "/api/v1/backends/c", `{"state": "drain"}`, 200, `"drained": true`},
		{"patch both", "PATCH", "/api/v1/backends/c", `{"state": "maint", "weight": 0}`, 200, `"state": "maint"`},
		{"patch unknown id", "PATCH", "/api/v1/backends/nope", `{"weight": 1}`, 404, `no backend \"nope\"`},
		{"patch nothing", "PATCH", "/api/v1/backends/c", `{}`, 400, `nothing to change`},
		{"patch not JSON", "PATCH", "/api/v1/backends/c", `weight=1`, 400, `body must be a JSON object`},
		{"patch null", "PATCH", "/api/v1/backends/c", `null`, 400, `body must be a JSON object`},
		{"patch weight range", "PATCH", "/api/v1/backends/c", `{"weight": -1}`, 400, `weight: must be 0..1000, not -1`},
		{"patch weight type", "PATCH", "/api/v1/backends/c", `{"weight": "3"}`, 400, `weight: must be an integer`},
		{"patch weight float", "PATCH", "/api/v1/backends/c", `{"weight": 2.5}`, 400, `weight: must be an integer`},
		{"patch bad state", "PATCH", "/api/v1/backends/c", `{"state": "paused"}`, 400, `state: unknown state \"paused\"`},
		{"patch state type", "PATCH", "/api/v1/backends/c", `{"state": 1}`, 400, `state: must be`},
		{"patch url", "PATCH", "/api/v1/backends/c", `{"url": "http://y:1"}`, 400, `url: unknown key`},
		{"delete", "DELETE", "/api/v1/backends/c", "", 204, ""},
		{"delete again", "DELETE", "/api/v1/backends/c", "", 404, `no such backend: \"c\"`},
		{"too large", "POST", "/api/v1/backends", `{"url": "` + strings.Repeat("x", 70000) + `"}`, 413, `body larger than 65536 bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body, hdr := h.call(tt.method, tt.path, tt.body)
			if code != tt.status || !strings.Contains(body, tt.want) {
				t.Errorf("%s %s: %d %s; want %d with %q", tt.method, tt.path, code, body, tt.status, tt.want)
			}
			if code >= 400 {
				var e map[string]string
				if err := json.Unmarshal([]byte(body), &e); err != nil || e["error"] == "" || len(e) != 1 {
					t.Errorf("error body is not {\"error\": ...}: %s", body)
				}
			}
			if tt.status == 201 && hdr.Get("Location") != "/api/v1/backends/c" {
				t.Errorf("Location = %q", hdr.Get("Location"))
			}
			if tt.status == 405 && hdr.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
	if got := len(h.pool.Snapshot().All); got != 2 {
		t.Errorf("%d backends after the table, want 2", got)
	}
}

func TestBackendView(t *testing.T) {
	h := startAdmin(t, twoBackends)
	b := h.pool.Snapshot().Lookup("big")
	h.pool.ReportCheck(b, upstream.CheckResult{At: time.Now(), OK: false, Latency: 1500 * time.Microsecond, Err: "connection refused"})
	v := h.backend("big")
	want := Backend{ID: "big", URL: "http://127.0.0.1:9002", Weight: 3, State: "active"}
	if v.ID != want.ID || v.URL != want.URL || v.Weight != 3 || v.State != "active" || v.Healthy || v.Drained {
		t.Errorf("view = %+v", v)
	}
	if v.LastCheck == nil || v.LastCheck.OK || v.LastCheck.LatencyMs != 1.5 || v.LastCheck.Error != "connection refused" {
		t.Errorf("last_check = %+v", v.LastCheck)
	}
	_, body, _ := h.call("GET", "/api/v1/backends/127.0.0.1:9001", "")
	for _, key := range []string{"id", "url", "weight", "state", "healthy", "active_requests", "requests_total", "failures_total", "last_check", "drained"} {
		if !strings.Contains(body, `"`+key+`":`) {
			t.Errorf("backend lacks %q: %s", key, body)
		}
	}
}

func TestAuth(t *testing.T) {
	h := startAdmin(t, `{"admin_token": "s3cret", "sticky": {"mode": "cookie", "cookie_secret": "0123456789abcdefXYZ"}, "backends": []}`)
	for _, path := range []string{"/metrics", "/api/v1/status", "/api/v1/backends", "/api/v1/config", "/debug/pprof/"} {
		if code, body, hdr := h.call("GET", path, ""); code != 401 || !strings.Contains(body, "missing or wrong bearer token") || hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s without token: %d %s", path, code, body)
		}
		if code, _, _ := h.call("GET", path, "", "Authorization", "Bearer wrong"); code != 401 {
			t.Errorf("%s with a wrong token: %d", path, code)
		}
		if code, _, _ := h.call("GET", path, "", "Authorization", "Basic czNjcmV0"); code != 401 {
			t.Errorf("%s with basic auth: %d", path, code)
		}
		if code, _, _ := h.call("GET", path, "", "Authorization", "Bearer s3cret"); code != 200 {
			t.Errorf("%s with the token: %d", path, code)
		}
	}
	if code, _, _ := h.call("POST", "/api/v1/backends", `{"url": "http://127.0.0.1:1"}`); code != 401 {
		t.Errorf("POST without token: %d", code)
	}
	if len(h.pool.Snapshot().All) != 0 {
		t.Error("an unauthenticated POST changed the pool")
	}
	if code, _, _ := h.call("GET", "/healthz", ""); code != 200 {
		t.Errorf("/healthz must not need the token: %d", code)
	}
	_, body, _ := h.call("GET", "/api/v1/config", "", "Authorization", "Bearer s3cret")
	if strings.Contains(body, "s3cret") || !strings.Contains(body, `"admin_token": "(redacted)"`) {
		t.Errorf("token not redacted: %s", body)
	}
	if strings.Contains(body, "0123456789abcdefXYZ") || !strings.Contains(body, `"cookie_secret": "(redacted)"`) {
		t.Errorf("cookie secret not redacted: %s", body)
	}
	if _, body, _ := h.call("GET", "/api/v1/status", "", "Authorization", "Bearer s3cret"); !strings.Contains(body, `"sticky_mode": "cookie"`) {
		t.Errorf("status lacks the sticky mode: %s", body)
	}
}

func TestPersist(t *testing.T) {
	js := `{
  "port": 9100,
  "admin_persist": true,
  "backends": ["http://127.0.0.1:9001"],
  "log_level": "warn"
}`
	h := startAdmin(t, js)
	steps := []struct{ method, path, body string }{
		{"POST", "/api/v1/backends", `{"url": "http://127.0.0.1:9002", "id": "b2", "weight": 4}`},
		{"PATCH", "/api/v1/backends/127.0.0.1:9001", `{"state": "drain"}`},
		{"POST", "/api/v1/backends", `{"url": "http://127.0.0.1:9003"}`},
		{"DELETE", "/api/v1/backends/127.0.0.1:9003", ""},
	}
	for _, s := range steps {
		if code, body, _ := h.call(s.method, s.path, s.body); code >= 300 {
			t.Fatalf("%s %s: %d %s", s.method, s.path, code, body)
		}
	}
	data, err := os.ReadFile(h.rt.path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatalf("persisted file does not load: %v\n%s", err, data)
	}
	if cfg.Port != 9100 || cfg.LogLevel != "warn" || !cfg.AdminPersist {
		t.Errorf("other settings lost:\n%s", data)
	}
	if len(cfg.Backends) != 2 || cfg.Backends[0].State != config.StateDrain || cfg.Backends[1].ID != "b2" || cfg.Backends[1].Weight != 4 {
		t.Errorf("backends not persisted:\n%s", data)
	}
	if !strings.HasPrefix(string(data), "{\n  \"port\": 9100,\n  \"admin_persist\": true,\n  \"backends\": [") {
		t.Errorf("key order not kept:\n%s", data)
	}
	fi, _ := os.Stat(h.rt.path)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("file mode %v, want the original 0640", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(h.rt.path))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	// A reload keeps the persisted change.
	if code, body, _ := h.call("POST", "/api/v1/reload", ""); code != 200 || !strings.Contains(body, `"unchanged": 2`) {
		t.Errorf("reload after persisted changes: %d %s", code, body)
	}
}

func TestPersistFailureReported(t *testing.T) {
	h := startAdmin(t, `{"admin_persist": true, "backends": []}`)
	os.Remove(h.rt.path)
	code, body, _ := h.call("POST", "/api/v1/backends", `{"url": "http://127.0.0.1:9002"}`)
	if code != 500 || !strings.Contains(body, "the change is in force but could not be saved") {
		t.Errorf("%d %s", code, body)
	}
}

func TestReload(t *testing.T) {
	h := startAdmin(t, twoBackends)
	kept := h.pool.Snapshot().Lookup("big")
	kept.Acquire()
	kept.Release()
	os.WriteFile(h.rt.path, []byte(`{"backends": [{"url": "http://127.0.0.1:9002", "weight": 5, "id": "big"}, "http://127.0.0.1:9009"]}`), 0o600)
	code, body, _ := h.call("POST", "/api/v1/reload", "")
	if code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	var res ReloadResult
	json.Unmarshal([]byte(body), &res)
	if fmt.Sprint(res.Backends.Added, res.Backends.Removed, res.Backends.Updated) != "[127.0.0.1:9009] [127.0.0.1:9001] [big]" {
		t.Errorf("reload result: %s", body)
	}
	if b := h.pool.Snapshot().Lookup("big"); b != kept || b.Requests() != 1 || b.Weight() != 5 {
		t.Error("a kept backend lost its counters or was not re-weighted")
	}
	os.WriteFile(h.rt.path, []byte(`{"backends": ["ftp://nope"], "retries": 99}`), 0o600)
	code, body, _ = h.call("POST", "/api/v1/reload", "")
	if code != 400 || !strings.Contains(body, "reload refused, the configuration in force is unchanged: ") ||
		!strings.Contains(body, "backends[0].url: scheme") || !strings.Contains(body, "; ") || !strings.Contains(body, "retries: must be 0..10") {
		t.Errorf("invalid reload: %d %s", code, body)
	}
	if len(h.pool.Snapshot().All) != 2 {
		t.Error("an invalid file changed the backends")
	}
}

// TestDrainThenDelete follows the README's recipe: drain, wait for
// "drained", delete; the request in flight finishes.
func TestDrainThenDelete(t *testing.T) {
	slow, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{})
	defer slow.Close()
	h := startAdmin(t, fmt.Sprintf(`{"backends": [%q]}`, slow.URL()))
	b := h.pool.Snapshot().All[0]
	h.pool.ReportCheck(b, upstream.CheckResult{OK: true})

	// A request in flight, sent the way the proxy sends it.
	done := make(chan int)
	go func() {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(slow.URL() + "/delay/300ms")
		b.Acquire()
		err := b.Client.Do(req, resp)
		b.Release()
		if err != nil {
			done <- 0
			return
		}
		done <- resp.StatusCode()
	}()
	for slow.Requests() == 0 {
		select {
		case status := <-done:
			t.Fatalf("the request ended before it reached the backend: %d", status)
		case <-time.After(2 * time.Millisecond):
		}
	}
	if code, body, _ := h.call("PATCH", "/api/v1/backends/"+b.ID, `{"state": "drain"}`); code != 200 || !strings.Contains(body, `"drained": false`) {
		t.Fatalf("drain: %d %s", code, body)
	}
	if len(h.pool.Snapshot().Eligible) != 0 {
		t.Error("a draining backend is still eligible")
	}
	for !h.backend(b.ID).Drained {
		time.Sleep(10 * time.Millisecond)
	}
	if code, _, _ := h.call("DELETE", "/api/v1/backends/"+b.ID, ""); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if status := <-done; status != 200 {
		t.Errorf("the request in flight during drain got %d", status)
	}
}

func FuzzParsePatch(f *testing.F) {
	f.Add([]byte(`{"weight": 3}`))
	f.Add([]byte(`{"state": "drain", "weight": 0}`))
	f.Add([]byte(`{"weight": 1e3}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		w, s, err := parsePatch(body)
		if err != nil {
			return
		}
		if w == nil && s == nil {
			t.Fatal("accepted a patch that changes nothing")
		}
		if w != nil && (*w < 0 || *w > config.MaxWeight) {
			t.Fatalf("accepted weight %d", *w)
		}
	})
}

// TestChunkedBodies: bodies without Content-Length are held to the same
// limit, and a broken chunked body is refused, not half-read.
func TestChunkedBodies(t *testing.T) {
	h := startAdmin(t, twoBackends)
	chunk := func(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }
	big := strings.Repeat("x", 40000)
	tests := []struct {
		name, body string
		status     int
		want       string
	}{
		{"small", chunk(`{"url": "http://127.0.0.1:9005",`) + chunk(` "id": "chunked"}`) + "0\r\n\r\n", 201, `"id": "chunked"`},
		{"too large", chunk(`{"url": "`+big) + chunk(big+`"}`) + "0\r\n\r\n", 413, `body larger than 65536 bytes`},
		{"bad chunk size", "zz\r\n{}\r\n0\r\n\r\n", 400, `malformed HTTP`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /api/v1/backends HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s", tt.body)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.want) {
				t.Errorf("%d %s; want %d with %q", resp.StatusCode, body, tt.status, tt.want)
			}
		})
	}
}

// TestConfigView: GET /api/v1/config shows every key of the file in
// force, tls and backend_tls included, with the pool's backends and the
// secrets redacted.
func TestConfigView(t *testing.T) {
	h := startAdmin(t, `{"port": 9100, "admin_token": "s3cret-token", "sticky": {"mode": "cookie", "cookie_secret": "0123456789abcdefXYZ"},
		"tls": {"port": 9443, "certificates": [{"cert_file": "/etc/fastlb/a.pem", "key_file": "/etc/fastlb/a-key.pem"}]},
		"backend_tls": {"ca_file": "/etc/fastlb/ca.pem"},
		"backends": ["http://127.0.0.1:9001"]}`)
	h.call("POST", "/api/v1/backends", `{"url": "http://127.0.0.1:9002", "weight": 2, "id": "added"}`, "Authorization", "Bearer s3cret-token")
	_, body, _ := h.call("GET", "/api/v1/config", "", "Authorization", "Bearer s3cret-token")
	var view map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &view); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	for _, k := range config.Keys {
		if _, ok := view[k.Name]; !ok {
			t.Errorf("the view lacks %q", k.Name)
		}
	}
	for key, want := range map[string]string{
		"tls":         `{"bind":"0.0.0.0","certificates":[{"cert_file":"/etc/fastlb/a.pem","key_file":"/etc/fastlb/a-key.pem"}],"http2":true,"min_version":"1.2","port":9443,"redirect_http":false}`,
		"backend_tls": `{"ca_file":"/etc/fastlb/ca.pem","insecure_skip_verify":false}`,
		"backends":    `["http://127.0.0.1:9001",{"url":"http://127.0.0.1:9002","weight":2,"id":"added"}]`,
		"admin_token": `"(redacted)"`,
	} {
		var compact bytes.Buffer
		json.Compact(&compact, view[key])
		if compact.String() != want {
			t.Errorf("%s: %s, want %s", key, compact.String(), want)
		}
	}
	if strings.Contains(body, "s3cret") || strings.Contains(body, "0123456789abcdefXYZ") {
		t.Errorf("a secret shows: %s", body)
	}
}
