package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"fastlb/adminapi"
	"fastlb/cluster"
	"fastlb/config"
	"fastlb/frontend"
	"fastlb/proxy"
	"fastlb/stats"
	"fastlb/tlsconf"
	"fastlb/upstream"
)

// app is a running fastlb.
type app struct {
	cfgPath string
	cfg     atomic.Pointer[config.Config] // in force
	logger  *slog.Logger
	level   *slog.LevelVar
	stderr  io.Writer

	// pools are the pools in force by name; a reload changes them, with
	// changing held. ups lists their upstream pools for readers.
	pools       map[string]*pool
	ups         atomic.Pointer[[]*upstream.Pool]
	byName      atomic.Pointer[map[string]*pool] // a.pools, for the fleet's changes
	fleet       *cluster.Node                    // nil without "cluster"
	metrics     *metrics.Set
	backendTLS  *tls.Config
	proxy       *proxy.Proxy
	unwatch     func() // detaches the current policies, hashes and cookie tables from the pools
	secret      []byte // sticky cookie key generated at start, used when the file sets none
	accessLog   *proxy.AccessLog
	accessFile  *os.File           // nil for "stderr"
	servers     []*frontend.Server // the plain listener's, then the HTTPS listener's
	listeners   []namedListener    // what a binary upgrade hands over
	listenAddr  string             // the proxy listener's address
	stopWatch   chan struct{}
	adminServer *fasthttp.Server
	tlsListener *tlsconf.Listener // nil without "tls"
	stopTickets chan struct{}
	stopStats   context.CancelFunc // ends the dashboard's sampling
	served      chan error

	// changing is held by whatever applies a configuration: a reload
	// (SIGHUP or the admin API), and an admin API change with its
	// write-back to the file (Exclusive).
	changing sync.Mutex
}

var _ adminapi.Runtime = (*app)(nil)

// namedListener is a listening socket with the name a binary upgrade
// hands it over under.
type namedListener struct {
	name string
	ln   net.Listener
}

// listenOrInherit takes the listener an upgrading parent handed over under
// name, or opens one.
func listenOrInherit(inh map[string]net.Listener, name, bind string, port int) (net.Listener, error) {
	if ln, ok := inh[name]; ok {
		delete(inh, name)
		return ln, nil
	}
	return listen(bind, port)
}

// listenClients is listenOrInherit for a listener of client connections,
// which the kernel hands over once the client has sent something (see
// deferAccept); set on inherited listeners too, in case the parent
// did not.
func listenClients(inh map[string]net.Listener, name, bind string, port int) (net.Listener, error) {
	ln, err := listenOrInherit(inh, name, bind, port)
	if err != nil {
		return nil, err
	}
	if err := deferAccept(ln); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listener on %s: %w", ln.Addr(), err)
	}
	return ln, nil
}

// listen opens a TCP listener, naming the address in its error.
func listen(bind string, port int) (net.Listener, error) {
	addr := net.JoinHostPort(bind, strconv.Itoa(port))
	network := "tcp4"
	if strings.Contains(bind, ":") {
		network = "tcp6"
	}
	lc := listenConfig()
	ln, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			err = opErr.Err
		}
		return nil, fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	return ln, nil
}

