// Package healthcheck runs fastlb's active health checks (TCP connect or HTTP
// GET) and reports each result into upstream, which applies rise and fall.
package healthcheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/config"
	"fastlb/upstream"
)

// Pool is what the checker needs of upstream.Pool.
type Pool interface {
	Snapshot() *upstream.Snapshot
	ReportCheck(b *upstream.Backend, r upstream.CheckResult)
	Watch(fn func(*upstream.Snapshot)) (cancel func())
}

// Checker checks every backend of a pool once per interval, and a backend
// that has not been checked yet (just added, or back from maint) at once.
// Backends in maint are not checked.
type Checker struct {
	pool     Pool
	tls      *tls.Config // base configuration for https:// backends; nil: system roots
	settings atomic.Pointer[settings]
	now      func() time.Time

	mu      sync.Mutex
	pending map[*upstream.Backend]bool // immediate checks under way
	wg      sync.WaitGroup
	// reported, when set (by tests), runs after an immediate check has
	// reported and before it counts as finished.
	reported func(*upstream.Backend)
}

// settings are the parts of a Checker that a reload can change.
type settings struct {
	method   string
	interval time.Duration
	hc       config.HealthCheck
	// proxyHeader starts each check's connection when the pool sends the
	// PROXY protocol: a LOCAL (v2) or UNKNOWN (v1) one; nil: none.
	proxyHeader []byte
	client      *fasthttp.Client // HTTP checks; apart from the proxy's pools so a full backend is still checked
}

// New returns a checker for the pool, configured by pc's health-check keys;
// an HTTP check reads answers with a header of up to maxHeaderBytes. HTTP
// checks of https:// backends verify them with backendTLS (the proxy's own
// base configuration, see tlsconf.BackendConfig), or the system roots when
// it is nil.
func New(pool Pool, pc *config.Pool, maxHeaderBytes int, backendTLS *tls.Config) *Checker {
	c := &Checker{pool: pool, tls: backendTLS, now: time.Now, pending: map[*upstream.Backend]bool{}}
	c.Reconfigure(pc, maxHeaderBytes)
	return c
}

// Reconfigure applies pc's health-check keys from the next check on.
func (c *Checker) Reconfigure(pc *config.Pool, maxHeaderBytes int) {
	var proxyHeader []byte
	if v := upstream.ProxyVersion(pc.SendProxyProtocol); v != 0 {
		proxyHeader = upstream.LocalProxyHeader(v)
	}
	c.settings.Store(&settings{
		method:      pc.HealthCheckMethod,
		interval:    pc.HealthCheckFrequency,
		hc:          pc.HealthCheck,
		proxyHeader: proxyHeader,
		client: &fasthttp.Client{
			NoDefaultUserAgentHeader:  true,
			DisablePathNormalizing:    true,
			MaxIdemponentCallAttempts: 1,
			MaxResponseBodySize:       1 << 20,
			ReadBufferSize:            max(maxHeaderBytes, 4096),
			DialDualStack:             true,
			TLSConfig:                 c.tls, // fasthttp sets ServerName per host
			Dial:                      dialWith(proxyHeader, pc.HealthCheck.Timeout),
		},
	})
}

// RunOnce checks every backend concurrently and returns when all have reported.
func (c *Checker) RunOnce(ctx context.Context) {
	c.CheckAll(ctx, c.pool.Snapshot().All)
}

// CheckAll checks the given backends (maint ones excepted) concurrently,
// reports each result to the pool, and returns when all have reported.
func (c *Checker) CheckAll(ctx context.Context, backends []*upstream.Backend) {
	var wg sync.WaitGroup
	for _, b := range backends {
		if b.State() == upstream.StateMaint {
			continue
		}
		wg.Go(func() { c.pool.ReportCheck(b, c.Check(ctx, b)) })
	}
	wg.Wait()
}

// Run checks every backend each interval, give or take 10% so that a fleet
// of fastlb instances does not check in lock-step, and checks new backends
// at once, until ctx is done. It returns when every check it started has
// finished.
func (c *Checker) Run(ctx context.Context) {
	cancel := c.pool.Watch(func(s *upstream.Snapshot) { c.checkNew(ctx, s) })
	defer c.wg.Wait()
	defer cancel()
	for {
		interval := c.settings.Load().interval
		jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(interval))
		t := time.NewTimer(interval + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		c.RunOnce(ctx)
	}
}

