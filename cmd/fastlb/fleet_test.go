package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"fastlb/cluster/etcdtest"
	"fastlb/testbackends"
)

// fleet is three fastlb binaries sharing one real etcd.
type fleet struct {
	etcd  *etcdtest.Server
	procs []*process
}

func startFleet(t *testing.T, extra string, backends ...*testbackends.Server) *fleet {
	t.Helper()
	f := &fleet{etcd: etcdtest.Start(t)}
	p := newPKI(t)
	cert, key := p.issue(t, "fleet", "fleet.test", "127.0.0.1")
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			name := fmt.Sprint("lb-", i+1)
			tlsPort := freePort(t)
			js := fmt.Sprintf(`, "cluster": {"name": %q, "cache_file": %q, "etcd": {"endpoints": [%q], "dial_timeout": "1s"}},
			  "tls": {"port": %d, "bind": "127.0.0.1", "certificates": [{"cert_file": %q, "key_file": %q}]}%s`,
				name, filepath.Join(t.TempDir(), "cache.json"), f.etcd.URL, tlsPort, cert, key, extra)
			proc := startBinary(t, js, backends...)
			proc.tlsAddr = fmt.Sprintf("127.0.0.1:%d", tlsPort)
			mu.Lock()
			f.procs = append(f.procs, proc)
			mu.Unlock()
		})
	}
	wg.Wait()
	return f
}

func (f *fleet) admin(t *testing.T, i int, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+f.procs[i].adminAddr+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitAll waits until cond holds of every instance's GET path.
func (f *fleet) waitAll(t *testing.T, what, path string, d time.Duration, cond func(string) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for i := range f.procs {
		for {
			if _, body := f.admin(t, i, "GET", path, ""); cond(body) {
				break
			}
			if time.Since(start) > d {
				t.Fatalf("%s: not on instance %d within %v", what, i+1, d)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return time.Since(start)
}

func TestFleet(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	b, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "b"})
	defer b.Close()
	f := startFleet(t, `, "sticky": {"mode": "cookie"}`, a)

	seeded := 0
	for _, p := range f.procs {
		seeded += strings.Count(p.Logs(), "cluster store seeded")
	}
	if seeded != 1 {
		t.Errorf("the store was seeded %d times", seeded)
	}

	// A POST on one instance is on all three within 1 s; PATCH and DELETE.
	code, body := f.admin(t, 0, "POST", "/api/v1/backends", fmt.Sprintf(`{"url": %q, "id": "b"}`, b.URL()))
	if code != 201 || !strings.Contains(body, `"id": "b"`) {
		t.Fatalf("POST: %d %s", code, body)
	}
	took := f.waitAll(t, "the added backend", "/api/v1/backends/b", time.Second, func(s string) bool { return strings.Contains(s, `"id": "b"`) })
	t.Logf("added on all three in %v", took)
	if code, body := f.admin(t, 1, "PATCH", "/api/v1/backends/b", `{"weight": 7}`); code != 200 || !strings.Contains(body, `"weight": 7`) {
		t.Fatalf("PATCH: %d %s", code, body)
	}
	f.waitAll(t, "the new weight", "/api/v1/backends/b", time.Second, func(s string) bool { return strings.Contains(s, `"weight": 7`) })
	if code, body := f.admin(t, 2, "DELETE", "/api/v1/backends/b", ""); code != 204 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	f.waitAll(t, "the removal", "/api/v1/backends", time.Second, func(s string) bool { return !strings.Contains(s, `"id": "b"`) })

	// Three simultaneous POSTs of one id: one 201, two 409.
	codes := make(chan int, 3)
	for i := range 3 {
		go func() {
			code, _ := f.admin(t, i, "POST", "/api/v1/backends", fmt.Sprintf(`{"url": %q, "id": "c"}`, b.URL()))
			codes <- code
		}()
	}
	var got []int
	for range 3 {
		got = append(got, <-codes)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{201, 409, 409}) {
		t.Errorf("simultaneous POSTs of one id: %v", got)
	}
	f.waitAll(t, "c", "/api/v1/backends/c", time.Second, func(s string) bool { return strings.Contains(s, `"healthy": true`) })

	// A sticky cookie set by one instance sticks on the others.
	resp, err := http.Get("http://" + f.procs[0].addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cookie, owner := resp.Header.Get("Set-Cookie"), resp.Header.Get("X-Backend")
	if cookie == "" {
		t.Fatal("no sticky cookie")
	}
	for i := 1; i < 3; i++ {
		for range 5 {
			req, _ := http.NewRequest("GET", "http://"+f.procs[i].addr+"/", nil)
			req.Header.Set("Cookie", strings.Split(cookie, ";")[0])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.Header.Get("X-Backend") != owner || resp.Header.Get("Set-Cookie") != "" {
				t.Fatalf("instance %d: backend %s (cookie's %s), Set-Cookie %q", i+1, resp.Header.Get("X-Backend"), owner, resp.Header.Get("Set-Cookie"))
			}
		}
	}

	// A TLS 1.2 session made with one instance resumes on another.
	cache := tls.NewLRUClientSessionCache(8)
	cfg := &tls.Config{ServerName: "fleet.test", InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, ClientSessionCache: cache}
	for i, p := range f.procs {
		c, err := tls.Dial("tcp", p.tlsAddr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		resumed := c.ConnectionState().DidResume
		c.Close()
		if i > 0 && !resumed {
			t.Errorf("the TLS session did not resume on instance %d", i+1)
		}
	}

	// The members, each with the revision it applied.
	_, st := f.admin(t, 0, "GET", "/api/v1/cluster", "")
	for _, name := range []string{"lb-1", "lb-2", "lb-3"} {
		if !strings.Contains(st, `"name": "`+name+`"`) {
			t.Errorf("GET /api/v1/cluster lacks %s: %s", name, st)
		}
	}
	if !strings.Contains(st, `"connected": true`) {
		t.Errorf("not connected: %s", st)
	}

	// etcd stopped: every instance serves, writes get 503, the metric says 0.
	f.etcd.Stop()
	for i, p := range f.procs {
		waitLog(t, p, "cluster store unreachable")
		if code, _ := get(t, "http://"+p.addr+"/"); code != 200 {
			t.Errorf("instance %d with etcd down: %d", i+1, code)
		}
	}
	code, body = f.admin(t, 1, "POST", "/api/v1/backends", fmt.Sprintf(`{"url": %q, "id": "d"}`, b.URL()))
	if code != 503 || !strings.Contains(body, `"cluster store unavailable"`) {
		t.Errorf("a write with etcd down: %d %s", code, body)
	}
	if _, m := f.admin(t, 2, "GET", "/metrics", ""); !strings.Contains(m, "fastlb_cluster_connected 0") {
		t.Error("fastlb_cluster_connected is not 0")
	}
	// etcd back: writes work and every instance converges.
	f.etcd.Restart()
	f.waitAll(t, "reconnection", "/api/v1/cluster", 15*time.Second, func(s string) bool { return strings.Contains(s, `"connected": true`) })
	if code, body := f.admin(t, 1, "POST", "/api/v1/backends", fmt.Sprintf(`{"url": %q, "id": "d"}`, b.URL())); code != 201 {
		t.Fatalf("a write after etcd came back: %d %s", code, body)
	}
	f.waitAll(t, "d", "/api/v1/backends/d", time.Second, func(s string) bool { return strings.Contains(s, `"id": "d"`) })
	if _, m := f.admin(t, 0, "GET", "/metrics", ""); !strings.Contains(m, "fastlb_cluster_apply_seconds_bucket") {
		t.Error("no fastlb_cluster_apply_seconds")
	}
}