// start builds every part, runs a first round of health checks, and serves.
//
// inh and sec are what an upgrading parent handed over: listeners by name,
// and secrets (nil when this process was not started by an upgrade).
func start(cfgPath string, cfg *config.Config, stderr io.Writer, inh map[string]net.Listener, sec *secrets) (_ *app, err error) {
	level := new(slog.LevelVar)
	setLevel(level, cfg.LogLevel)
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	a := &app{cfgPath: cfgPath, logger: logger, level: level, stderr: stderr,
		stopTickets: make(chan struct{}), stopWatch: make(chan struct{})}
	a.cfg.Store(cfg)
	if sec != nil {
		a.secret = sec.CookieSecret
	} else {
		a.secret = make([]byte, 32)
		rand.Read(a.secret)
	}

	// Certificates first: a bad one must stop startup before anything binds.
	problems, warnings := tlsconf.Check(cfg)
	if len(problems) > 0 {
		return nil, &config.Error{File: cfgPath, Problems: problems}
	}
	logExpired(logger, cfgPath, warnings)
	backendTLS, err := tlsconf.BackendConfig(cfg.BackendTLS)
	if err != nil {
		return nil, fileError(cfgPath, err)
	}
	if cfg.BackendTLS.InsecureSkipVerify {
		logger.Warn("backend_tls.insecure_skip_verify is on: the certificates of https:// backends are not verified")
	}
	if cfg.TLS != nil {
		certs, err := tlsconf.LoadCertificates(cfg.TLS)
		if err != nil {
			return nil, fileError(cfgPath, err)
		}
		a.tlsListener = tlsconf.NewListener(certs, cfg.TLS.MinVersion, cfg.TLS.HTTP2)
		if sec != nil && len(sec.TicketKeys) > 0 {
			a.tlsListener.SetTicketKeys(sec.TicketKeys)
		}
	}

	var listeners []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range listeners {
				ln.Close()
			}
		}
	}()
	defer func() {
		for _, ln := range inh { // handed over but no longer configured
			ln.Close()
		}
	}()
	ln, err := listenClients(inh, "plain", cfg.Bind, cfg.Port)
	if err != nil {
		return nil, err
	}
	listeners = append(listeners, ln)
	adminLn, err := listenOrInherit(inh, "admin", cfg.AdminBind, cfg.AdminPort)
	if err != nil {
		return nil, fmt.Errorf("admin API: %w", err)
	}
	listeners = append(listeners, adminLn)
	a.listeners = []namedListener{{"plain", ln}, {"admin", adminLn}}
	var tlsLn net.Listener
	if cfg.TLS != nil {
		if tlsLn, err = listenClients(inh, "tls", cfg.TLS.Bind, cfg.TLS.Port); err != nil {
			return nil, fmt.Errorf("HTTPS: %w", err)
		}
		listeners = append(listeners, tlsLn)
		a.listeners = append(a.listeners, namedListener{"tls", tlsLn})
	}
	a.listenAddr = ln.Addr().String()

	set := metrics.NewSet()
	a.metrics = set
	set.RegisterMetricsWriter(func(w io.Writer) {
		if a.tlsListener == nil {
			return
		}
		for _, na := range a.tlsListener.Certificates().NotAfter() {
			metrics.WriteGaugeUint64(w, fmt.Sprintf("fastlb_tls_certificate_not_after_seconds{file=%q}", na.File), uint64(max(na.Time.Unix(), 0)))
		}
	})
	// Every pool's backends are checked once before the proxy serves.
	a.backendTLS = backendTLS
	a.pools = newPools(cfg, backendTLS, logger)
	a.publishPools(cfg)
	settings, err := a.settings(cfg, a.pools)
	if err != nil {
		return nil, err
	}
	a.proxy = proxy.New(settings, proxy.Options{Logger: logger, Metrics: set,
		MaxRequestBody: cfg.MaxRequestBody, ClientReadTimeout: cfg.ClientReadTimeout})
	if err := a.startFleet(cfg, adminLn.Addr().String()); err != nil {
		return nil, err
	}
	if err := a.openAccessLog(cfg.AccessLog); err != nil {
		return nil, err
	}
	plain := a.proxy.ServeHTTP
	if cfg.TLS != nil && cfg.TLS.RedirectHTTP {
		plain = proxy.Redirect(cfg.TLS.Port)
	}
	fopts := frontend.FromConfig(cfg)
	fopts.ErrorHandler, fopts.Logger = proxy.ErrorHandler, logger
	fopts.Panics = set.NewCounter("fastlb_panics_total")
	fopts.Returned = set.NewCounter("fastlb_memory_returned_total")
	fopts.AfterBurst = a.closeIdleConnections
	fopts.Metrics, fopts.Clients = set, frontend.NewClients()
	a.servers = append(a.servers, frontend.New(plain, fopts))
	if tlsLn != nil {
		tlsOpts := fopts
		tlsOpts.HTTP2 = cfg.TLS.HTTP2
		a.servers = append(a.servers, frontend.New(a.proxy.ServeHTTP, tlsOpts))
	}
	set.NewGauge("fastlb_client_connections", func() float64 {
		n := 0
		for _, s := range a.servers {
			n += s.OpenConnections()
		}
		return float64(n)
	})
	set.NewGauge("fastlb_access_log_dropped_total", func() float64 {
		if l := a.proxy.AccessLog(); l != nil {
			return float64(l.Dropped())
		}
		return 0
	})
	recorder := stats.New(a.Pools)
	var statsCtx context.Context
	statsCtx, a.stopStats = context.WithCancel(context.Background())
	go recorder.Run(statsCtx)
	api := adminapi.New(adminapi.Options{
		Runtime: a, ConfigPath: cfgPath, Metrics: set,
		Version: version, Started: time.Now(), Logger: logger, Stats: recorder,
	})
	a.adminServer = api.NewServer()
	for _, pl := range a.pools {
		pl.run()
	}

	a.served = make(chan error, len(listeners))
	go func() { a.served <- a.servers[0].Serve(ln) }()
	if tlsLn != nil {
		go func() {
			a.served <- a.servers[1].ServeTLS(tlsLn, a.tlsListener.Config())
		}()
		if a.fleet == nil { // a fleet's keys are shared and rotated through etcd
			go a.tlsListener.RotateTicketKeys(ticketKeyInterval, a.stopTickets)
		}
	}
	go func() { a.served <- a.adminServer.Serve(frontend.RetryAccepts(adminLn, a.logger)) }()

	snap := a.pools[config.DefaultPool].up.Snapshot()
	var backends []string
	for _, b := range snap.All {
		state := "down"
		if b.Healthy() {
			state = "up"
		}
		backends = append(backends, fmt.Sprintf("%s(%s,w=%d,%s)", b.ID, b.URL, b.Weight(), state))
	}
	attrs := []any{"version", version, "listen", "http://" + ln.Addr().String()}
	if tlsLn != nil {
		attrs = append(attrs, "listen_tls", "https://"+tlsLn.Addr().String(), "redirect_http", cfg.TLS.RedirectHTTP)
	}
	attrs = append(attrs, "admin", "http://"+adminLn.Addr().String(), "strategy", cfg.Strategy,
		"sticky", cfg.Sticky.Mode, "backends", strings.Join(backends, " "),
		"healthy", fmt.Sprintf("%d/%d", len(snap.Eligible), len(snap.All)))
	if len(cfg.Pools) > 0 || len(cfg.Routes) > 0 {
		var pools []string
		for _, up := range a.Pools()[1:] {
			s := up.Snapshot()
			pools = append(pools, fmt.Sprintf("%s(%d/%d healthy)", up.Name(), len(s.Eligible), len(s.All)))
		}
		attrs = append(attrs, "pools", strings.Join(pools, " "), "routes", len(cfg.Routes))
	}
	logger.Info("fastlb serving", attrs...)
	for _, up := range a.Pools() {
		if s := up.Snapshot(); len(s.All) > 0 && len(s.Eligible) == 0 {
			logger.Warn("no backend of the pool is healthy: its requests get 503 until one is", "pool", up.Name())
		}
	}
	if os.Getenv(envReadyFD) != "" {
		// Started by a binary upgrade: take over as the unit's main process,
		// then let the old process go.
		a.notify(mainPIDState() + "\n" + a.statusLine())
		tellParentReady()
	} else {
		a.notify("READY=1\n" + a.statusLine())
	}
	go a.watchdog(a.stopWatch)
	return a, nil
}