// checkNew starts a check of every backend of s not yet checked. It runs
// under the pool's change lock, so it only starts goroutines.
func (c *Checker) checkNew(ctx context.Context, s *upstream.Snapshot) {
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range s.All {
		if b.Checked() || b.State() == upstream.StateMaint || c.pending[b] {
			continue
		}
		c.pending[b] = true
		c.wg.Go(func() { c.checkUntilChecked(ctx, b) })
	}
}

// checkUntilChecked checks b until a check of it has reported since it was
// last reset: leaving maint while a check is under way resets b after that
// check may already have reported, and checkNew, seeing this check
// pending, starts none.
func (c *Checker) checkUntilChecked(ctx context.Context, b *upstream.Backend) {
	for {
		c.pool.ReportCheck(b, c.Check(ctx, b))
		if c.reported != nil {
			c.reported(b)
		}
		c.mu.Lock()
		if b.Checked() || b.State() == upstream.StateMaint || ctx.Err() != nil {
			delete(c.pending, b)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// Check runs one check of b and returns its result.
func (c *Checker) Check(ctx context.Context, b *upstream.Backend) upstream.CheckResult {
	st := c.settings.Load()
	start := c.now()
	var err error
	if st.method == config.CheckHTTP {
		err = st.checkHTTP(b)
	} else {
		err = st.checkTCP(ctx, b)
	}
	r := upstream.CheckResult{At: start, OK: err == nil, Latency: time.Since(start)}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

func (st *settings) checkTCP(ctx context.Context, b *upstream.Backend) error {
	d := net.Dialer{Timeout: st.hc.Timeout}
	conn, err := d.DialContext(ctx, "tcp", b.Addr)
	if err != nil {
		return err
	}
	if st.proxyHeader != nil {
		conn.SetWriteDeadline(time.Now().Add(st.hc.Timeout)) //nolint:errcheck // the write fails instead
		conn.Write(st.proxyHeader)                           //nolint:errcheck // the connection was made: the check passed
	}
	return conn.Close()
}

// dialWith is the dialer of HTTP checks: each connection starts with
// header (before a TLS handshake) when it is not nil.
func dialWith(header []byte, timeout time.Duration) fasthttp.DialFunc {
	if header == nil {
		return nil
	}
	return func(addr string) (net.Conn, error) {
		conn, err := fasthttp.DialDualStackTimeout(addr, timeout)
		if err != nil {
			return nil, err
		}
		conn.SetWriteDeadline(time.Now().Add(timeout)) //nolint:errcheck // the write fails instead
		if _, err := conn.Write(header); err != nil {
			conn.Close()
			return nil, err
		}
		conn.SetWriteDeadline(time.Time{}) //nolint:errcheck // as above
		return conn, nil
	}
}

var errTimeout = errors.New("timed out")

func (st *settings) checkHTTP(b *upstream.Backend) error {
	if b.IsH2() {
		code, err := b.CheckH2(st.hc.Path, st.hc.Timeout)
		switch {
		case err != nil:
			return err
		case !st.hc.StatusOK(code):
			return fmt.Errorf("status %s, want %s", strconv.Itoa(code), st.hc.ExpectStatus)
		}
		return nil
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(b.Scheme + "://" + b.Addr + st.hc.Path)
	req.Header.SetUserAgent("fastlb-health-check")
	// A connection of its own for each check, as HAProxy's checks have:
	// a kept one could lead to the process a restarted backend replaced,
	// and its failure would count against the new one.
	req.SetConnectionClose()
	err := st.client.DoTimeout(req, resp, st.hc.Timeout)
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		return errTimeout
	case err != nil:
		return err
	case !st.hc.StatusOK(resp.StatusCode()):
		return fmt.Errorf("status %s, want %s", strconv.Itoa(resp.StatusCode()), st.hc.ExpectStatus)
	}
	return nil
}
