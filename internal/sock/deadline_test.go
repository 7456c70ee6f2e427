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
	if got := d.Arm(at(100), slack); !got.Equal(at(110)) {
		t.Errorf("Arm(100ms) = %v after base, want 110ms", got.Sub(base))
	}
	for _, ms := range []int{100, 104, 110} {
		if !d.Covers(at(ms), slack) {
			t.Errorf("a deadline armed for 100ms does not cover %dms", ms)
		}
	}
	if d.Covers(at(111), slack) {
		t.Error("a deadline armed for 100ms covers 111ms: it would fire early")
	}
	if got := d.Arm(time.Time{}, slack); !got.IsZero() || !d.Covers(time.Time{}, slack) {
		t.Errorf("Arm(zero) = %v, want no deadline", got)
	}
	if got := Slack(10 * time.Second); got != 156250*time.Microsecond {
		t.Errorf("Slack(10s) = %v", got)
	}
}
