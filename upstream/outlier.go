package upstream

import (
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"fastlb/config"
)

// Outlier detection: a backend that answers real traffic with 5xx, or
// fails it (refused, reset, malformed answer, timeout), several times in a
// row is ejected, taking no new requests until its ejection ends, while
// active health checks, which see only that it accepts connections or
// answers one path, would keep it in. Slow start: a backend that comes
// back takes a growing share of its weight's requests, so that a cold
// cache or a JIT warming up is not handed its full load at once.

// Ejection reasons, as fastlb_outlier_ejections_total names them.
const (
	Reason5xx     = "consecutive_5xx"
	ReasonGateway = "consecutive_gateway_errors"
)

// maxEjectionFactor caps the multiple of base_ejection_time an ejection
// lasts.
const maxEjectionFactor = 10

// outlierState is a backend's part of outlier detection and slow start.
type outlierState struct {
	consec5xx     atomic.Int32 // 5xx answers in a row
	consecGateway atomic.Int32 // failed attempts in a row
	ejected       atomic.Bool
	ejectedUntil  atomic.Int64 // Unix nanoseconds; meaningful while ejected
	// Written under the Pool's lock.
	ejections   int       // ejections counted towards the next one's length
	lastEjected time.Time // when the last ejection ended, for the decay by interval
	timer       *time.Timer
	byReason    [2]atomic.Uint64 // ejections by reason: 5xx, gateway

	// Slow start: rampFrom is when the ramp began (Unix nanoseconds, 0:
	// none), rampFor how long it lasts.
	rampFrom atomic.Int64
	rampFor  atomic.Int64
	// rampOnUp makes the backend's first health verdict start a ramp: it
	// was added, or left maint, after the process started.
	rampOnUp atomic.Bool
}

// RampFull is the unit of RampShare: a backend at its full weight.
const RampFull = rampScale

const rampScale = 1024

// rampMin is the smallest share a ramping backend takes, so that it is
// tried at all in its first moments.
const rampMin = rampScale / 100

// RampShare is the share of its weight's requests the backend takes now,
// in 1/1024ths: 1024 outside a slow start, else growing linearly from
// about 1% to 1024 over slow_start.
func (b *Backend) RampShare() int64 {
	from := b.out.rampFrom.Load()
	if from == 0 {
		return rampScale
	}
	return b.rampShare(from)
}

// rampShare is RampShare during a ramp that began at from: apart, so that
// RampShare's common case is inlined into the policies' loops.
func (b *Backend) rampShare(from int64) int64 {
	d := b.out.rampFor.Load()
	elapsed := time.Now().UnixNano() - from
	if elapsed >= d || d <= 0 {
		b.out.rampFrom.CompareAndSwap(from, 0)
		return rampScale
	}
	return max(rampMin, elapsed*rampScale/d)
}

// Admit decides whether a pick may take the backend: always outside a
// slow start, else with the probability of its RampShare. A policy that
// finds no backend admitted takes one that was refused rather than none.
// It takes no lock and allocates nothing.
func (b *Backend) Admit() bool {
	return b.out.rampFrom.Load() == 0 || b.admitRamping()
}

// admitRamping is Admit during a ramp: apart, so that Admit's common case
// is inlined into the policies' loops.
func (b *Backend) admitRamping() bool { return Admit(b.RampShare()) }

// Admit is Backend.Admit for a backend whose RampShare is share, for a
// policy that needs the share as well (it checks share < RampFull first,
// inline).
func Admit(share int64) bool { return share >= rampScale || int64(rand.Uint64N(rampScale)) < share }

// EffectiveWeight is the weight the backend is balanced with now: its
// weight times its RampShare.
func (b *Backend) EffectiveWeight() float64 {
	return float64(b.Weight()) * float64(b.RampShare()) / rampScale
}

// Ejected reports whether the backend is ejected, and until when.
func (b *Backend) Ejected() (bool, time.Time) {
	if !b.out.ejected.Load() {
		return false, time.Time{}
	}
	return true, time.Unix(0, b.out.ejectedUntil.Load())
}

// startRamp begins b's slow start, when the pool has one.
func (p *Pool) startRamp(b *Backend) {
	b.out.rampOnUp.Store(false)
	d := p.slowStart.Load()
	if d <= 0 {
		b.out.rampFrom.Store(0)
		return
	}
	b.out.rampFor.Store(d)
	b.out.rampFrom.Store(time.Now().UnixNano())
	p.logger.Info("backend ramping up", "backend", b.ID, "slow_start", time.Duration(d).String())
}

