package upstream

import (
	"io"
	"log/slog"
	"testing"

	"fastlb/config"
)

func testPool(t *testing.T, rise, fall int, weights ...int) (*Pool, []*Backend) {
	t.Helper()
	cfgs := make([]config.Backend, len(weights))
	for i, w := range weights {
		cfgs[i] = config.Backend{URL: "http://127.0.0.1:" + string(rune('1'+i)), Weight: w}
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
	p.RequestFailed(b, true, "refused")
	p.RequestFailed(b, true, "refused")
	p.RequestSucceeded(b) // breaks the run
	p.RequestFailed(b, true, "refused")
	p.RequestFailed(b, false, "timeout") // not a connection failure
	p.RequestFailed(b, true, "refused")
	if !b.Healthy() {
		t.Fatal("marked down before three connection failures in a row")
	}
	p.RequestFailed(b, true, "refused")
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
