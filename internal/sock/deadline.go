package sock

import "time"

// A LazyDeadline is one deadline of a connection, its read or its write
// deadline, armed so that it need not be armed again for every request.
// fastlb sets a deadline before each request's reads and writes, the time
// then plus a timeout; arming it costs the runtime two clock readings and a
// timer update each time. Instead the deadline is armed up to a slack later
// than asked, and a later deadline that the armed one still covers (it is
// no earlier and at most slack later) leaves it as it is. So a timeout
// fires up to its slack late, never early; under load a connection's timer
// is armed once or twice per slack instead of several times per request.
//
// The zero value is a connection without a deadline. The slack is for
// deadlines in the future: a time already past that an armed deadline
// covers would fire late, not at once.
type LazyDeadline struct {
	armed time.Time
}

// Slack is the slack fastlb allows a deadline timeout long: 1/64 of it,
// 156 ms of a 10 s timeout.
func Slack(timeout time.Duration) time.Duration { return timeout / 64 }

// Covers reports whether the armed deadline stands for t, given slack.
func (d *LazyDeadline) Covers(t time.Time, slack time.Duration) bool {
	if t.IsZero() || d.armed.IsZero() {
		return t.IsZero() && d.armed.IsZero()
	}
	return !d.armed.Before(t) && d.armed.Sub(t) <= slack
}

// Arm records and returns the deadline to arm for t, or no deadline for
// the zero t: more than half the slack and at most slack after t, on a
// grid of half the slack, so that the deadlines of connections that wait
// alike come at the same instants: the runtime, idle, then wakes once for
// all those whose deadline came rather than once for each.
func (d *LazyDeadline) Arm(t time.Time, slack time.Duration) time.Time {
	if !t.IsZero() {
		t = t.Add(slack)
		if g := int64(slack / 2); g > 0 {
			off := t.UnixNano() % g
			if off < 0 {
				off += g
			}
			t = t.Add(-time.Duration(off)) // Add, unlike Truncate, keeps the monotonic reading
		}
	}
	d.armed = t
	return t
}

// Forget makes the next deadline be armed whatever it is: the connection's
// deadline is no longer known (setting it failed).
func (d *LazyDeadline) Forget() { d.armed = time.Unix(0, 0) }
