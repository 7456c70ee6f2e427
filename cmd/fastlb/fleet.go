package main

import (
	"bytes"
	"context"

	"fastlb/adminapi"
	"fastlb/cluster"
	"fastlb/config"
	"fastlb/upstream"
)

// The app as the fleet's Applier: what etcd holds goes into force through
// the same paths a reload takes.
var _ cluster.Applier = (*app)(nil)

// ApplyBackends implements cluster.Applier: the pool takes exactly these
// backends (upstream.Pool.Apply), its new ones health-checked first. A
// pool this instance does not have is left alone.
func (a *app) ApplyBackends(name string, backends []config.Backend) {
	pl := (*a.byName.Load())[name]
	if pl == nil {
		return
	}
	d := pl.up.Apply(backends, func(fresh []*upstream.Backend) {
		pl.checker.CheckAll(context.Background(), fresh)
	})
	if len(d.Added)+len(d.Removed)+len(d.Updated) > 0 {
		a.logger.Info("backends changed by the fleet", "pool", name, "added", d.Added, "removed", d.Removed, "updated", d.Updated)
	}
}

// SetSecrets implements cluster.Applier: the fleet's cookie secret (unless
// the file sets one) and TLS session-ticket keys.
func (a *app) SetSecrets(cookie []byte, tickets [][32]byte) {
	if a.tlsListener != nil && len(tickets) > 0 {
		a.tlsListener.SetTicketKeys(tickets)
	}
	if len(cookie) == 0 {
		return
	}
	a.changing.Lock()
	defer a.changing.Unlock()
	if bytes.Equal(cookie, a.secret) {
		return
	}
	a.secret = cookie
	if a.proxy == nil {
		return // start builds the settings with it
	}
	unwatch := a.unwatch
	settings, err := a.settings(a.cfg.Load(), a.pools)
	if err != nil {
		a.logger.Error("cannot apply the fleet's cookie secret", "error", err)
		return
	}
	a.proxy.Reconfigure(settings)
	unwatch()
}

// Fleet implements adminapi.Runtime.
func (a *app) Fleet() adminapi.Fleet {
	if a.fleet == nil {
		return nil
	}
	return a.fleet
}

// startFleet joins the fleet the configuration names, if any: the state in
// etcd (or the cache) goes into force before the proxy serves.
func (a *app) startFleet(cfg *config.Config, adminAddr string) error {
	if cfg.Cluster == nil {
		return nil
	}
	n, err := cluster.Start(cluster.Options{
		Config: cfg.Cluster, Applier: a, Pools: cfg.AllPools(), Version: version, Address: adminAddr,
		TicketInterval: ticketKeyInterval, Logger: a.logger, Metrics: a.metrics,
	})
	if err != nil {
		return err
	}
	a.fleet = n
	return nil
}
