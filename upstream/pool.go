package upstream

import (
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	"fastlb/config"
)

// Snapshot is an immutable view of the backend set. It is never modified
// after the Pool publishes it; hold it as long as needed.
type Snapshot struct {
	// All holds every backend in configuration order.
	All []*Backend
	// Eligible holds the backends that may take new requests: active,
	// healthy and of weight above 0, in configuration order.
	Eligible []*Backend
}

// Options configure a Pool.
type Options struct {
	Client ClientOptions
	Rise   int // consecutive good checks that bring a down backend up
	Fall   int // consecutive bad checks, or failed connections, that take an up backend down
	Logger *slog.Logger
}

// Pool owns the backends and publishes snapshots of them. All methods are
// safe for concurrent use. Changes are serialized by a mutex that the request
// path never takes.
type Pool struct {
	opts Options
	snap atomic.Pointer[Snapshot]

	mu       sync.Mutex // serializes changes and watcher calls
	watchers []func(*Snapshot)
}

// NewPool creates a pool holding one Backend per configured backend. The
// backends start down until their first health check reports.
func NewPool(backends []config.Backend, opts Options) *Pool {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Pool{opts: opts}
	all := make([]*Backend, len(backends))
	for i, c := range backends {
		all[i] = newBackend(c, opts.Client)
	}
	p.snap.Store(build(all))
	return p
}

// Snapshot returns the current snapshot. It takes no lock.
func (p *Pool) Snapshot() *Snapshot { return p.snap.Load() }

// Watch calls fn with the current snapshot now and with every later one, in
// order of publication. fn runs with the Pool's change lock held: it must be
// quick and must not call the Pool's mutating methods.
func (p *Pool) Watch(fn func(*Snapshot)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watchers = append(p.watchers, fn)
	fn(p.snap.Load())
}

// republish rebuilds the snapshot from the backends' current state.
func (p *Pool) republish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := build(p.snap.Load().All)
	p.snap.Store(s)
	for _, fn := range p.watchers {
		fn(s)
	}
}

func build(all []*Backend) *Snapshot {
	s := &Snapshot{All: all}
	for _, b := range all {
		if b.eligible() {
			s.Eligible = append(s.Eligible, b)
		}
	}
	return s
}

// setHealthy flips b's health and republishes when it really changed.
func (p *Pool) setHealthy(b *Backend, up bool, cause string) {
	if !b.healthy.CompareAndSwap(!up, up) {
		return
	}
	b.riseCount.Store(0)
	b.fallCount.Store(0)
	if up {
		p.opts.Logger.Info("backend up", "backend", b.ID, "cause", cause)
	} else {
		p.opts.Logger.Warn("backend down", "backend", b.ID, "cause", cause)
	}
	p.republish()
}

// ReportCheck records an active health check of b. The first report sets b's
// health directly; later ones flip it after Rise consecutive successes or Fall
// consecutive failures.
func (p *Pool) ReportCheck(b *Backend, r CheckResult) {
	b.lastCheck.Store(&r)
	cause := "health check failed: " + r.Err
	if r.OK {
		cause = "health check passed"
	}
	if b.checked.CompareAndSwap(false, true) {
		if r.OK {
			p.setHealthy(b, true, "first "+cause)
		} else {
			p.opts.Logger.Warn("backend down", "backend", b.ID, "cause", "first "+cause)
		}
		return
	}
	switch {
	case r.OK && b.Healthy():
		b.fallCount.Store(0)
	case r.OK:
		if int(b.riseCount.Add(1)) >= p.opts.Rise {
			p.setHealthy(b, true, cause)
		}
	case b.Healthy():
		if int(b.fallCount.Add(1)) >= p.opts.Fall {
			p.setHealthy(b, false, cause)
		}
	default:
		b.riseCount.Store(0)
	}
}

// RequestFailed records a failed request to b. A connection-level failure
// (refused, reset, closed before a response) counts towards marking b down at
// once: Fall of them in a row take it out of rotation without waiting for the
// next health check.
func (p *Pool) RequestFailed(b *Backend, connFailure bool, cause string) {
	b.failures.Add(1)
	if !connFailure {
		return
	}
	if int(b.connFails.Add(1)) >= p.opts.Fall && b.Healthy() {
		p.setHealthy(b, false, "connections failed "+strconv.Itoa(p.opts.Fall)+" times in a row: "+cause)
	}
}

// RequestSucceeded records that b answered; it ends a run of connection failures.
func (p *Pool) RequestSucceeded(b *Backend) {
	if b.connFails.Load() != 0 {
		b.connFails.Store(0)
	}
}

// Close closes the idle connections of every backend.
func (p *Pool) Close() {
	for _, b := range p.snap.Load().All {
		b.Client.CloseIdleConnections()
	}
}
