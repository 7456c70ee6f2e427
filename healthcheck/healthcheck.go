// Package healthcheck runs fastlb's active health checks (TCP connect or HTTP
// GET) and reports each result into upstream, which applies rise and fall.
package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/config"
	"fastlb/upstream"
)

// Pool is what the checker needs of upstream.Pool.
type Pool interface {
	Snapshot() *upstream.Snapshot
	ReportCheck(b *upstream.Backend, r upstream.CheckResult)
}

// Checker checks every backend of a pool once per interval. Backends in
// maint are not checked.
type Checker struct {
	pool     Pool
	method   string
	path     string
	timeout  time.Duration
	interval time.Duration
	hc       config.HealthCheck
	client   *fasthttp.Client // HTTP checks; apart from the proxy's pools so a full backend is still checked
	now      func() time.Time
}

// New returns a checker for the pool, configured by cfg's health-check keys.
func New(pool Pool, cfg *config.Config) *Checker {
	return &Checker{
		pool:     pool,
		method:   cfg.HealthCheckMethod,
		path:     cfg.HealthCheck.Path,
		timeout:  cfg.HealthCheck.Timeout,
		interval: cfg.HealthCheckFrequency,
		hc:       cfg.HealthCheck,
		client: &fasthttp.Client{
			NoDefaultUserAgentHeader:  true,
			DisablePathNormalizing:    true,
			MaxIdemponentCallAttempts: 1,
			MaxResponseBodySize:       1 << 20,
			ReadBufferSize:            max(cfg.MaxHeaderBytes, 4096),
			DialDualStack:             true,
		},
		now: time.Now,
	}
}

// RunOnce checks every backend concurrently and returns when all have reported.
func (c *Checker) RunOnce(ctx context.Context) {
	var wg sync.WaitGroup
	for _, b := range c.pool.Snapshot().All {
		if b.State() == upstream.StateMaint {
			continue
		}
		wg.Go(func() { c.pool.ReportCheck(b, c.Check(ctx, b)) })
	}
	wg.Wait()
}

// Run checks every backend each interval, give or take 10% so that a fleet
// of fastlb instances does not check in lock-step, until ctx is done.
func (c *Checker) Run(ctx context.Context) {
	for {
		jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(c.interval))
		t := time.NewTimer(c.interval + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		c.RunOnce(ctx)
	}
}

// Check runs one check of b and returns its result.
func (c *Checker) Check(ctx context.Context, b *upstream.Backend) upstream.CheckResult {
	start := c.now()
	var err error
	if c.method == config.CheckHTTP {
		err = c.checkHTTP(b)
	} else {
		err = c.checkTCP(ctx, b)
	}
	r := upstream.CheckResult{At: start, OK: err == nil, Latency: time.Since(start)}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

func (c *Checker) checkTCP(ctx context.Context, b *upstream.Backend) error {
	d := net.Dialer{Timeout: c.timeout}
	conn, err := d.DialContext(ctx, "tcp", b.Addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

var errTimeout = errors.New("timed out")

func (c *Checker) checkHTTP(b *upstream.Backend) error {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(b.Scheme + "://" + b.Addr + c.path)
	req.Header.SetUserAgent("fastlb-health-check")
	err := c.client.DoTimeout(req, resp, c.timeout)
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		return errTimeout
	case err != nil:
		return err
	case !c.hc.StatusOK(resp.StatusCode()):
		return fmt.Errorf("status %s, want %s", strconv.Itoa(resp.StatusCode()), c.hc.ExpectStatus)
	}
	return nil
}
