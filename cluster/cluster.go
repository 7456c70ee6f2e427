// Package cluster makes fastlb one instance of a fleet that shares its
// backends and secrets through etcd (SPEC section 10).
//
// Under the configured prefix P etcd holds:
//
//	P seeded                  the instance that wrote the first state
//	P pools/NAME              a pool's backends, as one JSON document
//	P secrets/cookie          the sticky cookie secret
//	P secrets/tickets         the TLS session-ticket keys, newest first
//	P members/NAME            each live instance, bound to its lease
//	P election/tickets/...    the election of the instance that rotates keys
//
// A pool's backends are one key, so that an admin change is one
// transaction comparing that key's revision: a conflicting change fails it
// cleanly. Every instance, the writer included, applies what it reads from
// one watch of the prefix, through the Applier that cmd/fastlb gives (the
// upstream Pool's Apply, as a reload uses).
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	json "github.com/goccy/go-json"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"fastlb/config"
)

// Errors of the admin changes that callers tell apart.
var (
	// ErrUnavailable: etcd cannot be reached; nothing was changed.
	ErrUnavailable = errors.New("cluster store unavailable")
	ErrExists      = errors.New("a backend with that id already exists")
	ErrNotFound    = errors.New("no such backend")
	// ErrConflict: the pool kept changing under the change; not made.
	ErrConflict = errors.New("the pool changed concurrently; try again")
)

// Applier puts what the fleet shares in force in this instance.
type Applier interface {
	// ApplyBackends makes the pool hold exactly backends.
	ApplyBackends(pool string, backends []config.Backend)
	// SetSecrets puts the shared cookie secret and ticket keys (newest
	// first) in force.
	SetSecrets(cookie []byte, tickets [][32]byte)
}

// Options configure a Node.
type Options struct {
	Config  *config.Cluster
	Applier Applier
	// Pools are the configuration's pools: their names are the ones
	// applied, their backends what seeds an empty store.
	Pools   []*config.Pool
	Version string // of this instance, in its member key
	Address string // of this instance, in its member key
	// TicketInterval is how often the elected instance renews the ticket
	// keys.
	TicketInterval time.Duration
	Logger         *slog.Logger
	Metrics        *metrics.Set
}

// Node is this instance's part of the fleet. Its methods are safe for
// concurrent use.
type Node struct {
	opts   Options
	cfg    *config.Cluster
	prefix string
	cli    *clientv3.Client
	logger *slog.Logger

	connected atomic.Bool
	applied   atomic.Int64 // the etcd revision whose state is in force
	// changed is the revision of the last change of backends or secrets
	// applied: what the member key shows (the member keys' own writes do
	// not move it, or each would set off the next).
	changed atomic.Int64

	mu      sync.Mutex
	pools   map[string]*poolState // as last read from etcd, by name
	names   map[string]bool       // the configuration's pools
	cookie  []byte
	tickets [][32]byte
	waiters []waiter

	applySeconds *metrics.Histogram
	cacheKick    chan struct{}
	stop         context.CancelFunc
	done         sync.WaitGroup
}

// poolState is a pool's key: its backends in order and its revision.
type poolState struct {
	Backends  []config.BackendView `json:"backends"`
	ChangedAt int64                `json:"changed_at"` // Unix nanoseconds of the writer, for fastlb_cluster_apply_seconds
	modRev    int64
}

type waiter struct {
	rev int64
	ch  chan struct{}
}

func (n *Node) key(parts ...string) string { return n.prefix + strings.Join(parts, "/") }

