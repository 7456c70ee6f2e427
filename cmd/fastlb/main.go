// Command fastlb is a load-balancing reverse proxy.
//
//	fastlb [-config PATH] [-check] [-version]
//
// This file is wiring only: flags, signals, and the order in which the parts
// start and stop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/valyala/fasthttp"

	"fastlb/balancer"
	"fastlb/config"
	"fastlb/healthcheck"
	"fastlb/proxy"
	"fastlb/upstream"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its inputs and outputs passed in; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fastlb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "config.json", "configuration file")
	check := fs.Bool("check", false, "validate the configuration, print the result and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fastlb: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "fastlb", version)
		return 0
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		printConfigError(stderr, *cfgPath, err)
		return 1
	}
	if *check {
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	}

	logger := newLogger(stderr, cfg.LogLevel)
	a, err := start(cfg, logger)
	if err != nil {
		fmt.Fprintln(stderr, "fastlb:", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	s := <-sig
	signal.Stop(sig)
	logger.Info("shutting down", "signal", s.String(), "timeout", cfg.ShutdownTimeout.String())
	a.shutdown()
	return 0
}

func printConfigError(w io.Writer, path string, err error) {
	var ce *config.Error
	if !errors.As(err, &ce) {
		fmt.Fprintln(w, "fastlb:", err)
		return
	}
	for _, p := range ce.Problems {
		fmt.Fprintf(w, "fastlb: %s: %s\n", path, p)
	}
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level)) //nolint:errcheck // config validated it
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// app is a running fastlb.
type app struct {
	cfg    *config.Config
	logger *slog.Logger
	pool   *upstream.Pool
	server *fasthttp.Server
	ln     net.Listener
	served chan error
	stopHC context.CancelFunc
	hcDone chan struct{}
}

// start builds every part, runs a first round of health checks, and serves.
func start(cfg *config.Config, logger *slog.Logger) (*app, error) {
	policy, err := balancer.New(cfg.Strategy)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(cfg.Bind, strconv.Itoa(cfg.Port))
	network := "tcp4"
	if strings.Contains(cfg.Bind, ":") {
		network = "tcp6"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			err = opErr.Err
		}
		return nil, fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	pool := upstream.NewPool(cfg.Backends, upstream.Options{
		Client: upstream.ClientOptions{ConnectTimeout: cfg.ConnectTimeout, MaxHeaderBytes: cfg.MaxHeaderBytes},
		Rise:   cfg.HealthCheck.Rise,
		Fall:   cfg.HealthCheck.Fall,
		Logger: logger,
	})
	pool.Watch(policy.Update)
	p := proxy.New(pool, policy, proxy.Options{BackendTimeout: cfg.BackendTimeout, Retries: cfg.Retries, Logger: logger})

	hc := healthcheck.New(pool, cfg)
	hcCtx, stopHC := context.WithCancel(context.Background())
	hc.RunOnce(hcCtx)
	a := &app{
		cfg: cfg, logger: logger, pool: pool, ln: ln, stopHC: stopHC,
		server: proxy.NewServer(p.ServeHTTP, cfg, logger),
		served: make(chan error, 1),
		hcDone: make(chan struct{}),
	}
	go func() { hc.Run(hcCtx); close(a.hcDone) }()
	go func() { a.served <- a.server.Serve(ln) }()

	snap := pool.Snapshot()
	var backends []string
	for _, b := range snap.All {
		state := "down"
		if b.Healthy() {
			state = "up"
		}
		backends = append(backends, fmt.Sprintf("%s(%s,w=%d,%s)", b.ID, b.URL, b.Weight(), state))
	}
	logger.Info("fastlb serving", "version", version, "listen", "http://"+ln.Addr().String(),
		"strategy", cfg.Strategy, "backends", strings.Join(backends, " "),
		"healthy", fmt.Sprintf("%d/%d", len(snap.Eligible), len(snap.All)))
	if len(snap.Eligible) == 0 {
		logger.Warn("no backend is healthy: requests get 503 until one is")
	}
	return a, nil
}

// shutdown stops accepting, lets in-flight requests finish for up to
// shutdown_timeout, closes idle connections and stops the health checks.
func (a *app) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	if err := a.server.ShutdownWithContext(ctx); err != nil {
		a.logger.Warn("shutdown_timeout elapsed with requests still in flight; closing", "error", err)
	}
	a.stopHC()
	<-a.hcDone
	a.pool.Close()
	if err := <-a.served; err != nil {
		a.logger.Error("serving stopped with an error", "error", err)
	}
	a.logger.Info("fastlb stopped")
}
