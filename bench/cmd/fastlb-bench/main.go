// Command fastlb-bench runs fastlb's end-to-end benchmark scenarios: each
// against a backend directly (the ceiling), through fastlb, and through
// HAProxy and nginx when they are installed, with the same meaning. It
// prints one table and writes JSON, Markdown and a chart under -out.
//
// Each proxy runs pinned to -proxy-cpu with one core's worth of workers
// (fastlb GOMAXPROCS=1, HAProxy nbthread 1, nginx worker_processes 1 in a
// single process); run this command pinned to the other CPUs (make bench
// does). Every process it starts is stopped before it exits.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory holding fastlb, testbackends and fastlb-certs")
	flag.StringVar(&o.out, "out", "bench/results", "directory for the results")
	flag.IntVar(&o.proxyCPU, "proxy-cpu", 0, "CPU the proxies are pinned to")
	flag.BoolVar(&o.quick, "quick", false, "a short run: fewer scenarios, shorter measurements")
	flag.StringVar(&o.only, "only", "", "comma-separated scenario names to run (default: all)")
	flag.StringVar(&o.targets, "targets", "direct,fastlb,haproxy,nginx", "targets to measure")
	flag.DurationVar(&o.duration, "duration", 0, "measurement per target, split over the rounds (default 12s, 3s with -quick)")
	flag.IntVar(&o.rounds, "rounds", 0, "rounds per scenario, each loading every target in turn; figures are the rounds' medians (default 8, 3 with -quick)")
	flag.StringVar(&o.unit, "unit", "deploy/fastlb.service", "systemd unit whose Environment= settings fastlb runs with, as installed (\"\" for none)")
	flag.StringVar(&o.base, "base", "", "another fastlb binary, measured as target fastlb-base beside fastlb (to compare two builds in one run)")
	flag.Parse()
	if o.base != "" && !strings.Contains(o.targets, "fastlb-base") {
		o.targets = strings.Replace(o.targets, "fastlb", "fastlb,fastlb-base", 1)
	}
	switch {
	case o.rounds < 0:
		fatal(fmt.Errorf("-rounds must be at least 1, not %d", o.rounds))
	case o.rounds == 0 && o.quick:
		o.rounds = 3
	case o.rounds == 0:
		o.rounds = 8
	}
	if o.duration == 0 {
		o.duration = 12 * time.Second
		if o.quick {
			o.duration = 3 * time.Second
		}
	}
	if o.unit != "" {
		env, err := unitEnvironment(o.unit)
		if err != nil {
			fatal(err)
		}
		o.unitEnv = env
	}
	work, err := os.MkdirTemp("", "fastlb-bench")
	if err != nil {
		fatal(err)
	}
	o.work = work
	r := &runner{options: o}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		r.stopAll()
		os.RemoveAll(work)
		os.Exit(130)
	}()
	results := r.runAll()
	r.stopAll()
	os.RemoveAll(work)
	if err := write(o.out, results); err != nil {
		fatal(err)
	}
}

type options struct {
	bin, out, work, only, targets string
	base                          string // another fastlb binary, or ""
	unit                          string
	unitEnv                       []string // the unit's Environment= settings
	proxyCPU, rounds              int
	quick                         bool
	duration                      time.Duration
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "fastlb-bench:", err)
	os.Exit(1)
}

// installed reports whether a peer proxy's binary is on PATH.
func installed(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// write saves the results as JSON and Markdown and draws the chart.
func write(dir string, results []Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102-150405")
	data, _ := json.MarshalIndent(results, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "results-"+stamp+".json"), data, 0o644); err != nil {
		return err
	}
	md := markdown(results)
	if err := os.WriteFile(filepath.Join(dir, "results-"+stamp+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	chart := filepath.Join(dir, "results-"+stamp+".png")
	if err := drawChart(results, chart); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	fmt.Print("\n" + md)
	fmt.Printf("\nwrote %s/results-%s.{json,md,png}\n", dir, stamp)
	return nil
}

func markdown(results []Result) string {
	var b strings.Builder
	b.WriteString("| scenario | target | req/s | p50 ms | p99 ms | p99.9 ms | errors | CPU s/100k req | peak RSS MiB | KiB/idle conn | vs direct | vs HAProxy | CPU vs HAProxy |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		if r.Skipped != "" {
			fmt.Fprintf(&b, "| %s | %s | %s | | | | | | | | | | |\n", r.Scenario, r.Target, r.Skipped)
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f | %.2f | %.2f | %d | %s | %s | %s | %s | %s | %s |\n",
			r.Scenario, r.Target, r.RPS, r.P50ms, r.P99ms, r.P999ms, r.Errors,
			optional(r.CPUPer100k, "%.2f"), optional(r.PeakRSSMiB, "%.1f"), optional(r.KiBPerConn, "%.1f"),
			optional(r.VsDirect, "%.2f"), optional(r.VsHAProxy, "%.2f"), optional(r.CPUVsHAProxy, "%.2f"))
	}
	return b.String()
}

func optional(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// unitEnvironment returns the Environment= settings of the systemd unit at
// path, so that fastlb is measured as the unit runs it. Only the plain
// form is read: one NAME=value per line, unquoted.
func unitEnvironment(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env []string
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Environment="); ok {
			env = append(env, strings.Fields(v)...)
		}
	}
	return env, nil
}
