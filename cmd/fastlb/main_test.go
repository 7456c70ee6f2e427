package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fastlb/testbackends"
)

var binary, backendsBinary string

// TestMain builds the real fastlb binary once, as the Makefile does (with
// the race detector added); the tests run it as an operator would.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fastlb-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "fastlb")
	out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building fastlb: %v\n%s", err, out)
		os.Exit(1)
	}
	backendsBinary = filepath.Join(dir, "testbackends")
	out, err = exec.Command("go", "build", "-o", backendsBinary, "../../testbackends/cmd/testbackends").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building testbackends: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeConfig(t *testing.T, js string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runBinary(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestVersion(t *testing.T) {
	out, _, code := runBinary(t, "-version")
	// What the go command stamped into the binary, as it reports it.
	info, err := exec.Command("go", "version", "-m", binary).Output()
	if err != nil {
		t.Fatal(err)
	}
	var mod, rev, dirty string
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "mod" && f[1] == "fastlb":
			mod = f[2]
		case len(f) == 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision="):
			rev = strings.TrimPrefix(f[1], "vcs.revision=")[:12]
		case len(f) == 2 && f[0] == "build" && f[1] == "vcs.modified=true":
			dirty = "-dirty"
		}
	}
	want := "dev"
	switch {
	case mod != "" && mod != "(devel)":
		want = mod
	case rev != "":
		want = rev + dirty
	}
	if code != 0 || out != "fastlb "+want+"\n" {
		t.Errorf("-version: exit %d, %q, want %q", code, out, "fastlb "+want+"\n")
	}
}

func TestCheckShippedConfig(t *testing.T) {
	out, errOut, code := runBinary(t, "-check", "-config", "../../config.json")
	if code != 0 || out != "configuration OK\n" || errOut != "" {
		t.Errorf("-check on config.json: exit %d, out %q, err %q", code, out, errOut)
	}
}

func TestCheckReportsEveryProblem(t *testing.T) {
	p := writeConfig(t, `{"port": 0, "strategy": "fastest", "backends": ["http://a:1", {"url": "ftp://b", "weight": 5000}]}`)
	out, errOut, code := runBinary(t, "-check", "-config", p)
	if code != 1 || out != "" {
		t.Errorf("exit %d, stdout %q; want 1 and nothing", code, out)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	want := []string{"port: must be 1..65535", "strategy: unknown strategy", "backends[1].url: scheme", "backends[1].weight: must be 0..1000"}
	if len(lines) != len(want) {
		t.Fatalf("want %d lines, got:\n%s", len(want), errOut)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], "fastlb: "+p+": "+w) {
			t.Errorf("line %d = %q, want it to name %q", i, lines[i], w)
		}
	}
}

// TestStartupFailures: operator mistakes give one clear line and exit 1,
// never a panic.
func TestStartupFailures(t *testing.T) {
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	tests := []struct {
		name, config string
		args         []string
		want         string
	}{
		{"missing file", "", []string{"-config", "/nonexistent/fastlb.json"}, "fastlb: cannot read configuration: open /nonexistent/fastlb.json: no such file or directory"},
		{"bad json", `{"port": 80,}`, nil, "invalid JSON at line 1, column 13"},
		{"bad value", `{"backends": ["http://a:1"], "retries": 99}`, nil, "retries: must be 0..10, not 99"},
		{"port in use", fmt.Sprintf(`{"bind": "127.0.0.1", "port": %d, "admin_port": 1, "backends": []}`, port), nil,
			fmt.Sprintf("fastlb: cannot listen on 127.0.0.1:%d: bind: address already in use", port)},
		{"unknown flag", "", []string{"-frobnicate"}, "flag provided but not defined: -frobnicate"},
		{"public admin without token", `{"admin_bind": "0.0.0.0", "backends": []}`, nil, "admin_bind: 0.0.0.0 is not a loopback address: set admin_token or admin_token_file"},
		{"admin port in use", fmt.Sprintf(`{"bind": "127.0.0.1", "port": %d, "admin_port": %d, "backends": []}`, freePort(t), port), nil,
			fmt.Sprintf("fastlb: admin API: cannot listen on 127.0.0.1:%d: bind: address already in use", port)},
		{"access log unwritable", fmt.Sprintf(`{"bind": "127.0.0.1", "port": %d, "admin_port": %d, "access_log": "/nonexistent/dir/access.log", "backends": []}`, freePort(t), freePort(t)),
			nil, "access_log: open /nonexistent/dir/access.log: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.config != "" {
				args = append(args, "-config", writeConfig(t, tt.config))
			}
			_, errOut, code := runBinary(t, args...)
			if code == 0 || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q; want failure naming %q", code, errOut, tt.want)
			}
			if strings.Contains(errOut, "goroutine") || strings.Contains(errOut, "panic") {
				t.Errorf("stack trace for an operator mistake:\n%s", errOut)
			}
		})
	}
}

