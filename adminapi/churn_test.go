package adminapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"fastlb/balancer"
	"fastlb/config"
	"fastlb/frontend"
	"fastlb/healthcheck"
	"fastlb/proxy"
	"fastlb/testbackends"
	"fastlb/upstream"
)

// TestChurnUnderLoad changes the backend set through the admin API hundreds
// of times while requests flow through the proxy: none may fail.
func TestChurnUnderLoad(t *testing.T) {
	var servers []*testbackends.Server
	for i := range 5 {
		s, err := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: fmt.Sprint("s", i)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		servers = append(servers, s)
	}
	js := fmt.Sprintf(`{"health_check_frequency": "50ms", "backends": [{"url": %q, "id": "stable"}]}`, servers[0].URL())
	path := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(path, []byte(js), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	pool := upstream.NewPool(cfg.Backends, upstream.Options{Rise: 1, Fall: 3, Logger: logger,
		Client: upstream.ClientOptions{ConnectTimeout: time.Second, BackendTimeout: 5 * time.Second, MaxHeaderBytes: 16 << 10}})
	policy := balancer.NewSmoothWRR()
	pool.Watch(policy.Update)
	checker := healthcheck.New(pool, &cfg.Pool, cfg.MaxHeaderBytes, nil)
	checker.RunOnce(context.Background())
	ctx, stop := context.WithCancel(context.Background())
	checked := make(chan struct{})
	go func() { checker.Run(ctx); close(checked) }()

	def := &proxy.Pool{Name: config.DefaultPool, Upstream: pool, Policy: policy, Retries: 2}
	p := proxy.New(proxy.Settings{Default: def, Pools: []*proxy.Pool{def}}, proxy.Options{Logger: logger})
	fopts := frontend.FromConfig(cfg)
	fopts.ErrorHandler, fopts.Logger = proxy.ErrorHandler, logger
	srv := frontend.New(p.ServeHTTP, fopts)
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	go srv.Serve(ln)

	rt := &runtime{path: path, cfg: cfg, pool: pool, pools: []*upstream.Pool{pool}}
	api := New(Options{Runtime: rt, ConfigPath: path, Metrics: metrics.NewSet(), Started: time.Now(), Logger: logger})
	adminSrv := api.NewServer()
	adminLn, _ := net.Listen("tcp4", "127.0.0.1:0")
	go adminSrv.Serve(adminLn)
	admin := &adminHarness{t: t, url: "http://" + adminLn.Addr().String(), rt: rt, pool: pool}
	defer func() {
		stop()
		<-checked
		srv.Shutdown()
		adminSrv.Shutdown()
		pool.Close()
	}()

	// One request dials the stable backend first, which starts the
	// pool's dialer: the churn must start no other.
	if resp, err := http.Get("http://" + ln.Addr().String() + "/"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	cleaners := dnsCleaners()
	load := testbackends.StartLoad("http://"+ln.Addr().String()+"/", 8)
	changes := 0
	must := func(method, path, body string, want int) {
		t.Helper()
		if code, out, _ := admin.call(method, path, body); code != want {
			t.Errorf("%s %s %s: %d %s", method, path, body, code, out)
		}
		changes++
	}
	for i := range 80 {
		id := fmt.Sprint("churn", i%4)
		url := servers[1+i%4].URL()
		must("POST", "/api/v1/backends", fmt.Sprintf(`{"url": %q, "id": %q, "weight": %d}`, url, id, 1+rand.IntN(5)), 201)
		must("PATCH", "/api/v1/backends/"+id, fmt.Sprintf(`{"weight": %d}`, rand.IntN(10)), 200)
		must("PATCH", "/api/v1/backends/stable", fmt.Sprintf(`{"weight": %d}`, 1+rand.IntN(10)), 200)
		time.Sleep(time.Millisecond)
		must("PATCH", "/api/v1/backends/"+id, `{"state": "drain"}`, 200)
		must("PATCH", "/api/v1/backends/"+id, `{"state": "active"}`, 200)
		must("PATCH", "/api/v1/backends/"+id, `{"state": "maint"}`, 200)
		must("DELETE", "/api/v1/backends/"+id, "", 204)
	}
	sent, failed, first := load.Stop()
	if changes < 500 || sent < 500 {
		t.Errorf("too little exercised: %d changes, %d requests", changes, sent)
	}
	if failed != 0 {
		t.Errorf("%d of %d requests failed during churn; first: %s", failed, sent, first)
	}
	served := 0
	for _, s := range servers[1:] {
		if s.Requests() > 0 {
			served++
		}
	}
	if served == 0 {
		t.Error("no request reached a churned backend: the test did not exercise changing sets")
	}
	t.Logf("%d admin changes, %d requests, %d failed", changes, sent, failed)
	// The backends share one dialer: each one of their own would keep its
	// DNS cache's cleaner running for a minute after its last dial.
	if n := dnsCleaners(); n > cleaners {
		t.Errorf("%d DNS cache cleaners running after churn, %d before", n, cleaners)
	}
	if got := fmt.Sprint(len(pool.Snapshot().All)); got != "1" || !strings.HasPrefix(pool.Snapshot().All[0].ID, "stable") {
		t.Errorf("backends left: %v", got)
	}
}

// dnsCleaners counts the goroutines cleaning a fasthttp dialer's DNS cache:
// one per dialer that has dialled in the last minute.
func dnsCleaners() int {
	var stacks strings.Builder
	pprof.Lookup("goroutine").WriteTo(&stacks, 2) //nolint:errcheck // a strings.Builder does not fail
	return strings.Count(stacks.String(), "(*TCPDialer).tcpAddrsClean(")
}
