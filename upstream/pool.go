package upstream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"fastlb/config"
)

// Errors of the Pool's changes that callers tell apart.
var (
	ErrNotFound = errors.New("no such backend")
	ErrExists   = errors.New("a backend with that id already exists")
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

// Limited reports whether a backend that could take new requests has a
// max_conns limit: a request finding no backend may then wait for room
// (Pool.WaitForRoom) rather than fail.
func (s *Snapshot) Limited() bool {
	for _, b := range s.Eligible {
		if b.maxConns > 0 && b.eligible() {
			return true
		}
	}
	return false
}

// Full reports whether a backend that could take new requests is held back
// only by its max_conns limit.
func (s *Snapshot) Full() bool {
	for _, b := range s.Eligible {
		if b.Full() {
			return true
		}
	}
	return false
}

// Lookup returns the backend with the given id, or nil.
func (s *Snapshot) Lookup(id string) *Backend {
	for _, b := range s.All {
		if b.ID == id {
			return b
		}
	}
	return nil
}

// Options configure a Pool.
type Options struct {
	// Name is the pool's name in logs and metrics; "" is
	// config.DefaultPool.
	Name   string
	Client ClientOptions
	Rise   int // consecutive good checks that bring a down backend up
	Fall   int // consecutive bad checks, or failed connections, that take an up backend down
	// Outlier configures outlier detection; its zero value is off.
	Outlier config.Outlier
	// SlowStart is how long a backend that comes back ramps up; 0: at once.
	SlowStart time.Duration
	// SendProxy is the PROXY protocol version each backend connection
	// starts with (1 or 2); 0: none.
	SendProxy int
	Logger    *slog.Logger
}

// Pool owns the backends and publishes snapshots of them. All methods are
// safe for concurrent use. Changes are serialized by a mutex that the request
// path never takes; every change publishes a new Snapshot.
type Pool struct {
	name   string
	client *clientSettings
	logger *slog.Logger
	rise   atomic.Int32
	fall   atomic.Int32
	snap   atomic.Pointer[Snapshot]

	outlier   atomic.Pointer[config.Outlier]
	slowStart atomic.Int64 // time.Duration

	mu       sync.Mutex // serializes changes and watcher calls
	watchers map[int]func(*Snapshot)
	nextID   int
	retiring sync.WaitGroup
}

// NewPool creates a pool holding one Backend per configured backend. The
// backends start down until their first health check reports.
func NewPool(backends []config.Backend, opts Options) *Pool {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Name == "" {
		opts.Name = config.DefaultPool
	}
	client := newClientSettings(opts.Client)
	p := &Pool{name: opts.Name, client: client, logger: opts.Logger.With("pool", opts.Name), watchers: map[int]func(*Snapshot){}}
	p.SetHealthRules(opts.Rise, opts.Fall)
	p.SetOutlier(opts.Outlier)
	p.SetSlowStart(opts.SlowStart)
	p.client.sendProxy.Store(int32(opts.SendProxy))
	all := make([]*Backend, len(backends))
	for i, c := range backends {
		all[i] = newBackend(c, client)
	}
	p.snap.Store(build(all))
	return p
}

// OptionsFor are the options of the pool pc configures: its timeouts,
// health rules, outlier detection and slow start; headers of answers up to
// maxHeaderBytes.
func OptionsFor(pc *config.Pool, maxHeaderBytes int, backendTLS *tls.Config, logger *slog.Logger) Options {
	return Options{
		Name: pc.Name,
		Client: ClientOptions{ConnectTimeout: pc.ConnectTimeout, BackendTimeout: pc.BackendTimeout,
			MaxHeaderBytes: maxHeaderBytes, TLS: backendTLS},
		Rise: pc.HealthCheck.Rise, Fall: pc.HealthCheck.Fall,
		Outlier: pc.Outlier, SlowStart: pc.SlowStart, SendProxy: ProxyVersion(pc.SendProxyProtocol), Logger: logger,
	}
}

// Configure applies pc's settings (OptionsFor, but the backends' TLS and
// header limit, which stay) from the next request and report on. It does
// not change the backends: Apply does.
func (p *Pool) Configure(pc *config.Pool) {
	p.SetConnectTimeout(pc.ConnectTimeout)
	p.SetBackendTimeout(pc.BackendTimeout)
	p.SetHealthRules(pc.HealthCheck.Rise, pc.HealthCheck.Fall)
	p.SetOutlier(pc.Outlier)
	p.SetSlowStart(pc.SlowStart)
	p.SetSendProxy(ProxyVersion(pc.SendProxyProtocol))
}

// Name is the pool's name.
func (p *Pool) Name() string { return p.name }

// SetHealthRules changes rise and fall; they apply from the next report.
func (p *Pool) SetHealthRules(rise, fall int) {
	p.rise.Store(int32(max(rise, 1)))
	p.fall.Store(int32(max(fall, 1)))
}

// SetConnectTimeout changes the limit for opening connections to every
// backend, present and future.
func (p *Pool) SetConnectTimeout(d time.Duration) {
	p.client.connectTimeout.Store(int64(d))
}

// ConnectTimeout is the limit for opening a connection to a backend.
func (p *Pool) ConnectTimeout() time.Duration {
	return time.Duration(p.client.connectTimeout.Load())
}

// WaitForRoom waits until a backend with a max_conns limit finishes a
// request, or d passes; it reports whether room may have been made. The
// caller picks again: another request may have taken the room first.
//
// It returns at once when no backend is full any more: a backend that
// finished its request before this waiter was counted sent no wake-up, and
// one that finishes after it is counted sees it and sends one.
func (p *Pool) WaitForRoom(d time.Duration) bool {
	r := &p.client.room
	r.waiting.Add(1)
	defer r.waiting.Add(-1)
	if !p.Snapshot().Full() {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.tokens:
		return true
	case <-t.C:
		return false
	}
}

// Waiting is the number of requests waiting for room.
func (p *Pool) Waiting() int { return int(p.client.room.waiting.Load()) }

// SetBackendTimeout changes the limit for one attempt at a backend.
func (p *Pool) SetBackendTimeout(d time.Duration) {
	p.client.backendTimeout.Store(int64(d))
}

// BackendTimeout is the limit for one attempt at a backend.
func (p *Pool) BackendTimeout() time.Duration {
	return time.Duration(p.client.backendTimeout.Load())
}

// Snapshot returns the current snapshot. It takes no lock.
func (p *Pool) Snapshot() *Snapshot { return p.snap.Load() }

// Watch calls fn with the current snapshot now and with every later one, in
// order of publication, until the returned cancel is called. fn runs with
// the Pool's change lock held: it must be quick and must not call the Pool's
// changing methods.
func (p *Pool) Watch(fn func(*Snapshot)) (cancel func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := p.nextID
	p.nextID++
	p.watchers[id] = fn
	fn(p.snap.Load())
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.watchers, id)
	}
}