// process is a running fastlb binary.
type process struct {
	cmd       *exec.Cmd
	addr      string
	tlsAddr   string // set by tests that give it a TLS listener
	adminAddr string
	cfgPath   string
	mu        sync.Mutex
	logs      bytes.Buffer
	done      chan error
}

func (p *process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// handedOut holds the ports freePort has returned, so that one test's
// ports differ: the kernel may hand a port it has just freed out again.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// freePort returns a loopback port nothing listens on and that no earlier
// call returned.
func freePort(t *testing.T) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = make(map[int]bool)
	}
	for {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port
		}
	}
}

// startBinary runs fastlb in front of backends and waits for its
// "fastlb serving" line.
func startBinary(t *testing.T, extra string, backends ...*testbackends.Server) *process {
	t.Helper()
	return startBinaryEnv(t, nil, extra, backends...)
}

// startBinaryEnv is startBinary with extra environment variables.
func startBinaryEnv(t *testing.T, env []string, extra string, backends ...*testbackends.Server) *process {
	t.Helper()
	var urls []string
	for _, b := range backends {
		urls = append(urls, b.URL())
	}
	return startBinaryURLs(t, env, extra, urls...)
}

// startBinaryURLs is startBinaryEnv with the backends given by URL.
func startBinaryURLs(t *testing.T, env []string, extra string, backends ...string) *process {
	t.Helper()
	var urls []string
	for _, u := range backends {
		urls = append(urls, fmt.Sprintf("%q", u))
	}
	port, adminPort := freePort(t), freePort(t)
	js := fmt.Sprintf(`{"bind": "127.0.0.1", "port": %d, "admin_port": %d, "backends": [%s]%s}`, port, adminPort, strings.Join(urls, ","), extra)
	cfgPath := writeConfig(t, js)
	p := &process{cmd: exec.Command(binary, "-config", cfgPath), addr: fmt.Sprintf("127.0.0.1:%d", port),
		adminAddr: fmt.Sprintf("127.0.0.1:%d", adminPort), cfgPath: cfgPath, done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	// Its own process group, so cleanup also stops a process it started
	// (a binary upgrade's).
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 16<<20)
		once := sync.Once{}
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if strings.Contains(sc.Text(), `msg="fastlb serving"`) {
				once.Do(func() { close(ready) })
			}
		}
		// Keep reading whatever stopped the scanner: a process blocked
		// writing to a full pipe would never exit.
		io.Copy(io.Discard, stderr)
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	})
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("fastlb exited before serving: %v\n%s", err, p.Logs())
	case <-time.After(20 * time.Second):
		t.Fatalf("fastlb did not start:\n%s", p.Logs())
	}
	return p
}