// SetSlowStart changes slow_start for the ramps that begin from now on.
func (p *Pool) SetSlowStart(d time.Duration) { p.slowStart.Store(int64(d)) }

// SetOutlier changes the outlier detection settings; they apply from the
// next answer on.
func (p *Pool) SetOutlier(o config.Outlier) { p.outlier.Store(&o) }

// Answered records that b answered an attempt with status: a run of
// connection failures and of gateway errors ends, and a 5xx adds to the
// run of 5xx that may eject it. Outside those runs it only loads.
func (p *Pool) Answered(b *Backend, status int) {
	if b.connFails.Load() != 0 {
		b.connFails.Store(0)
	}
	if b.out.consecGateway.Load() != 0 {
		b.out.consecGateway.Store(0)
	}
	if status < 500 {
		if b.out.consec5xx.Load() != 0 {
			b.out.consec5xx.Store(0)
		}
		return
	}
	o := p.outlier.Load()
	if n := b.out.consec5xx.Add(1); o.Consecutive5xx > 0 && int(n) >= o.Consecutive5xx {
		p.eject(b, Reason5xx, int(n))
	}
}

// gatewayError records a failed attempt at b for outlier detection.
func (p *Pool) gatewayError(b *Backend) {
	o := p.outlier.Load()
	if n := b.out.consecGateway.Add(1); o.ConsecutiveGatewayErrors > 0 && int(n) >= o.ConsecutiveGatewayErrors {
		p.eject(b, ReasonGateway, int(n))
	}
}

// eject takes b out of rotation for base_ejection_time times its count of
// ejections (at most maxEjectionFactor), unless max_ejection_percent of the
// pool is ejected already or b is the last backend that can take requests.
func (p *Pool) eject(b *Backend, reason string, run int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.out.ejected.Load() || b.removed.Load() {
		return
	}
	o := p.outlier.Load()
	snap := p.snap.Load()
	ejected := 0
	for _, c := range snap.All {
		if c.out.ejected.Load() {
			ejected++
		}
	}
	// A run that does not eject starts again from nothing: the next
	// attempt at an ejection comes after another whole run, not with every
	// failure (each takes this lock).
	b.out.consec5xx.Store(0)
	b.out.consecGateway.Store(0)
	allowed := max(1, len(snap.All)*o.MaxEjectionPercent/100)
	if ejected >= allowed {
		p.logger.Debug("backend not ejected: max_ejection_percent reached", "backend", b.ID, "reason", reason, "ejected", ejected)
		return
	}
	if len(snap.Eligible) == 1 && snap.Eligible[0] == b {
		p.logger.Debug("backend not ejected: it is the last that can take requests", "backend", b.ID, "reason", reason)
		return
	}
	now := time.Now()
	if n := int(now.Sub(b.out.lastEjected) / o.Interval); !b.out.lastEjected.IsZero() && n > 0 {
		b.out.ejections = max(0, b.out.ejections-n)
	}
	b.out.ejections = min(b.out.ejections+1, maxEjectionFactor)
	d := o.BaseEjectionTime * time.Duration(b.out.ejections)
	b.out.ejectedUntil.Store(now.Add(d).UnixNano())
	b.out.ejected.Store(true)
	if reason == Reason5xx {
		b.out.byReason[0].Add(1)
	} else {
		b.out.byReason[1].Add(1)
	}
	b.out.rampFrom.Store(0)
	b.out.timer = time.AfterFunc(d, func() { p.unEject(b, "ejection over") })
	p.publishLocked(snap.All)
	p.logger.Warn("backend ejected", "backend", b.ID, "reason", reason, "in_a_row", run, "for", d.String(),
		"ejections", strconv.Itoa(b.out.ejections))
}

// unEject ends b's ejection, and starts its slow start.
func (p *Pool) unEject(b *Backend, cause string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !b.out.ejected.Load() {
		return
	}
	if b.out.timer != nil {
		b.out.timer.Stop()
		b.out.timer = nil
	}
	b.out.ejected.Store(false)
	b.out.lastEjected = time.Now()
	if b.removed.Load() {
		return
	}
	p.startRamp(b)
	p.publishLocked(p.snap.Load().All)
	p.logger.Info("backend back from ejection", "backend", b.ID, "cause", cause)
}