// Start connects to etcd and puts the fleet's state in force: the store's
// if it has one, else this instance's file's, which it writes there first
// (seeding, once for the whole fleet). When etcd cannot be reached it puts
// the state saved in cache_file in force, or leaves the file's, says so in
// the log, and keeps trying in the background.
func Start(opts Options) (*Node, error) {
	c := opts.Config
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	if opts.TicketInterval <= 0 {
		opts.TicketInterval = time.Hour
	}
	tlsCfg, err := etcdTLS(&c.Etcd)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: c.Etcd.Endpoints, DialTimeout: c.Etcd.DialTimeout, Username: c.Etcd.Username,
		Password: c.Etcd.Password, TLS: tlsCfg, Logger: zap.NewNop(),
		DialKeepAliveTime: 5 * time.Second, DialKeepAliveTimeout: c.Etcd.DialTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n := &Node{opts: opts, cfg: c, prefix: c.Etcd.Prefix, cli: cli, logger: opts.Logger.With("cluster", c.Name),
		pools: map[string]*poolState{}, names: map[string]bool{}, cacheKick: make(chan struct{}, 1)}
	for _, p := range opts.Pools {
		n.names[p.Name] = true
	}
	set := opts.Metrics
	set.NewGauge("fastlb_cluster_connected", func() float64 {
		if n.connected.Load() {
			return 1
		}
		return 0
	})
	set.NewGauge("fastlb_cluster_applied_revision", func() float64 { return float64(n.applied.Load()) })
	n.applySeconds = set.NewHistogram("fastlb_cluster_apply_seconds")

	ctx, stop := context.WithCancel(context.Background())
	n.stop = stop
	rev, err := n.sync(ctx)
	if err != nil {
		n.logger.Warn("etcd unreachable at start; serving the last saved state until it is reached", "error", err.Error())
		if !n.loadCache() {
			n.logger.Warn("no cache_file state to serve: serving the configuration file's backends")
		}
	}
	n.done.Go(func() { n.run(ctx, rev) })
	n.done.Go(func() { n.members(ctx) })
	n.done.Go(func() { n.rotateTickets(ctx) })
	if c.CacheFile != "" {
		n.done.Go(func() { n.writeCaches(ctx) })
	}
	return n, nil
}

// Close stops watching and leaves the fleet (its member key goes with its
// lease).
func (n *Node) Close() {
	n.stop()
	n.done.Wait()
	n.cli.Close()
}

// Connected reports whether this instance follows etcd now.
func (n *Node) Connected() bool { return n.connected.Load() }

// Applied is the etcd revision whose state is in force.
func (n *Node) Applied() int64 { return n.applied.Load() }

// call is a context for one call to etcd: each has its own deadline (the
// client does not bound them), and needs a leader.
func (n *Node) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(clientv3.WithRequireLeader(ctx), n.cfg.Etcd.DialTimeout)
}

// sync reads the whole prefix, seeding it first when it is empty, creating
// the keys of pools and secrets it lacks, and puts it all in force. It
// returns the revision read.
func (n *Node) sync(ctx context.Context) (int64, error) {
	if err := n.seed(ctx); err != nil {
		return 0, err
	}
	cctx, cancel := n.call(ctx)
	defer cancel()
	resp, err := n.cli.Get(cctx, n.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	n.mu.Lock()
	n.pools = map[string]*poolState{}
	var cookie []byte
	var tickets [][32]byte
	var changed int64
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), n.prefix)
		if strings.HasPrefix(k, "pools/") || strings.HasPrefix(k, "secrets/") {
			changed = max(changed, kv.ModRevision)
		}
		switch {
		case strings.HasPrefix(k, "pools/"):
			if ps := decodePool(kv.Value, kv.ModRevision); ps != nil {
				n.pools[strings.TrimPrefix(k, "pools/")] = ps
			}
		case k == "secrets/cookie":
			cookie, _ = base64.StdEncoding.DecodeString(string(kv.Value))
		case k == "secrets/tickets":
			tickets = decodeTickets(kv.Value)
		}
	}
	n.cookie, n.tickets = cookie, tickets
	states := n.statesLocked()
	n.mu.Unlock()
	for name, list := range states {
		n.opts.Applier.ApplyBackends(name, list)
	}
	n.opts.Applier.SetSecrets(cookie, tickets)
	n.changed.Store(changed)
	n.setApplied(resp.Header.Revision)
	n.connected.Store(true)
	return resp.Header.Revision, nil
}