// publishLocked publishes a snapshot of all; p.mu must be held.
func (p *Pool) publishLocked(all []*Backend) {
	s := build(all)
	p.snap.Store(s)
	for _, fn := range p.watchers {
		fn(s)
	}
}

// republish rebuilds the snapshot from the backends' current state.
func (p *Pool) republish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.publishLocked(p.snap.Load().All)
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

// Add creates a backend and publishes it. It starts down until its first
// health check, which a health checker watching the pool runs at once.
func (p *Pool) Add(c config.Backend) (*Backend, error) {
	if err := config.ResolveBackend(&c); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	all := p.snap.Load().All
	for _, b := range all {
		if b.ID == c.ID {
			return nil, fmt.Errorf("%w: %q", ErrExists, c.ID)
		}
	}
	b := newBackend(c, p.client)
	b.out.rampOnUp.Store(true)
	p.publishLocked(append(slices.Clip(all), b))
	p.logger.Info("backend added", "backend", b.ID, "url", b.URL, "weight", b.Weight(), "state", b.State().String())
	return b, nil
}

// Remove takes a backend out of the pool. Requests in flight to it finish;
// its connections close once the last one has.
func (p *Pool) Remove(id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := p.snap.Load().All
	i := slices.IndexFunc(all, func(b *Backend) bool { return b.ID == id })
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	b := all[i]
	p.publishLocked(slices.Delete(slices.Clone(all), i, i+1))
	p.retireLocked(b)
	p.logger.Info("backend removed", "backend", id, "in_flight", b.Active())
	return nil
}

