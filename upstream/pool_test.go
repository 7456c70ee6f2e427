package upstream

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"fastlb/config"
)

func testPool(t *testing.T, rise, fall int, weights ...int) (*Pool, []*Backend) {
	t.Helper()
	cfgs := make([]config.Backend, len(weights))
	for i, w := range weights {
		cfgs[i] = config.Backend{URL: fmt.Sprintf("http://127.0.0.1:%d", i+1), Weight: w}
		if err := config.ResolveBackend(&cfgs[i]); err != nil {
			t.Fatal(err)
		}
	}
	p := NewPool(cfgs, Options{Rise: rise, Fall: fall, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	return p, p.Snapshot().All
}

func ids(bs []*Backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

func TestFirstCheckSetsHealth(t *testing.T) {
	p, bs := testPool(t, 2, 3, 1, 1)
	if len(p.Snapshot().Eligible) != 0 {
		t.Fatal("backends eligible before any health check")
	}
	p.ReportCheck(bs[0], CheckResult{OK: true})
	p.ReportCheck(bs[1], CheckResult{OK: false, Err: "refused"})
	if got := ids(p.Snapshot().Eligible); len(got) != 1 || got[0] != bs[0].ID {
		t.Fatalf("eligible after first round = %v, want only %s", got, bs[0].ID)
	}
	if lc := bs[1].LastCheck(); lc == nil || lc.OK || lc.Err != "refused" {
		t.Errorf("last check not kept: %+v", lc)
	}
}

func TestRiseAndFall(t *testing.T) {
	p, bs := testPool(t, 2, 3, 1)
	b := bs[0]
	p.ReportCheck(b, CheckResult{OK: true})
	steps := []struct {
		ok      bool
		healthy bool
	}{
		{false, true}, {false, true}, {true, true}, // a success resets the fall count
		{false, true}, {false, true}, {false, false}, // the third failure in a row marks it down
		{true, false}, {false, false}, {true, false}, // a failure resets the rise count
		{true, true}, // the second success in a row marks it up
	}
	for i, s := range steps {
		p.ReportCheck(b, CheckResult{OK: s.ok})
		if b.Healthy() != s.healthy {
			t.Fatalf("step %d (ok=%v): healthy=%v, want %v", i, s.ok, b.Healthy(), s.healthy)
		}
		if inSnap := len(p.Snapshot().Eligible) == 1; inSnap != s.healthy {
			t.Fatalf("step %d: snapshot eligibility %v, want %v", i, inSnap, s.healthy)
		}
	}
}

func TestPassiveFailures(t *testing.T) {
	p, bs := testPool(t, 2, 3, 1)
	b := bs[0]
	p.ReportCheck(b, CheckResult{OK: true})
	p.RequestFailed(b, true, true, "refused")
	p.RequestFailed(b, true, true, "refused")
	p.Answered(b, 200) // breaks the run
	p.RequestFailed(b, true, true, "refused")
	p.RequestFailed(b, false, true, "timeout") // not a connection failure
	p.RequestFailed(b, true, true, "refused")
	if !b.Healthy() {
		t.Fatal("marked down before three connection failures in a row")
	}
	p.RequestFailed(b, true, true, "refused")
	if b.Healthy() || len(p.Snapshot().Eligible) != 0 {
		t.Fatal("not marked down after three connection failures in a row")
	}
	if b.Failures() != 6 {
		t.Errorf("failures = %d, want 6", b.Failures())
	}
}

func TestWeightZeroNotEligible(t *testing.T) {
	p, bs := testPool(t, 1, 1, 0, 2)
	for _, b := range bs {
		p.ReportCheck(b, CheckResult{OK: true})
	}
	if got := ids(p.Snapshot().Eligible); len(got) != 1 || got[0] != bs[1].ID {
		t.Fatalf("eligible = %v, want only the weighted backend", got)
	}
}

func TestWatch(t *testing.T) {
	p, bs := testPool(t, 1, 1, 1)
	var seen []int
	p.Watch(func(s *Snapshot) { seen = append(seen, len(s.Eligible)) })
	p.ReportCheck(bs[0], CheckResult{OK: true})
	p.ReportCheck(bs[0], CheckResult{OK: true}) // no change, no publication
	p.ReportCheck(bs[0], CheckResult{OK: false})
	if len(seen) != 3 || seen[0] != 0 || seen[1] != 1 || seen[2] != 0 {
		t.Errorf("watcher saw %v, want [0 1 0]", seen)
	}
}

func TestAddRemove(t *testing.T) {
	p, _ := testPool(t, 1, 1, 1)
	var published int
	cancel := p.Watch(func(*Snapshot) { published++ })
	b, err := p.Add(config.Backend{URL: "http://127.0.0.1:9", ID: "new", Weight: 2})
	if err != nil || b.ID != "new" || b.Weight() != 2 || b.Healthy() || b.Checked() {
		t.Fatalf("Add = %+v, %v; want an unchecked, down backend", b, err)
	}
	if got := ids(p.Snapshot().All); len(got) != 2 || got[1] != "new" {
		t.Fatalf("snapshot after Add: %v", got)
	}
	if _, err := p.Add(config.Backend{URL: "http://127.0.0.1:10", ID: "new"}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate Add: %v, want ErrExists", err)
	}
	if _, err := p.Add(config.Backend{URL: "ftp://x"}); err == nil || errors.Is(err, ErrExists) {
		t.Errorf("invalid Add: %v", err)
	}
	b.Acquire() // a request in flight
	if err := p.Remove("new"); err != nil {
		t.Fatal(err)
	}
	if p.Snapshot().Lookup("new") != nil {
		t.Fatal("removed backend still in the snapshot")
	}
	if err := p.Remove("new"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
		t.Fatal("Close returned while a removed backend still had a request in flight")
	case <-time.After(60 * time.Millisecond):
	}
	b.Release()
	<-done
	cancel()
	before := published
	p.Add(config.Backend{URL: "http://127.0.0.1:11"})
	if published != before {
		t.Error("a cancelled watcher was still called")
	}
	if published != 3 { // at Watch, Add, Remove
		t.Errorf("watcher called %d times, want 3", published)
	}
}

func TestWeightAndState(t *testing.T) {
	p, bs := testPool(t, 1, 1, 1, 1)
	for _, b := range bs {
		p.ReportCheck(b, CheckResult{OK: true})
	}
	id := bs[0].ID
	if _, err := p.SetWeight(id, 0); err != nil || len(p.Snapshot().Eligible) != 1 {
		t.Fatalf("weight 0: %v, eligible %v", err, ids(p.Snapshot().Eligible))
	}
	if _, err := p.SetWeight(id, 1001); err == nil {
		t.Error("weight 1001 accepted")
	}
	if _, err := p.SetWeight("nope", 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	p.SetWeight(id, 5)
	bs[0].Acquire()
	b, err := p.SetState(id, StateDrain)
	if err != nil || b.State() != StateDrain || len(p.Snapshot().Eligible) != 1 {
		t.Fatalf("drain: %v, eligible %v", err, ids(p.Snapshot().Eligible))
	}
	if b.Drained() {
		t.Error("drained with a request in flight")
	}
	b.Release()
	if !b.Drained() {
		t.Error("not drained after its last request")
	}
	p.SetState(id, StateMaint)
	if b.Drained() || len(p.Snapshot().Eligible) != 1 {
		t.Error("maint backend drained or eligible")
	}
	p.SetState(id, StateActive)
	if b.Checked() {
		t.Error("leaving maint must make the next check decide health directly")
	}
	p.ReportCheck(b, CheckResult{OK: true})
	if len(p.Snapshot().Eligible) != 2 {
		t.Errorf("after maint and a good check: eligible %v", ids(p.Snapshot().Eligible))
	}
}

func TestApply(t *testing.T) {
	p, bs := testPool(t, 1, 1, 1, 1, 1) // ids 127.0.0.1:1 .. :3
	for _, b := range bs {
		p.ReportCheck(b, CheckResult{OK: true})
		b.Acquire()
		b.Release()
	}
	cfg, err := config.Parse([]byte(`{"backends": [
		"http://127.0.0.1:1",
		{"url": "http://127.0.0.1:2", "weight": 4, "state": "drain"},
		{"url": "http://127.0.0.1:7", "id": "127.0.0.1:3"},
		"http://127.0.0.1:8"]}`))
	if err != nil {
		t.Fatal(err)
	}
	d := p.Apply(cfg.Backends, nil)
	if fmt.Sprint(d.Added) != "[127.0.0.1:8]" || fmt.Sprint(d.Updated) != "[127.0.0.1:2 127.0.0.1:3]" || d.Unchanged != 1 || len(d.Removed) != 0 {
		t.Errorf("diff = %+v", d)
	}
	all := p.Snapshot().All
	if got := ids(all); fmt.Sprint(got) != "[127.0.0.1:1 127.0.0.1:2 127.0.0.1:3 127.0.0.1:8]" {
		t.Fatalf("backends after Apply: %v", got)
	}
	if all[0] != bs[0] || all[0].Requests() != 1 || !all[0].Healthy() {
		t.Error("an unchanged backend lost its counters or health")
	}
	if all[1] != bs[1] || all[1].Weight() != 4 || all[1].State() != StateDrain {
		t.Error("a re-weighted backend was not updated in place")
	}
	if all[2] == bs[2] || all[2].Addr != "127.0.0.1:7" || all[2].Checked() {
		t.Error("a backend with a new address was not replaced by a new, unchecked one")
	}
	d = p.Apply(cfg.Backends[:1], nil)
	if fmt.Sprint(d.Removed) != "[127.0.0.1:2 127.0.0.1:3 127.0.0.1:8]" || d.Unchanged != 1 {
		t.Errorf("diff = %+v", d)
	}
	p.Close()
}

func TestMetricsOutput(t *testing.T) {
	p, bs := testPool(t, 1, 2, 3)
	b := bs[0]
	p.ReportCheck(b, CheckResult{OK: true})
	p.ReportCheck(b, CheckResult{OK: false})
	b.Observe(200, 3*time.Millisecond)
	b.Observe(200, 30*time.Millisecond)
	b.Observe(502, 20*time.Second)
	var sb strings.Builder
	p.WriteMetrics(&sb)
	out := sb.String()
	for _, want := range []string{
		`fastlb_requests_total{pool="default",backend="127.0.0.1:1",code="200"} 2`,
		`fastlb_requests_total{pool="default",backend="127.0.0.1:1",code="502"} 1`,
		`fastlb_request_duration_seconds_bucket{pool="default",backend="127.0.0.1:1",le="0.0005"} 0`,
		`fastlb_request_duration_seconds_bucket{pool="default",backend="127.0.0.1:1",le="0.0025"} 0`,
		`fastlb_request_duration_seconds_bucket{pool="default",backend="127.0.0.1:1",le="0.005"} 1`,
		`fastlb_request_duration_seconds_bucket{pool="default",backend="127.0.0.1:1",le="0.05"} 2`,
		`fastlb_request_duration_seconds_bucket{pool="default",backend="127.0.0.1:1",le="10"} 2`,
		`fastlb_request_duration_seconds_bucket{pool="default",backend="127.0.0.1:1",le="+Inf"} 3`,
		`fastlb_request_duration_seconds_sum{pool="default",backend="127.0.0.1:1"} 20.033`,
		`fastlb_request_duration_seconds_count{pool="default",backend="127.0.0.1:1"} 3`,
		`fastlb_backend_up{pool="default",backend="127.0.0.1:1"} 1`,
		`fastlb_backend_active_requests{pool="default",backend="127.0.0.1:1"} 0`,
		`fastlb_backend_weight{pool="default",backend="127.0.0.1:1"} 3`,
		`fastlb_health_checks_total{pool="default",backend="127.0.0.1:1",result="ok"} 1`,
		`fastlb_health_checks_total{pool="default",backend="127.0.0.1:1",result="fail"} 1`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("missing %s in:\n%s", want, out)
		}
	}
}

// TestEjection: consecutive 5xx eject for base_ejection_time times the
// count of ejections (at most 10), a backend found down and up again by
// health checks is back at once, ramping up, and an answer below 500
// breaks a run.
func TestEjection(t *testing.T) {
	p, bs := testPool(t, 1, 1, 1, 1, 1)
	p.SetOutlier(config.Outlier{Consecutive5xx: 2, ConsecutiveGatewayErrors: 2, Interval: time.Hour, BaseEjectionTime: time.Hour, MaxEjectionPercent: 100})
	p.SetSlowStart(time.Minute)
	for _, b := range bs {
		p.ReportCheck(b, CheckResult{OK: true})
	}
	b := bs[0]
	p.Answered(b, 500)
	p.Answered(b, 404) // breaks the run
	p.Answered(b, 500)
	if e, _ := b.Ejected(); e {
		t.Fatal("ejected after a broken run")
	}
	for i := 1; i <= 12; i++ {
		p.Answered(b, 503)
		p.Answered(b, 502)
		e, until := b.Ejected()
		want := time.Duration(min(i, 10)) * time.Hour
		if left := time.Until(until); !e || left > want || left < want-time.Minute {
			t.Fatalf("ejection %d: ejected %v for %v, want %v", i, e, left, want)
		}
		if slices.Contains(p.Snapshot().Eligible, b) {
			t.Fatal("an ejected backend is eligible")
		}
		p.unEject(b, "test")
	}
	p.RequestFailed(b, false, true, "timeout")
	p.RequestFailed(b, false, true, "timeout")
	if e, _ := b.Ejected(); !e {
		t.Fatal("not ejected after consecutive gateway errors")
	}
	p.ReportCheck(b, CheckResult{OK: false})
	p.ReportCheck(b, CheckResult{OK: true})
	if e, _ := b.Ejected(); e || !slices.Contains(p.Snapshot().Eligible, b) {
		t.Fatal("a backend up again after being down stays ejected")
	}
	if w := b.EffectiveWeight(); w > 0.1 {
		t.Errorf("effective weight %.3f just back, want it ramping", w)
	}
}