func TestServesAndLogsStartup(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	p := startBinary(t, "", a)
	resp, err := http.Get("http://" + p.addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "backend a\n" {
		t.Errorf("status %d body %q", resp.StatusCode, body)
	}
	logs := p.Logs()
	if !strings.Contains(logs, "listen=http://"+p.addr) || !strings.Contains(logs, a.Addr()+"(http://"+a.Addr()+",w=1,up)") {
		t.Errorf("start line does not name listener and backends:\n%s", logs)
	}
}

func TestSIGTERMFinishesInFlightRequest(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	p := startBinary(t, `, "shutdown_timeout": "5s"`, a)
	result := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + p.addr + "/delay/500ms")
		if err != nil {
			result <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- fmt.Sprint(resp.StatusCode, " ", string(body))
	}()
	for a.Requests() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := <-result; got != "200 backend a\n" {
		t.Errorf("in-flight request across SIGTERM: %q", got)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, p.Logs())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fastlb did not exit after SIGTERM")
	}
	if !strings.Contains(p.Logs(), `msg="fastlb stopped"`) {
		t.Errorf("no stop line:\n%s", p.Logs())
	}
}

func TestShutdownTimeoutCutsLongRequests(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	p := startBinary(t, `, "shutdown_timeout": "200ms"`, a)
	go http.Get("http://" + p.addr + "/delay/5s") //nolint:errcheck
	for a.Requests() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(4 * time.Second):
		t.Fatalf("fastlb waited past shutdown_timeout (%v so far)", time.Since(start))
	}
	if !strings.Contains(p.Logs(), "shutdown_timeout elapsed") {
		t.Errorf("cut-off not logged:\n%s", p.Logs())
	}
}

// get returns the status and body of a GET to fastlb.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestReloadBySIGHUPAndAPI(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	b, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "b"})
	defer b.Close()
	p := startBinary(t, `, "admin_persist": false`, a)
	for range 3 {
		if code, body := get(t, "http://"+p.addr+"/"); code != 200 || body != "backend a\n" {
			t.Fatalf("before reload: %d %q", code, body)
		}
	}
	// A file that does not validate changes nothing.
	orig, _ := os.ReadFile(p.cfgPath)
	os.WriteFile(p.cfgPath, []byte(`{"backends": ["nope"]}`), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, `msg="reload refused; the configuration in force is unchanged"`)
	if !strings.Contains(p.Logs(), `backends[0].url: \"nope\" has no scheme`) {
		t.Errorf("refusal does not name the problem:\n%s", p.Logs())
	}
	if code, body := get(t, "http://"+p.addr+"/"); code != 200 || body != "backend a\n" {
		t.Fatalf("after a refused reload: %d %q", code, body)
	}

	// SIGHUP with b added and a port change that needs a restart.
	next := strings.Replace(string(orig), `"backends": [`, fmt.Sprintf(`"backends": [%q, `, b.URL()), 1)
	next = regexp.MustCompile(`"port": \d+`).ReplaceAllString(next, `"port": 1`)
	os.WriteFile(p.cfgPath, []byte(next), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, `msg="configuration reloaded"`)
	waitLog(t, p, `msg="changed settings need a restart to take effect; their old values stay in force" settings=[port]`)
	seen := map[string]bool{}
	for range 20 {
		_, body := get(t, "http://"+p.addr+"/")
		seen[body] = true
	}
	if !seen["backend a\n"] || !seen["backend b\n"] {
		t.Errorf("after reload: answers %v, want both backends", seen)
	}

	// The API reload removes a and keeps b with its counters.
	code, before := get(t, "http://"+p.adminAddr+"/api/v1/backends/"+b.Addr())
	if code != 200 || !strings.Contains(before, `"requests_total": 10`) {
		t.Fatalf("b before API reload: %d %s", code, before)
	}
	// Outlier detection and slow start change with it.
	last := strings.Replace(next, fmt.Sprintf(`, %q`, a.URL()), "", 1)
	last = strings.Replace(last, `"backends": [`, `"outlier": {"consecutive_5xx": 0}, "slow_start": "2s", "backends": [`, 1)
	os.WriteFile(p.cfgPath, []byte(last), 0o600)
	resp, err := http.Post("http://"+p.adminAddr+"/api/v1/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"removed": [`) || !strings.Contains(string(body), `"unchanged": 1`) ||
		!strings.Contains(string(body), `"outlier"`) || !strings.Contains(string(body), `"slow_start"`) {
		t.Fatalf("API reload: %d %s", resp.StatusCode, body)
	}
	if _, view := get(t, "http://"+p.adminAddr+"/api/v1/config"); !strings.Contains(view, `"slow_start": "2s"`) || !strings.Contains(view, `"consecutive_5xx": 0`) {
		t.Errorf("the configuration in force after the reload: %s", view)
	}
	for range 5 {
		if _, body := get(t, "http://"+p.addr+"/"); body != "backend b\n" {
			t.Fatalf("after removing a: %q", body)
		}
	}
	if _, after := get(t, "http://"+p.adminAddr+"/api/v1/backends/"+b.Addr()); !strings.Contains(after, `"requests_total": 15`) {
		t.Errorf("b lost its counters over the reload: %s", after)
	}
}

