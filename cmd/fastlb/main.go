// Command fastlb is a load-balancing reverse proxy.
//
//	fastlb [-config PATH] [-check] [-version]
//
// This file is wiring only: flags, signals, and the order in which the parts
// start and stop.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"fastlb/config"
	"fastlb/tlsconf"
)

// version is what the go command stamped into the binary: the module's
// version (a tag, or a pseudo-version naming the commit), else the commit
// (with "-dirty" for a tree with uncommitted changes), else "dev", as in a
// build outside a repository or with -buildvcs=false.
var version = buildVersion()

func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	return rev[:min(len(rev), 12)] + dirty
}

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
		problems, warnings := tlsconf.Check(cfg)
		if len(problems) > 0 {
			printConfigError(stderr, *cfgPath, &config.Error{Problems: problems})
			return 1
		}
		for _, w := range warnings {
			fmt.Fprintf(stderr, "fastlb: %s: warning: %s\n", *cfgPath, w)
		}
		fmt.Fprintln(stdout, "configuration OK")
		return 0
	}

	inh, err := inherited()
	if err != nil {
		fmt.Fprintln(stderr, "fastlb:", err)
		return 1
	}
	sec, err := inheritedSecrets()
	if err != nil {
		fmt.Fprintln(stderr, "fastlb:", err)
		return 1
	}
	// Signals are caught from here on: one arriving during start-up waits.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	a, err := start(*cfgPath, cfg, stderr, inh, sec)
	if err != nil {
		printConfigError(stderr, *cfgPath, err)
		return 1
	}
	for s := range sig {
		switch s {
		case syscall.SIGHUP:
			a.reloadOnSignal()
			continue
		case syscall.SIGUSR2:
			if err := a.upgrade(); err != nil {
				a.logger.Error("binary upgrade failed; this process keeps serving", "error", err)
				continue
			}
			a.logger.Info("binary upgrade: the new process serves; finishing requests and exiting",
				"timeout", a.Config().ShutdownTimeout.String())
		default:
			a.notify("STOPPING=1")
			a.logger.Info("shutting down", "signal", s.String(), "timeout", a.Config().ShutdownTimeout.String())
		}
		signal.Stop(sig)
		a.shutdown()
		break
	}
	return 0
}

// printConfigError prints each problem of a *config.Error on a line of its
// own, naming the file; any other error on one line.
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

// setLevel sets a log level from its config name.
func setLevel(v *slog.LevelVar, level string) {
	var l slog.Level
	l.UnmarshalText([]byte(level)) //nolint:errcheck // config validated it
	v.Set(l)
}