// seed writes this instance's pools and fresh secrets to an empty store,
// in one transaction that only the first instance of a fleet makes; then
// it adds the keys the store lacks (a pool added to the file since, each
// created only if still absent).
func (n *Node) seed(ctx context.Context) error {
	cctx, cancel := n.call(ctx)
	defer cancel()
	var puts []clientv3.Op
	for _, p := range n.opts.Pools {
		puts = append(puts, clientv3.OpPut(n.key("pools", p.Name), string(encodePool(config.ViewBackendList(p.Backends)))))
	}
	cookie := make([]byte, 32)
	rand.Read(cookie)
	var ticket [32]byte
	rand.Read(ticket[:])
	secrets := []clientv3.Op{
		clientv3.OpPut(n.key("secrets", "cookie"), base64.StdEncoding.EncodeToString(cookie)),
		clientv3.OpPut(n.key("secrets", "tickets"), string(encodeTickets([][32]byte{ticket}))),
	}
	ops := append(append([]clientv3.Op{clientv3.OpPut(n.key("seeded"), n.cfg.Name)}, puts...), secrets...)
	if len(ops) > 128 {
		return fmt.Errorf("cannot seed %d pools in one etcd transaction (at most 125)", len(puts))
	}
	resp, err := n.cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(n.key("seeded")), "=", 0)).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if resp.Succeeded {
		n.logger.Info("cluster store seeded with this instance's backends and fresh secrets", "pools", len(puts))
		return nil
	}
	// Seeded before: add what is missing, each key only if absent.
	for _, op := range append(puts, secrets...) {
		k := string(op.KeyBytes())
		if _, err := n.cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(op).Commit(); err != nil {
			return err
		}
	}
	return nil
}

// statesLocked is each configured pool's backends as etcd has them. n.mu
// is held.
func (n *Node) statesLocked() map[string][]config.Backend {
	out := map[string][]config.Backend{}
	for name, ps := range n.pools {
		if !n.names[name] {
			continue
		}
		out[name] = backendsOf(ps.Backends, n.logger, name)
	}
	return out
}

// backendsOf turns stored backends into configured ones; one that no
// longer resolves is left out, and logged.
func backendsOf(views []config.BackendView, logger *slog.Logger, pool string) []config.Backend {
	out := make([]config.Backend, 0, len(views))
	for _, v := range views {
		b := config.Backend{URL: v.URL, Weight: v.Weight, ID: v.ID, MaxConns: v.MaxConns, State: v.State}
		if b.State == "" {
			b.State = config.StateActive
		}
		if err := config.ResolveBackend(&b); err != nil {
			logger.Error("a backend in the cluster store is invalid; left out", "pool", pool, "backend", v.ID, "error", err)
			continue
		}
		out = append(out, b)
	}
	return out
}

// run follows the store from revision rev on, and reads it whole again
// (sync) whenever it cannot: at start without etcd, after the connection
// broke, or when the watch fell behind a compaction.
func (n *Node) run(ctx context.Context, rev int64) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if rev == 0 {
			var err error
			if rev, err = n.sync(ctx); err != nil {
				n.connected.Store(false)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(backoff*2, 2*time.Second)
				continue
			}
			n.logger.Info("cluster store reached; state read again", "revision", rev)
		}
		backoff = 100 * time.Millisecond
		rev = n.watch(ctx, rev)
		if ctx.Err() == nil {
			n.connected.Store(false)
		}
	}
}

// probeInterval is how often a watching instance checks that etcd answers.
const probeInterval = time.Second

// watch applies the changes after rev until the watch ends, and returns
// the revision to go on from: 0 when the prefix must be read again.
func (n *Node) watch(ctx context.Context, rev int64) int64 {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// A watch waits through an outage without a word (the client keeps
	// reconnecting beneath it): a read a second tells when etcd is gone,
	// and ends the watch.
	go func() {
		t := time.NewTicker(probeInterval)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			pctx, pcancel := n.call(wctx)
			_, err := n.cli.Get(pctx, n.key("seeded"), clientv3.WithCountOnly())
			pcancel()
			if err != nil && wctx.Err() == nil {
				n.logger.Warn("cluster store unreachable; serving the last applied state", "error", err.Error())
				n.connected.Store(false)
				cancel()
				return
			}
		}
	}()
	ch := n.cli.Watch(wctx, n.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	for resp := range ch {
		if err := resp.Err(); err != nil {
			if resp.CompactRevision != 0 {
				n.logger.Warn("the watch fell behind a compaction; reading the state again", "compacted", resp.CompactRevision)
			} else {
				n.logger.Warn("cluster store watch ended", "error", err.Error())
			}
			return 0
		}
		if wctx.Err() != nil {
			return 0
		}
		n.apply(resp)
	}
	if ctx.Err() == nil {
		n.logger.Warn("cluster store watch closed; reconnecting")
	}
	return 0
}