func waitLog(t *testing.T, p *process, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Logs(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in:\n%s", want, p.Logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAdminAPIAndAccessLogFile(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	logPath := filepath.Join(t.TempDir(), "access.log")
	p := startBinary(t, fmt.Sprintf(`, "access_log": %q, "admin_token": "tok"`, logPath), a)
	get(t, "http://"+p.addr+"/echo?x=1")
	if code, _ := get(t, "http://"+p.adminAddr+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := get(t, "http://"+p.adminAddr+"/api/v1/status"); code != 401 {
		t.Errorf("status without token: %d", code)
	}
	req, _ := http.NewRequest("GET", "http://"+p.adminAddr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metricsOut, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`fastlb_requests_total{pool="default",backend=%q,code="200"} 1`, a.Addr()),
		fmt.Sprintf(`fastlb_backend_up{pool="default",backend=%q} 1`, a.Addr()),
		"fastlb_client_connections ", "fastlb_no_backend_total 0", "fastlb_retries_total 0",
		"process_resident_memory_bytes", "go_goroutines",
	} {
		if !strings.Contains(string(metricsOut), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	data, _ := os.ReadFile(logPath)
	if !strings.Contains(string(data), `"method":"GET","uri":"/echo?x=1","status":200,"backend":"`+a.Addr()+`"`) {
		t.Errorf("access log:\n%s", data)
	}
}

// TestAdminChangesSurviveReloads: with admin_persist, every change the
// admin API answers 2xx is live and in the file, however SIGHUPs fall
// between a change and its write-back.
func TestAdminChangesSurviveReloads(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	p := startBinary(t, `, "admin_persist": true`, a)
	stop := make(chan struct{})
	var hups sync.WaitGroup
	hups.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			p.cmd.Process.Signal(syscall.SIGHUP)
			time.Sleep(time.Millisecond)
		}
	})
	var added []string
	for i := range 40 {
		id := fmt.Sprintf("added-%d", i)
		body := fmt.Sprintf(`{"url": "http://127.0.0.1:%d", "id": %q}`, 20000+i, id)
		resp, err := http.Post("http://"+p.adminAddr+"/api/v1/backends", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("POST %s: %d", id, resp.StatusCode)
		}
		added = append(added, id)
	}
	close(stop)
	hups.Wait()
	// One more reload, answered once done: the file is what is in force.
	resp, err := http.Post("http://"+p.adminAddr+"/api/v1/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, live := get(t, "http://"+p.adminAddr+"/api/v1/backends")
	file, _ := os.ReadFile(p.cfgPath)
	var lost []string
	for _, id := range added {
		if !strings.Contains(live, `"id": "`+id+`"`) || !strings.Contains(string(file), `"id": "`+id+`"`) {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d backends added (201) are not live and in the file: %v", len(lost), len(added), lost)
	}
}
