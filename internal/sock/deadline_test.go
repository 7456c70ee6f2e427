package sock

import (
	"testing"
	"time"
)

func TestLazyDeadline(t *testing.T) {
	base := time.Now()
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	const slack = 10 * time.Millisecond
	tests := []struct {
		name   string
		armed  time.Time // zero: none armed
		forget bool
		t      time.Time
		covers bool
	}{
		{"nothing armed, none asked", time.Time{}, false, time.Time{}, true},
		{"nothing armed, one asked", time.Time{}, false, at(100), false},
		{"armed, none asked", at(100), false, time.Time{}, false},
		{"armed at the time asked", at(100), false, at(100), true},
		{"armed within slack after it", at(105), false, at(100), true},
		{"armed exactly slack after it", at(110), false, at(100), true},
		{"armed more than slack after it", at(111), false, at(100), false},
		{"armed before it: would fire early", at(99), false, at(100), false},
		{"forgotten", at(100), true, at(100), false},
		{"forgotten, none asked", at(100), true, time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d LazyDeadline
			d.armed = tt.armed
			if tt.forget {
				d.Forget()
			}
			if got := d.Covers(tt.t, slack); got != tt.covers {
				t.Errorf("Covers = %v, want %v", got, tt.covers)
			}
		})
	}

	var d LazyDeadline
	// Each deadline is armed more than half the slack and at most slack
	// late, on the grid, and covers the time asked and itself, no later;
	// every time asked for in the half slack that ends half a slack before
	// a grid point is armed at that point.
	for i := range 100 {
		asked := at(100).Add(time.Duration(i) * slack / 37)
		x := d.Arm(asked, slack)
		if off := x.Sub(asked); off <= slack/2 || off > slack || x.UnixNano()%int64(slack/2) != 0 {
			t.Fatalf("Arm(%v) = %v after it, on the grid: %v", asked, off, x.UnixNano()%int64(slack/2) == 0)
		}
		if !d.Covers(asked, slack) || !d.Covers(x, slack) || d.Covers(x.Add(time.Nanosecond), slack) {
			t.Fatalf("the deadline armed for %v does not cover it and itself only", asked)
		}
		for _, other := range []time.Time{x.Add(-slack), x.Add(-slack/2 - 1)} {
			if y := d.Arm(other, slack); !y.Equal(x) {
				t.Fatalf("Arm(%v) = %v, want %v as for %v", other, y, x, asked)
			}
		}
	}
	if d.Arm(time.Unix(1, 0), 0) != time.Unix(1, 0) {
		t.Error("Arm with no slack moved the deadline")
	}
	if got := d.Arm(time.Time{}, slack); !got.IsZero() || !d.Covers(time.Time{}, slack) {
		t.Errorf("Arm(zero) = %v, want no deadline", got)
	}
	if got := Slack(10 * time.Second); got != 156250*time.Microsecond {
		t.Errorf("Slack(10s) = %v", got)
	}
}