// retireLocked marks b removed and closes its connections once its last
// request in flight has finished.
func (p *Pool) retireLocked(b *Backend) {
	b.removed.Store(true)
	p.retiring.Go(func() {
		for b.Active() > 0 {
			time.Sleep(20 * time.Millisecond)
		}
		b.CloseIdleConnections()
	})
}

// SetWeight changes a backend's weight (0..config.MaxWeight).
func (p *Pool) SetWeight(id string, w int) (*Backend, error) {
	if err := config.CheckWeight(w); err != nil {
		return nil, fmt.Errorf("weight %w", err)
	}
	return p.change(id, func(b *Backend) {
		if old := b.Weight(); old != w {
			b.weight.Store(int32(w))
			p.logger.Info("backend weight changed", "backend", id, "from", old, "to", w)
		}
	})
}

// SetState changes a backend's admin state. Leaving maint makes the next
// health check decide the backend's health directly, as at start.
func (p *Pool) SetState(id string, s State) (*Backend, error) {
	return p.change(id, func(b *Backend) {
		old := b.State()
		if old == s {
			return
		}
		b.state.Store(uint32(s))
		if old == StateMaint {
			p.leaveMaint(b)
		}
		p.logger.Info("backend state changed", "backend", id, "from", old.String(), "to", s.String())
	})
}

func (p *Pool) change(id string, fn func(b *Backend)) (*Backend, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := p.snap.Load().All
	i := slices.IndexFunc(all, func(b *Backend) bool { return b.ID == id })
	if i < 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	fn(all[i])
	p.publishLocked(all)
	return all[i], nil
}

// Diff tells what Apply changed.
type Diff struct {
	Added     []string `json:"added"`
	Removed   []string `json:"removed"`
	Updated   []string `json:"updated"` // weight, state or (replaced) URL or max_conns changed
	Unchanged int      `json:"unchanged"`
}

