package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"

	"fastlb/config"
	"fastlb/healthcheck"
	"fastlb/upstream"
)

// pool is one pool of the running process: its backends and the checker
// that checks them.
type pool struct {
	up      *upstream.Pool
	checker *healthcheck.Checker
	stop    context.CancelFunc
	done    chan struct{}
}

// newPool builds the pool pc configures and runs a first round of health
// checks of its backends; run starts checking it in the background.
func newPool(pc *config.Pool, cfg *config.Config, backendTLS *tls.Config, logger *slog.Logger) *pool {
	up := upstream.NewPool(pc.Backends, upstream.OptionsFor(pc, cfg.MaxHeaderBytes, backendTLS, logger))
	pl := &pool{up: up, checker: healthcheck.New(up, pc, cfg.MaxHeaderBytes, backendTLS), done: make(chan struct{})}
	pl.checker.RunOnce(context.Background())
	return pl
}

// newPools builds every pool of cfg, checking their backends concurrently.
func newPools(cfg *config.Config, backendTLS *tls.Config, logger *slog.Logger) map[string]*pool {
	pcs := cfg.AllPools()
	built := make([]*pool, len(pcs))
	var wg sync.WaitGroup
	for i, pc := range pcs {
		wg.Go(func() { built[i] = newPool(pc, cfg, backendTLS, logger) })
	}
	wg.Wait()
	out := make(map[string]*pool, len(pcs))
	for i, pc := range pcs {
		out[pc.Name] = built[i]
	}
	return out
}

// run checks the pool's backends in the background until close.
func (pl *pool) run() {
	ctx, stop := context.WithCancel(context.Background())
	pl.stop = stop
	go func() { pl.checker.Run(ctx); close(pl.done) }()
}

// close stops the checks, lets the requests in flight finish and closes
// the backends' connections. With retire, the backends are removed first
// (a pool a reload dropped), and close returns at once.
func (pl *pool) close(retire bool) {
	if pl.stop != nil {
		pl.stop()
		<-pl.done
	}
	if retire {
		pl.up.Apply(nil, nil)
		go pl.up.Close()
		return
	}
	pl.up.Close()
}

// poolList is the upstream pools in the order of cfg: the default pool,
// then the named ones in file order.
func poolList(cfg *config.Config, pools map[string]*pool) []*upstream.Pool {
	out := make([]*upstream.Pool, 0, len(pools))
	for _, pc := range cfg.AllPools() {
		out = append(out, pools[pc.Name].up)
	}
	return out
}
