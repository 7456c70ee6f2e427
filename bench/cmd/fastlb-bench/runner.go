package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"fastlb/bench/loadgen"
)

// Result is one target's measurement in one scenario.
type Result struct {
	Scenario   string  `json:"scenario"`
	Target     string  `json:"target"`
	Skipped    string  `json:"skipped,omitempty"`
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	RPS        float64 `json:"rps"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	P999ms     float64 `json:"p999_ms"`
	CPUPer100k float64 `json:"cpu_seconds_per_100k,omitempty"`
	PeakRSSMiB float64 `json:"peak_rss_mib,omitempty"`
	VsDirect   float64 `json:"rps_vs_direct,omitempty"`
	VsHAProxy  float64 `json:"rps_vs_haproxy,omitempty"`
	// CPU per request against HAProxy's in the same scenario: below 1 is
	// less. At a fixed rate, where every target serves the same requests/s,
	// this is the comparison that tells.
	CPUVsHAProxy float64 `json:"cpu_vs_haproxy,omitempty"`
	// Idle-connection scenario only: memory per idle client connection.
	KiBPerConn float64 `json:"kib_per_idle_conn,omitempty"`
	// The rounds' own figures, in the order they ran, when there were
	// several: how far apart they are shows how noisy the machine was.
	Rounds []Round `json:"rounds,omitempty"`
}

// Round is one round's figures of a target in a scenario.
type Round struct {
	RPS        float64 `json:"rps"`
	P99ms      float64 `json:"p99_ms"`
	CPUPer100k float64 `json:"cpu_seconds_per_100k,omitempty"`
	Errors     int64   `json:"errors"`
}

type runner struct {
	options
	mu    sync.Mutex
	procs []*exec.Cmd
}

// start runs a command (pinned to cpu when >= 0) and remembers it for stopAll.
func (r *runner) start(cpu int, env []string, name string, args ...string) (*exec.Cmd, error) {
	if cpu >= 0 {
		args = append([]string{"-c", strconv.Itoa(cpu), name}, args...)
		name = "taskset"
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = nil, nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.procs = append(r.procs, cmd)
	r.mu.Unlock()
	return cmd, nil
}

func (r *runner) stop(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

func (r *runner) stopAll() {
	r.mu.Lock()
	procs := r.procs
	r.procs = nil
	r.mu.Unlock()
	for _, p := range procs {
		if p.ProcessState == nil {
			r.stop(p)
		}
	}
}

// waitPort waits until addr accepts connections.
func waitPort(addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s does not accept connections", addr)
}

// cpuSeconds is the user+system CPU time of a process, from /proc.
func cpuSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// memKiB reads a field such as VmHWM or VmRSS of /proc/PID/status.
func memKiB(pid int, field string) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			return n
		}
	}
	return 0
}

const (
	firstBackendPort = 19401
	fastlbPort       = 19300
	haproxyPort      = 19301
	nginxPort        = 19302
	adminPort        = 19399
)

// turnWarmup is how long each turn sends before its measurement starts,
// the time its connections take to open and settle (2,000 connections
// opened in about 0.1 s here).
const turnWarmup = 250 * time.Millisecond

func (r *runner) runAll() []Result {
	var all []Result
	want := map[string]bool{}
	for _, n := range strings.Split(r.only, ",") {
		if n != "" {
			want[n] = true
		}
	}
	for _, sc := range scenarios() {
		if len(want) > 0 && !want[sc.name] || len(want) == 0 && r.quick && !sc.quick {
			continue
		}
		fmt.Fprintf(os.Stderr, "scenario %s\n", sc.name)
		res := r.runScenario(sc)
		all = append(all, res...)
		for _, x := range res {
			if x.Skipped != "" {
				fmt.Fprintf(os.Stderr, "  %-8s %s\n", x.Target, x.Skipped)
			} else {
				fmt.Fprintf(os.Stderr, "  %-8s %9.0f req/s  p99 %7.2f ms  errors %d %s\n", x.Target, x.RPS, x.P99ms, x.Errors, x.FirstError)
			}
		}
	}
	return all
}

func (r *runner) runScenario(sc scenario) []Result {
	n := sc.backends
	if n == 0 {
		n = 2
	}
	var ports []string
	for i := range n {
		ports = append(ports, strconv.Itoa(firstBackendPort+i))
	}
	args := []string{"-ports", strings.Join(ports, ","), "-latency", sc.latency.String(), "-size", strconv.Itoa(sc.size)}
	be, err := r.start(-1, nil, filepath.Join(r.bin, "testbackends"), args...)
	if err != nil {
		return []Result{{Scenario: sc.name, Target: "all", Skipped: "cannot start backends: " + err.Error()}}
	}
	defer r.stop(be)
	for _, p := range ports {
		if err := waitPort("127.0.0.1:" + p); err != nil {
			return []Result{{Scenario: sc.name, Target: "all", Skipped: err.Error()}}
		}
	}
	// Every target runs from the start, idle but for its turn, so that the
	// rounds can take them in turn: this machine's speed drifts over
	// seconds, and a figure is the median of its rounds.
	var targets []*target
	for _, name := range strings.Split(r.targets, ",") {
		t := r.startTarget(sc, name, ports)
		if t.proxy != nil {
			defer r.stop(t.proxy)
		}
		targets = append(targets, t)
	}
	rounds := r.rounds
	if sc.idle > 0 {
		rounds = 1
	}
	for round := range rounds {
		for _, t := range targets {
			if t.skipped == "" {
				t.rounds = append(t.rounds, r.measure(sc, t, ports, round == 0))
			}
		}
	}
	var results []Result
	for _, t := range targets {
		res := Result{Skipped: t.skipped}
		if t.skipped == "" {
			res = combine(t.rounds)
		}
		res.Scenario, res.Target = sc.name, t.name
		results = append(results, res)
	}
	compare(results)
	return results
}

// compare sets each proxy's ratios in one scenario's results: requests/s
// against the direct target's and HAProxy's, and CPU per request against
// HAProxy's. A ratio stays 0 (shown as "-") where either side is missing.
func compare(results []Result) {
	var direct, haproxy *Result
	for i := range results {
		if results[i].Skipped != "" {
			continue
		}
		switch results[i].Target {
		case "direct":
			direct = &results[i]
		case "haproxy":
			haproxy = &results[i]
		}
	}
	ratio := func(a, b float64) float64 {
		if a == 0 || b == 0 {
			return 0
		}
		return a / b
	}
	for i := range results {
		r := &results[i]
		if r.Skipped != "" || r.Target == "direct" {
			continue
		}
		if direct != nil {
			r.VsDirect = ratio(r.RPS, direct.RPS)
		}
		if haproxy != nil && r != haproxy {
			r.VsHAProxy = ratio(r.RPS, haproxy.RPS)
			r.CPUVsHAProxy = ratio(r.CPUPer100k, haproxy.CPUPer100k)
		}
	}
}

// target is one way to reach the backends in a scenario: directly or
// through a proxy, with its rounds' measurements.
type target struct {
	name    string
	proxy   *exec.Cmd // nil for direct
	addr    string
	skipped string // why it is not measured
	rounds  []Result
}

// startTarget starts the proxy of one target for a scenario and waits
// until it serves.
func (r *runner) startTarget(sc scenario, name string, ports []string) *target {
	t := &target{name: name, addr: "127.0.0.1:" + ports[0]}
	var err error
	switch name {
	case "direct":
		switch {
		case sc.https:
			t.skipped = "backends speak plain HTTP"
		case sc.h2 && !installed("h2load"):
			t.skipped = "h2load is not installed"
		case sc.idle > 0:
			t.skipped = "measures proxies only"
		}
		return t
	case "fastlb":
		t.proxy, t.addr, err = r.startFastlb(sc, ports, filepath.Join(r.bin, "fastlb"), 0)
	case "fastlb-base":
		if r.base == "" {
			t.skipped = "no -base binary"
			return t
		}
		t.proxy, t.addr, err = r.startFastlb(sc, ports, r.base, 1000)
	case "haproxy":
		if !installed("haproxy") {
			t.skipped = "not installed"
			return t
		}
		t.proxy, t.addr, err = r.startHAProxy(sc, ports)
	case "nginx":
		if !installed("nginx") {
			t.skipped = "not installed"
			return t
		}
		if sc.nginx == "-" {
			t.skipped = "no equivalent in nginx's open source edition"
			return t
		}
		t.proxy, t.addr, err = r.startNginx(sc, ports)
	default:
		t.skipped = "unknown target"
		return t
	}
	if err == nil {
		err = waitPort(t.addr)
	}
	if err != nil {
		t.skipped = err.Error()
		return t
	}
	time.Sleep(200 * time.Millisecond) // first health checks
	return t
}

// combine makes one result of a target's rounds: requests and errors
// summed, rates, latencies and CPU per request the median of the rounds,
// the peak RSS the largest; each round's own figures are kept in Rounds.
func combine(rounds []Result) Result {
	out := rounds[0]
	if len(rounds) == 1 {
		return out
	}
	median := func(get func(Result) float64) float64 {
		v := make([]float64, len(rounds))
		for i, x := range rounds {
			v[i] = get(x)
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	out.Requests, out.Errors = 0, 0
	out.Rounds = make([]Round, len(rounds))
	for i, x := range rounds {
		out.Rounds[i] = Round{RPS: x.RPS, P99ms: x.P99ms, CPUPer100k: x.CPUPer100k, Errors: x.Errors}
		out.Requests += x.Requests
		out.Errors += x.Errors
		out.PeakRSSMiB = max(out.PeakRSSMiB, x.PeakRSSMiB)
		if out.FirstError == "" {
			out.FirstError = x.FirstError
		}
	}
	out.RPS = median(func(x Result) float64 { return x.RPS })
	out.P50ms = median(func(x Result) float64 { return x.P50ms })
	out.P99ms = median(func(x Result) float64 { return x.P99ms })
	out.P999ms = median(func(x Result) float64 { return x.P999ms })
	out.CPUPer100k = median(func(x Result) float64 { return x.CPUPer100k })
	return out
}

// h2load loads t over HTTP/2 with h2load, 10 connections of 10 streams,
// for one round; h2load reports no percentiles, so the latency columns of
// its rows are empty.
func (r *runner) h2load(t *target, first bool) Result {
	url := "https://" + t.addr + "/"
	if first {
		// Warm up (connections, the proxy's pools) apart, unmeasured.
		exec.Command("h2load", "-c", "10", "-m", "10", "-n", "5000", url).Run() //nolint:errcheck // the measured run reports
	}
	d := r.duration / time.Duration(r.rounds)
	cmd := exec.Command("h2load", "-c", "10", "-m", "10", "-D", fmt.Sprint(max(int(d.Seconds()), 1)), url)
	var cpu0 float64
	if t.proxy != nil {
		cpu0 = cpuSeconds(t.proxy.Process.Pid)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Result{Errors: 1, FirstError: fmt.Sprintf("h2load: %v: %s", err, out)}
	}
	var res Result
	for line := range strings.SplitSeq(string(out), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "finished in"):
			if _, rps, ok := strings.Cut(line, ", "); ok {
				fmt.Sscanf(rps, "%f req/s", &res.RPS)
			}
		case strings.HasPrefix(line, "requests:"):
			var total, started, done, ok, failed, errored int64
			fmt.Sscanf(line, "requests: %d total, %d started, %d done, %d succeeded, %d failed, %d errored",
				&total, &started, &done, &ok, &failed, &errored)
			res.Requests, res.Errors = ok, failed+errored
		}
	}
	if t.proxy != nil && res.Requests > 0 {
		// Connecting is in it too: a little high, the same way for every
		// target.
		res.CPUPer100k = (cpuSeconds(t.proxy.Process.Pid) - cpu0) / float64(res.Requests) * 100000
		res.PeakRSSMiB = memKiB(t.proxy.Process.Pid, "VmHWM") / 1024
	}
	return res
}

// measure loads one target for one round of a scenario.
func (r *runner) measure(sc scenario, t *target, ports []string, first bool) Result {
	if sc.idle > 0 {
		return r.idleConns(sc, t.proxy.Process.Pid, t.addr)
	}
	if sc.h2 {
		return r.h2load(t, first)
	}
	cfg := sc.load
	cfg.Addr, cfg.HTTPS, cfg.Duration = t.addr, sc.https, r.duration/time.Duration(r.rounds)
	// Each turn opens its connections anew: their first requests are not
	// measured. The first round's warm-up is longer, to fill the proxy's
	// connection pools as well.
	cfg.Warmup = turnWarmup
	if first {
		cfg.Warmup += r.duration / 10
	}
	// Every turn starts with this process's heap collected, so that no
	// turn pays for another's garbage: a turn allocates about 14 MB (a
	// client and a latency histogram per connection), and when the
	// collector ran was otherwise a matter of where the previous turns
	// had left the heap. (Measured on small GETs with fastlb and HAProxy
	// in turn, ten runs each way, interleaved: fastlb's ratio to HAProxy
	// 1.02x without this and 1.00x with it, within this machine's noise.)
	runtime.GC()
	var cpu0 float64
	if t.proxy != nil {
		cfg.Measuring = func() { cpu0 = cpuSeconds(t.proxy.Process.Pid) }
	}
	stopChurn := make(chan struct{})
	churned := make(chan int)
	switch {
	case sc.churn && t.name == "fastlb":
		go func() { churned <- churn(adminPort, ports, stopChurn) }()
	case sc.churn && t.name == "fastlb-base":
		go func() { churned <- churn(adminPort+1000, ports, stopChurn) }()
	case sc.churn && t.name == "haproxy":
		go func() { churned <- churnHAProxy(r.haproxySocket(), ports, stopChurn) }()
	default:
		close(churned)
	}
	res, err := loadgen.Run(cfg)
	close(stopChurn)
	changes := <-churned
	if err != nil {
		return Result{Errors: 1, FirstError: err.Error()}
	}
	out := Result{
		Requests: res.Requests, Errors: res.Errors, FirstError: res.FirstErr, RPS: res.RPS(),
		P50ms:  float64(res.Percentile(50).Microseconds()) / 1000,
		P99ms:  float64(res.Percentile(99).Microseconds()) / 1000,
		P999ms: float64(res.Percentile(99.9).Microseconds()) / 1000,
	}
	if t.proxy != nil && res.Requests > 0 {
		out.CPUPer100k = (cpuSeconds(t.proxy.Process.Pid) - cpu0) / float64(res.Requests) * 100000
		out.PeakRSSMiB = memKiB(t.proxy.Process.Pid, "VmHWM") / 1024
	}
	if changes > 0 && out.FirstError == "" {
		out.FirstError = fmt.Sprintf("(%d admin changes during the run)", changes)
	}
	return out
}