// Apply makes the pool hold exactly the given backends, in that order, and
// publishes the result at once. A backend whose id, address and max_conns
// are unchanged keeps its connections, counters and health; its weight and
// state take the new values. Others are created or removed (their in-flight
// requests finish first). prepare, when not nil, gets the backends to be
// created before anything is published (the health checker checks them
// there), so a complete change of the backend set never leaves a moment
// without a healthy backend.
func (p *Pool) Apply(cfgs []config.Backend, prepare func(fresh []*Backend)) Diff {
	var fresh []*Backend
	snap := p.snap.Load()
	for _, c := range cfgs {
		if b := snap.Lookup(c.ID); b == nil || !sameIdentity(b, c) {
			fresh = append(fresh, newBackend(c, p.client))
		}
	}
	if prepare != nil && len(fresh) > 0 {
		prepare(fresh)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	var d Diff
	old := p.snap.Load()
	kept := make(map[*Backend]bool, len(old.All))
	all := make([]*Backend, 0, len(cfgs))
	for _, c := range cfgs {
		b := old.Lookup(c.ID)
		switch {
		case b == nil:
			d.Added = append(d.Added, c.ID)
		case !sameIdentity(b, c):
			d.Updated = append(d.Updated, c.ID)
			b = nil
		default:
			st, _ := parseState(c.State)
			if b.Weight() != c.Weight || b.State() != st {
				d.Updated = append(d.Updated, c.ID)
				b.weight.Store(int32(c.Weight))
				wasMaint := b.State() == StateMaint
				b.state.Store(uint32(st))
				if wasMaint && st != StateMaint {
					p.leaveMaint(b)
				}
			} else {
				d.Unchanged++
			}
		}
		if b == nil {
			i := slices.IndexFunc(fresh, func(f *Backend) bool { return f.ID == c.ID && sameIdentity(f, c) })
			if i >= 0 {
				b = fresh[i]
			} else {
				b = newBackend(c, p.client)
			}
			b.out.rampOnUp.Store(true)
			if b.Healthy() { // checked by prepare
				p.startRamp(b)
			}
		} else {
			kept[b] = true
		}
		all = append(all, b)
	}
	for _, b := range old.All {
		if !kept[b] {
			if !slices.Contains(d.Updated, b.ID) {
				d.Removed = append(d.Removed, b.ID)
			}
			p.retireLocked(b)
		}
	}
	p.publishLocked(all)
	return d
}

// sameIdentity reports whether b is the backend c describes: same id,
// address and max_conns (weight and state may differ).
func sameIdentity(b *Backend, c config.Backend) bool {
	return b.ID == c.ID && b.Scheme == c.Scheme && b.Addr == c.Addr && b.URL == c.URL && b.MaxConns() == c.MaxConns
}

// leaveMaint makes the next health check decide b's health directly, as at
// start, and starts b's slow start (now if it is healthy, else once the
// check finds it so). The caller holds p.mu.
func (p *Pool) leaveMaint(b *Backend) {
	b.checked.Store(false)
	b.out.rampOnUp.Store(true)
	if b.Healthy() {
		p.startRamp(b)
	}
}

// setHealthy flips b's health and republishes when it really changed.
// first is whether this is b's first health verdict (at start, or after
// it was added or left maint). A backend coming up ramps up (slow start),
// unless it is one of the backends fastlb started with, on its first
// verdict; one that went down and is up again ends its ejection too.
func (p *Pool) setHealthy(b *Backend, up bool, cause string, first bool) {
	if !b.healthy.CompareAndSwap(!up, up) {
		return
	}
	b.riseCount.Store(0)
	b.fallCount.Store(0)
	if up {
		p.logger.Info("backend up", "backend", b.ID, "cause", cause)
		if !first || b.out.rampOnUp.Load() {
			p.startRamp(b)
		}
		if !first {
			p.unEject(b, "healthy again after being down")
		}
	} else {
		p.logger.Warn("backend down", "backend", b.ID, "cause", cause)
	}
	p.republish()
	if !up {
		// Its pooled connections most likely lead to a process that is
		// gone: requests must not meet them once it is back.
		b.CloseIdleConnections()
	}
}

// ReportCheck records an active health check of b. The first report (and
// the first after maint) sets b's health directly; later ones flip it after
// rise consecutive successes or fall consecutive failures.
func (p *Pool) ReportCheck(b *Backend, r CheckResult) {
	b.lastCheck.Store(&r)
	cause := "health check passed"
	if r.OK {
		b.checksOK.Add(1)
	} else {
		b.checksFailed.Add(1)
		cause = "health check failed: " + r.Err
	}
	if b.checked.CompareAndSwap(false, true) {
		if r.OK != b.Healthy() {
			p.setHealthy(b, r.OK, "first "+cause, true)
		} else if !r.OK {
			p.logger.Warn("backend down", "backend", b.ID, "cause", "first "+cause)
		}
		return
	}
	switch {
	case r.OK && b.Healthy():
		b.fallCount.Store(0)
	case r.OK:
		if b.riseCount.Add(1) >= p.rise.Load() {
			p.setHealthy(b, true, cause, false)
		}
	case b.Healthy():
		if b.fallCount.Add(1) >= p.fall.Load() {
			p.setHealthy(b, false, cause, false)
		}
	default:
		b.riseCount.Store(0)
	}
}

// Checked reports whether b has had a health check since it was added (or
// left maint).
func (b *Backend) Checked() bool { return b.checked.Load() }

// RequestFailed records a failed request to b. A connection-level failure
// (refused, reset, closed before a response on a fresh connection) counts
// towards marking b down at once: fall of them in a row take it out of
// rotation without waiting for the next health check. A reused connection
// closed before answering (ErrStaleConn) is not one: the caller passes
// connFailure false for it.
//
// gatewayError (refused, reset, malformed answer, timeout) adds to the run
// of failures that ejects b (outlier detection).
func (p *Pool) RequestFailed(b *Backend, connFailure, gatewayError bool, cause string) {
	b.failures.Add(1)
	if gatewayError {
		p.gatewayError(b)
	}
	if !connFailure {
		return
	}
	fall := p.fall.Load()
	if b.connFails.Add(1) >= fall && b.Healthy() {
		p.setHealthy(b, false, "connections failed "+strconv.Itoa(int(fall))+" times in a row: "+cause, false)
	}
}

// CloseIdleConnections closes every backend's idle keep-alive connections:
// after a burst, those it opened beyond what the traffic since needs.
func (p *Pool) CloseIdleConnections() {
	for _, b := range p.snap.Load().All {
		b.CloseIdleConnections()
	}
}

// Close waits for removed backends' requests to finish, then closes the idle
// connections of every backend.
func (p *Pool) Close() {
	p.retiring.Wait()
	for _, b := range p.snap.Load().All {
		b.CloseIdleConnections()
	}
}