// apply puts one watch response's changes in force.
func (n *Node) apply(resp clientv3.WatchResponse) {
	changed := map[string][]config.Backend{}
	var ats []int64
	secrets := false
	n.mu.Lock()
	for _, ev := range resp.Events {
		k := strings.TrimPrefix(string(ev.Kv.Key), n.prefix)
		if strings.HasPrefix(k, "pools/") || strings.HasPrefix(k, "secrets/") {
			n.changed.Store(max(n.changed.Load(), ev.Kv.ModRevision))
		}
		switch {
		case strings.HasPrefix(k, "pools/"):
			name := strings.TrimPrefix(k, "pools/")
			if ev.Type == clientv3.EventTypeDelete {
				delete(n.pools, name)
				continue
			}
			ps := decodePool(ev.Kv.Value, ev.Kv.ModRevision)
			if ps == nil {
				n.logger.Error("a pool in the cluster store does not decode; left as it was", "pool", name)
				continue
			}
			n.pools[name] = ps
			if n.names[name] {
				changed[name] = backendsOf(ps.Backends, n.logger, name)
				ats = append(ats, ps.ChangedAt)
			}
		case k == "secrets/cookie" && ev.Type == clientv3.EventTypePut:
			if c, err := base64.StdEncoding.DecodeString(string(ev.Kv.Value)); err == nil {
				n.cookie, secrets = c, true
			}
		case k == "secrets/tickets" && ev.Type == clientv3.EventTypePut:
			n.tickets, secrets = decodeTickets(ev.Kv.Value), true
		}
	}
	cookie, tickets := n.cookie, n.tickets
	n.mu.Unlock()
	for name, list := range changed {
		n.opts.Applier.ApplyBackends(name, list)
	}
	if secrets {
		n.opts.Applier.SetSecrets(cookie, tickets)
	}
	done := time.Now()
	for _, at := range ats {
		if at > 0 {
			n.applySeconds.Update(done.Sub(time.Unix(0, at)).Seconds())
		}
	}
	n.setApplied(resp.Header.Revision)
}

// setApplied records rev as in force and wakes the changes waiting for it.
func (n *Node) setApplied(rev int64) {
	if rev <= n.applied.Load() {
		return
	}
	n.applied.Store(rev)
	n.mu.Lock()
	keep := n.waiters[:0]
	for _, w := range n.waiters {
		if w.rev <= rev {
			close(w.ch)
		} else {
			keep = append(keep, w)
		}
	}
	n.waiters = keep
	n.mu.Unlock()
	select {
	case n.cacheKick <- struct{}{}:
	default:
	}
}