// deadlineOf is ctx's deadline, or now when it has none.
func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now()
}

// ticketKeyInterval is how often the HTTPS listener's session ticket key is
// renewed; a ticket stays valid for three intervals.
const ticketKeyInterval = time.Hour

// logExpired logs a warning for each certificate past its end date.
func logExpired(logger *slog.Logger, cfgPath string, warnings []config.Problem) {
	for _, w := range warnings {
		logger.Warn("certificate expired; serving it anyway", "file", cfgPath, "problem", w.String())
	}
}

// fileError names the configuration file in a *config.Error (certificate
// problems come without it); other errors pass unchanged.
func fileError(path string, err error) error {
	var ce *config.Error
	if errors.As(err, &ce) {
		ce.File = path
	}
	return err
}

// Config implements adminapi.Runtime.
func (a *app) Config() *config.Config { return a.cfg.Load() }

// Pools implements adminapi.Runtime: the pools in force, the default first.
func (a *app) Pools() []*upstream.Pool { return *a.ups.Load() }

// publishPools makes a.pools, in cfg's order, what Pools returns.
func (a *app) publishPools(cfg *config.Config) {
	list := poolList(cfg, a.pools)
	a.ups.Store(&list)
	byName := a.pools
	a.byName.Store(&byName)
}

// closeIdleConnections closes every backend's idle connections, after a
// burst.
func (a *app) closeIdleConnections() {
	for _, up := range a.Pools() {
		up.CloseIdleConnections()
	}
}

