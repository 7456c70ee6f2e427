package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"fastlb/cluster/etcdtest"
	"fastlb/config"
)

// recorder is an Applier that keeps what it was given.
type recorder struct {
	mu      sync.Mutex
	pools   map[string][]config.Backend
	cookie  []byte
	tickets [][32]byte
}

func (r *recorder) ApplyBackends(pool string, bs []config.Backend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pools == nil {
		r.pools = map[string][]config.Backend{}
	}
	r.pools[pool] = bs
}

func (r *recorder) SetSecrets(c []byte, t [][32]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cookie, r.tickets = c, t
}

func (r *recorder) ids(pool string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := ""
	for _, b := range r.pools[pool] {
		s += b.ID + " "
	}
	return s
}

// node starts a Node named name whose file has the given backends for the
// default pool.
func node(t *testing.T, etcd, name string, backends ...string) (*Node, *recorder) {
	return nodeTB(t, etcd, name, backends...)
}

func nodeTB(t testing.TB, etcd, name string, backends ...string) (*Node, *recorder) {
	t.Helper()
	js := `{"backends": [`
	for i, b := range backends {
		if i > 0 {
			js += ","
		}
		js += fmt.Sprintf("%q", b)
	}
	js += fmt.Sprintf(`], "pools": {"api": {"backends": []}}, "cluster": {"name": %q, "cache_file": %q, "etcd": {"endpoints": [%q], "dial_timeout": "1s"}}}`,
		name, filepath.Join(t.TempDir(), "cache.json"), etcd)
	cfg, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	n, err := Start(Options{Config: cfg.Cluster, Applier: r, Pools: cfg.AllPools(), Version: "test", Address: name,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n, r
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Two instances starting together: one seeds, both serve its backends and
// share its secrets; a change on one is applied on both.
func TestSeedOnceAndShare(t *testing.T) {
	etcd := etcdtest.Start(t)
	var a, b *Node
	var ra, rb *recorder
	var wg sync.WaitGroup
	wg.Go(func() { a, ra = node(t, etcd.URL, "a", "http://10.0.0.1:80") })
	wg.Go(func() { b, rb = node(t, etcd.URL, "b", "http://10.0.0.2:80") })
	wg.Wait()
	if ra.ids("default") != rb.ids("default") || (ra.ids("default") != "10.0.0.1:80 " && ra.ids("default") != "10.0.0.2:80 ") {
		t.Fatalf("a serves %q, b %q: want the same, seeded once", ra.ids("default"), rb.ids("default"))
	}
	if len(ra.cookie) != 32 || string(ra.cookie) != string(rb.cookie) || len(ra.tickets) != 1 || ra.tickets[0] != rb.tickets[0] {
		t.Fatal("secrets not shared")
	}
	rev, err := a.Add("api", config.Backend{URL: "http://10.0.1.1:80", ID: "x", Weight: 1, State: "active"})
	if err != nil {
		t.Fatal(err)
	}
	if !a.WaitApplied(rev, time.Second) || !b.WaitApplied(rev, time.Second) {
		t.Fatal("the change was not applied within 1 s")
	}
	if ra.ids("api") != "x " || rb.ids("api") != "x " {
		t.Errorf("api: %q %q", ra.ids("api"), rb.ids("api"))
	}
	if _, err := b.Add("api", config.Backend{URL: "http://10.0.1.2:80", ID: "x"}); err == nil {
		t.Error("a second backend x was added")
	}
	w := 5
	if _, err := b.Update("api", "nope", &w, nil); err == nil {
		t.Error("an unknown backend was updated")
	}
	if _, err := b.Remove("nope", "x"); err != nil {
		t.Logf("remove from an unknown pool: %v", err)
	}
	st := a.Status()
	if !st.Connected || len(st.Members) == 0 {
		t.Errorf("status %+v", st)
	}
}

// Simultaneous adds of one id: one commits, the others find it there.
func TestConcurrentAdds(t *testing.T) {
	etcd := etcdtest.Start(t)
	var nodes []*Node
	for _, name := range []string{"a", "b", "c"} {
		n, _ := node(t, etcd.URL, name)
		nodes = append(nodes, n)
	}
	errs := make(chan error, 3)
	for _, n := range nodes {
		go func() {
			_, err := n.Add("api", config.Backend{URL: "http://10.0.1.1:80", ID: "same", Weight: 1})
			errs <- err
		}()
	}
	ok := 0
	for range 3 {
		if err := <-errs; err == nil {
			ok++
		} else if !errors.Is(err, ErrExists) {
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d adds of one id succeeded", ok)
	}
}

// A watch that fell behind a compaction reads the state again.
func TestCompactedWatchRecovers(t *testing.T) {
	etcd := etcdtest.Start(t)
	a, ra := node(t, etcd.URL, "a")
	old := a.Applied()
	var rev int64
	for i := range 20 {
		var err error
		if rev, err = a.Add("api", config.Backend{URL: fmt.Sprintf("http://10.0.2.%d:80", i), ID: fmt.Sprint("b", i), Weight: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.cli.Compact(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	if next := a.watch(t.Context(), old); next != 0 {
		t.Fatalf("a watch from a compacted revision went on from %d", next)
	}
	got, err := a.sync(t.Context())
	if err != nil || got < rev || len(ra.pools["api"]) != 20 {
		t.Errorf("after the resync: revision %d (want %d), %d backends, %v", got, rev, len(ra.pools["api"]), err)
	}
}

// etcd down: changes are refused as unavailable, the state stays; an
// instance started meanwhile serves its cache; etcd back: all converge.
func TestEtcdDown(t *testing.T) {
	etcd := etcdtest.Start(t)
	a, ra := node(t, etcd.URL, "a", "http://10.0.0.1:80")
	rev, err := a.Add("api", config.Backend{URL: "http://10.0.1.1:80", ID: "x", Weight: 1})
	if err != nil || !a.WaitApplied(rev, time.Second) {
		t.Fatal(err)
	}
	waitFor(t, "the cache to be written", 2*time.Second, func() bool {
		data, err := os.ReadFile(a.cfg.CacheFile)
		return err == nil && len(data) > 0 && strings.Contains(string(data), `"x"`)
	})
	etcd.Stop()
	waitFor(t, "the instance to see etcd gone", 10*time.Second, func() bool { return !a.Connected() })
	if _, err := a.Add("api", config.Backend{URL: "http://10.0.1.2:80", ID: "y", Weight: 1}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("a change with etcd down: %v", err)
	}
	if ra.ids("api") != "x " {
		t.Errorf("the state in force changed: %q", ra.ids("api"))
	}
	// A new instance with a's cache and a file of other backends.
	js := fmt.Sprintf(`{"backends": ["http://10.9.9.9:80"], "pools": {"api": {}}, "cluster": {"name": "c", "cache_file": %q, "etcd": {"endpoints": [%q], "dial_timeout": "300ms"}}}`,
		a.cfg.CacheFile, etcd.URL)
	cfg, _ := config.Parse([]byte(js))
	rc := &recorder{}
	c, err := Start(Options{Config: cfg.Cluster, Applier: rc, Pools: cfg.AllPools(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if rc.ids("api") != "x " || rc.ids("default") != "10.0.0.1:80 " || string(rc.cookie) != string(ra.cookie) {
		t.Errorf("started without etcd: api %q default %q", rc.ids("api"), rc.ids("default"))
	}
	etcd.Restart()
	waitFor(t, "both to reconnect", 15*time.Second, func() bool { return a.Connected() && c.Connected() })
	rev, err = c.Add("api", config.Backend{URL: "http://10.0.1.3:80", ID: "z", Weight: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !a.WaitApplied(rev, time.Second) || ra.ids("api") != "x z " {
		t.Errorf("after etcd came back: %q", ra.ids("api"))
	}
}

// BenchmarkApply makes changes on one of three instances, one after
// another, and reports how long each took from the call until the two
// others had it in force (p50, p99, max), and the etcd transactions per
// change (all instances' background reads and lease renewals included).
func BenchmarkApply(b *testing.B) {
	etcd := etcdtest.Start(b)
	var nodes []*Node
	for _, name := range []string{"a", "b", "c"} {
		n, _ := nodeTB(b, etcd.URL, name)
		nodes = append(nodes, n)
	}
	before := etcdCalls(b, etcd.URL)
	var took []time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		var rev int64
		var err error
		if i%2 == 0 {
			rev, err = nodes[0].Add("api", config.Backend{URL: "http://10.0.3.1:80", ID: "churn", Weight: 1})
		} else {
			rev, err = nodes[0].Remove("api", "churn")
		}
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range nodes[1:] {
			if !n.WaitApplied(rev, 5*time.Second) {
				b.Fatal("not applied within 5 s")
			}
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	after := etcdCalls(b, etcd.URL)
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(after["Txn"]-before["Txn"])/float64(b.N), "txn/change")
	b.ReportMetric(float64(after["Range"]-before["Range"])/float64(b.N), "range/change")
}

// etcdCalls reads the etcd server's count of handled gRPC calls by method.
func etcdCalls(tb testing.TB, base string) map[string]float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if !strings.HasPrefix(line, "grpc_server_handled_total{") || !strings.Contains(line, `grpc_service="etcdserverpb.KV"`) {
			continue
		}
		i := strings.Index(line, `grpc_method="`)
		j := strings.LastIndexByte(line, ' ')
		if i < 0 || j < 0 {
			continue
		}
		method := line[i+len(`grpc_method="`):]
		method = method[:strings.IndexByte(method, '"')]
		var v float64
		fmt.Sscan(line[j+1:], &v)
		out[method] += v
	}
	return out
}