// WaitApplied waits until the state of revision rev is in force here, or
// d passes; it reports which.
func (n *Node) WaitApplied(rev int64, d time.Duration) bool {
	if n.applied.Load() >= rev {
		return true
	}
	ch := make(chan struct{})
	n.mu.Lock()
	n.waiters = append(n.waiters, waiter{rev: rev, ch: ch})
	n.mu.Unlock()
	if n.applied.Load() >= rev {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

func decodePool(data []byte, modRev int64) *poolState {
	ps := &poolState{}
	if err := json.Unmarshal(data, ps); err != nil {
		return nil
	}
	ps.modRev = modRev
	return ps
}

func encodePool(views []config.BackendView) []byte {
	if views == nil {
		views = []config.BackendView{}
	}
	b, _ := json.Marshal(&poolState{Backends: views, ChangedAt: time.Now().UnixNano()})
	return b
}

type ticketsDoc struct {
	Keys      []string `json:"keys"` // base64, newest first
	RotatedAt int64    `json:"rotated_at"`
}

func decodeTickets(data []byte) [][32]byte {
	var d ticketsDoc
	if json.Unmarshal(data, &d) != nil {
		return nil
	}
	var out [][32]byte
	for _, k := range d.Keys {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(b) != 32 {
			continue
		}
		out = append(out, [32]byte(b))
	}
	return out
}

func encodeTickets(keys [][32]byte) []byte {
	d := ticketsDoc{RotatedAt: time.Now().Unix()}
	for _, k := range keys {
		d.Keys = append(d.Keys, base64.StdEncoding.EncodeToString(k[:]))
	}
	b, _ := json.Marshal(d)
	return b
}

// etcdTLS is the TLS configuration for https:// endpoints, nil when none
// is configured.
func etcdTLS(e *config.Etcd) (*tls.Config, error) {
	https := slices.ContainsFunc(e.Endpoints, func(u string) bool { return strings.HasPrefix(u, "https://") })
	if !https && e.CAFile == "" && e.CertFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CAFile != "" {
		pem, err := os.ReadFile(e.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.etcd.ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster.etcd.ca_file: no PEM certificate in %s", e.CAFile)
		}
		cfg.RootCAs = pool
	}
	if e.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.etcd.cert_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// cacheDoc is cache_file's content: the last state applied.
type cacheDoc struct {
	Revision int64                           `json:"revision"`
	Pools    map[string][]config.BackendView `json:"pools"`
	Cookie   string                          `json:"cookie_secret"`
	Tickets  json.RawMessage                 `json:"ticket_keys"`
}

// writeCaches writes cache_file after every applied change, at most one
// write at a time, until ctx ends.
func (n *Node) writeCaches(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.cacheKick:
		}
		if err := n.writeCache(); err != nil {
			n.logger.Error("cannot write cache_file", "file", n.cfg.CacheFile, "error", err)
		}
	}
}

func (n *Node) writeCache() error {
	n.mu.Lock()
	doc := cacheDoc{Revision: n.applied.Load(), Pools: map[string][]config.BackendView{},
		Cookie: base64.StdEncoding.EncodeToString(n.cookie), Tickets: encodeTickets(n.tickets)}
	for name, ps := range n.pools {
		doc.Pools[name] = ps.Backends
	}
	n.mu.Unlock()
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(n.cfg.CacheFile), "."+filepath.Base(n.cfg.CacheFile)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), n.cfg.CacheFile)
}

// loadCache puts the state saved in cache_file in force; it reports
// whether there was one.
func (n *Node) loadCache() bool {
	if n.cfg.CacheFile == "" {
		return false
	}
	data, err := os.ReadFile(n.cfg.CacheFile)
	if err != nil {
		return false
	}
	var doc cacheDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		n.logger.Error("cache_file does not decode; not used", "file", n.cfg.CacheFile, "error", err)
		return false
	}
	cookie, _ := base64.StdEncoding.DecodeString(doc.Cookie)
	tickets := decodeTickets(doc.Tickets)
	n.mu.Lock()
	for name, views := range doc.Pools {
		n.pools[name] = &poolState{Backends: views}
	}
	n.cookie, n.tickets = cookie, tickets
	states := n.statesLocked()
	n.mu.Unlock()
	for name, list := range states {
		n.opts.Applier.ApplyBackends(name, list)
	}
	n.opts.Applier.SetSecrets(cookie, tickets)
	n.logger.Warn("serving the state saved in cache_file", "file", n.cfg.CacheFile, "revision", doc.Revision)
	return true
}

// SetPools makes pools the configuration's (after a reload): a pool new to
// the store is written there with its file's backends, unless another
// instance wrote it first; one the store knows takes the store's backends.
func (n *Node) SetPools(pools []*config.Pool) {
	n.mu.Lock()
	n.names = map[string]bool{}
	for _, p := range pools {
		n.names[p.Name] = true
	}
	n.opts.Pools = pools
	states := n.statesLocked()
	n.mu.Unlock()
	for name, list := range states {
		n.opts.Applier.ApplyBackends(name, list)
	}
	if !n.connected.Load() {
		return
	}
	ctx, cancel := n.call(context.Background())
	defer cancel()
	for _, p := range pools {
		if states[p.Name] != nil {
			continue
		}
		k := n.key("pools", p.Name)
		op := clientv3.OpPut(k, string(encodePool(config.ViewBackendList(p.Backends))))
		if _, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(op).Commit(); err != nil {
			n.logger.Warn("cannot write a new pool to the cluster store", "pool", p.Name, "error", err)
		}
	}
}