// openAccessLog starts the access log, or points it at a reopened file.
func (a *app) openAccessLog(dest string) error {
	var out io.Writer
	var file *os.File
	switch dest {
	case "off":
	case "stderr":
		out = a.stderr
	default:
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return fmt.Errorf("access_log: %w", err)
		}
		out, file = f, f
	}
	switch {
	case out == nil:
		a.proxy.SetAccessLog(nil)
	case a.accessLog == nil:
		a.accessLog = proxy.NewAccessLog(out)
		a.proxy.SetAccessLog(a.accessLog)
	default:
		a.accessLog.SetOutput(out)
		a.proxy.SetAccessLog(a.accessLog)
	}
	if a.accessFile != nil {
		a.accessFile.Close()
	}
	a.accessFile = file
	return nil
}

// Exclusive implements adminapi.Runtime: fn runs while no reload runs.
func (a *app) Exclusive(fn func()) {
	a.changing.Lock()
	defer a.changing.Unlock()
	fn()
}

// Reload implements adminapi.Runtime: it re-reads the configuration file and
// applies what changed. A file that does not validate changes nothing.
func (a *app) Reload() (*adminapi.ReloadResult, error) {
	a.changing.Lock()
	defer a.changing.Unlock()
	a.notify(reloadingState())
	defer func() { a.notify("READY=1\n" + a.statusLine()) }()
	next, err := config.Load(a.cfgPath)
	if err != nil {
		return nil, err
	}
	old := a.cfg.Load()
	res := &adminapi.ReloadResult{Applied: []string{}, RestartRequired: []string{}}
	for _, k := range config.Keys {
		switch {
		case k.Same(old, next):
		case k.Reload == config.Restart:
			res.RestartRequired = append(res.RestartRequired, k.Name)
			k.Keep(next, old)
		case k.Name != "backends": // the pool reports those (res.Backends)
			res.Applied = append(res.Applied, k.Name)
		}
	}
	// Certificates are re-read on every reload (files replaced in place);
	// one that cannot be used rejects the whole reload, one past its end
	// date is served with a warning.
	problems, warnings := tlsconf.Check(next)
	if len(problems) > 0 {
		return nil, &config.Error{File: a.cfgPath, Problems: problems}
	}
	logExpired(a.logger, a.cfgPath, warnings)
	if a.tlsListener != nil && next.TLS != nil {
		certs, err := tlsconf.LoadCertificates(next.TLS)
		if err != nil {
			return nil, fileError(a.cfgPath, err)
		}
		a.tlsListener.Swap(certs)
		if !slices.Equal(next.TLS.Certificates, old.TLS.Certificates) {
			res.Applied = append(res.Applied, "tls.certificates")
		}
	}
	if next.AccessLog != old.AccessLog || next.AccessLog != "off" {
		// Reopen even when unchanged, so a rotated file is let go.
		if err := a.openAccessLog(next.AccessLog); err != nil {
			return nil, err
		}
	}
	// New pools are built and checked before anything changes; a request
	// sees the old routes and pools or the new, never a mix.
	pools := make(map[string]*pool, len(next.Pools)+1)
	var added []*pool
	for _, pc := range next.AllPools() {
		if pl := a.pools[pc.Name]; pl != nil {
			pools[pc.Name] = pl
			continue
		}
		pl := newPool(pc, next, a.backendTLS, a.logger)
		pools[pc.Name], added = pl, append(added, pl)
	}
	unwatch := a.unwatch
	settings, err := a.settings(next, pools)
	if err != nil {
		for _, pl := range added {
			pl.close(true)
		}
		return nil, err
	}
	res.Pools = map[string]upstream.Diff{}
	for _, pl := range added {
		res.Pools[pl.up.Name()] = upstream.Diff{Added: backendIDs(pl.up)}
	}
	for _, pc := range next.AllPools() {
		pl := pools[pc.Name]
		if _, isNew := res.Pools[pc.Name]; isNew {
			continue
		}
		pl.up.Configure(pc)
		pl.checker.Reconfigure(pc, next.MaxHeaderBytes)
		if a.fleet != nil {
			continue // a fleet's backends are etcd's
		}
		d := pl.up.Apply(pc.Backends, func(fresh []*upstream.Backend) {
			pl.checker.CheckAll(context.Background(), fresh)
		})
		if pc.Name == config.DefaultPool {
			res.Backends = d
		} else {
			res.Pools[pc.Name] = d
		}
	}
	a.proxy.Reconfigure(settings)
	unwatch()
	for _, s := range a.servers {
		s.SetEdge(frontend.EdgeOf(next))
	}
	for name, pl := range a.pools {
		if pools[name] == nil {
			res.Pools[name] = upstream.Diff{Removed: backendIDs(pl.up)}
			pl.close(true)
		}
	}
	for _, pl := range added {
		pl.run()
	}
	a.pools = pools
	a.publishPools(next)
	if a.fleet != nil {
		a.fleet.SetPools(next.AllPools())
	}
	setLevel(a.level, next.LogLevel)
	a.cfg.Store(next)
	return res, nil
}

// backendIDs are the ids of up's backends.
func backendIDs(up *upstream.Pool) []string {
	var ids []string
	for _, b := range up.Snapshot().All {
		ids = append(ids, b.ID)
	}
	return ids
}

// settings builds the proxy's settings for cfg over pools; the watches
// replace a.unwatch, and the caller detaches the old ones once the proxy
// no longer uses them.
func (a *app) settings(cfg *config.Config, pools map[string]*pool) (proxy.Settings, error) {
	s, unwatch, err := proxy.SettingsFor(cfg, func(name string) *upstream.Pool { return pools[name].up }, a.secret)
	if err != nil {
		return s, err
	}
	a.unwatch = unwatch
	return s, nil
}

// reloadOnSignal runs a reload for SIGHUP and logs its outcome.
func (a *app) reloadOnSignal() {
	res, err := a.Reload()
	if err != nil {
		a.logger.Error("reload refused; the configuration in force is unchanged", "file", a.cfgPath,
			"error", strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	a.logger.Info("configuration reloaded", "file", a.cfgPath,
		"added", res.Backends.Added, "removed", res.Backends.Removed, "updated", res.Backends.Updated,
		"unchanged", res.Backends.Unchanged, "applied", res.Applied)
	for name, d := range res.Pools {
		if len(d.Added)+len(d.Removed)+len(d.Updated) > 0 {
			a.logger.Info("pool reloaded", "pool", name, "added", d.Added, "removed", d.Removed, "updated", d.Updated,
				"unchanged", d.Unchanged)
		}
	}
	if len(res.RestartRequired) > 0 {
		a.logger.Warn("changed settings need a restart to take effect; their old values stay in force",
			"settings", res.RestartRequired)
	}
}

// shutdown stops accepting, lets in-flight requests finish for up to
// shutdown_timeout, closes idle connections, stops the health checks and
// the admin API, and flushes the access log. After a binary upgrade the
// listeners live on in the new process; this one only lets go of its copies.
func (a *app) shutdown() {
	close(a.stopWatch)
	ctx, cancel := context.WithTimeout(context.Background(), a.Config().ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range a.servers {
		wg.Go(func() {
			if err := s.ShutdownWithContext(ctx); err != nil {
				a.logger.Warn("shutdown_timeout elapsed with requests still in flight; closing", "error", err)
			}
		})
	}
	wg.Wait()
	// Upgraded (WebSocket) connections are not the servers' any more: give
	// them what is left of shutdown_timeout, then close them.
	if left := time.Until(deadlineOf(ctx)); left > 0 {
		a.proxy.CloseTunnels(left)
	} else {
		a.proxy.CloseTunnels(0)
	}
	close(a.stopTickets)
	a.stopStats()
	if a.fleet != nil {
		a.fleet.Close()
	}
	for _, pl := range a.pools {
		pl.close(false)
	}
	a.adminServer.Shutdown() //nolint:errcheck // the admin API has no long requests
	for range cap(a.served) {
		if err := <-a.served; err != nil {
			a.logger.Error("serving stopped with an error", "error", err)
		}
	}
	if a.accessLog != nil {
		a.accessLog.Close()
	}
	if a.accessFile != nil {
		a.accessFile.Close()
	}
	a.logger.Info("fastlb stopped")
}
