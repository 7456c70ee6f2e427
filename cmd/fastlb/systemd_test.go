package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"fastlb/testbackends"
)

// notifySocket is a real unix datagram socket standing in for systemd's.
type notifySocket struct {
	path string
	conn *net.UnixConn
	msgs chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, conn: conn, msgs: make(chan string, 1000)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

// next returns the next message other than a watchdog ping.
func (n *notifySocket) next(t *testing.T) string {
	t.Helper()
	for {
		select {
		case m := <-n.msgs:
			if !strings.HasPrefix(m, "WATCHDOG=1") {
				return m
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no notification from fastlb")
		}
	}
}

func TestSystemdNotify(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	sock := newNotifySocket(t)
	p := startBinaryEnv(t, []string{"NOTIFY_SOCKET=" + sock.path, "WATCHDOG_USEC=300000"}, "", a)

	ready := sock.next(t)
	if !strings.HasPrefix(ready, "READY=1\nSTATUS=serving on "+p.addr+"; 1/1 backends healthy") {
		t.Errorf("first notification %q", ready)
	}
	pings := 0
	deadline := time.After(2 * time.Second)
	for pings < 3 {
		select {
		case m := <-sock.msgs:
			if strings.HasPrefix(m, "WATCHDOG=1") {
				pings++
			}
		case <-deadline:
			t.Fatalf("%d watchdog pings in 2 s with WatchdogSec=0.3s", pings)
		}
	}

	p.cmd.Process.Signal(syscall.SIGHUP)
	if m := sock.next(t); !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=\d+$`).MatchString(m) {
		t.Errorf("on SIGHUP: %q, want RELOADING=1 with MONOTONIC_USEC", m)
	}
	if m := sock.next(t); !strings.HasPrefix(m, "READY=1\n") {
		t.Errorf("after the reload: %q, want READY=1", m)
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if m := sock.next(t); m != "STOPPING=1" {
		t.Errorf("on SIGTERM: %q, want STOPPING=1", m)
	}
	if err := <-p.done; err != nil {
		t.Errorf("exit: %v", err)
	}
}

// finishLoad stops l and fails the test if any request failed.
func finishLoad(t *testing.T, l *testbackends.Load) {
	t.Helper()
	sent, failed, first := l.Stop()
	if failed != 0 {
		t.Errorf("%d of %d requests failed; first: %s", failed, sent, first)
	}
	if sent < 100 {
		t.Errorf("only %d requests sent", sent)
	}
	t.Logf("%d requests, %d failed", sent, failed)
}

func TestSIGHUPUnderLoad(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	b, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "b"})
	defer b.Close()
	p := startBinary(t, "", a)
	orig, _ := os.ReadFile(p.cfgPath)
	l := testbackends.StartLoad("http://"+p.addr+"/", 8)
	for i := range 10 {
		// Alternate between backend sets: a alone, b alone.
		cfg := string(orig)
		if i%2 == 0 {
			cfg = strings.Replace(cfg, fmt.Sprintf("%q", a.URL()), fmt.Sprintf("%q", b.URL()), 1)
		}
		os.WriteFile(p.cfgPath, []byte(cfg), 0o600)
		p.cmd.Process.Signal(syscall.SIGHUP)
		waitLogCount(t, p, `msg="configuration reloaded"`, i+1)
		time.Sleep(50 * time.Millisecond)
	}
	finishLoad(t, l)
	if a.Requests() == 0 || b.Requests() == 0 {
		t.Errorf("the reloads did not switch backends: a %d, b %d", a.Requests(), b.Requests())
	}
}

func waitLogCount(t *testing.T, p *process, want string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.Logs(), want) < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d %s in:\n%s", n, want, p.Logs())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func statusPID(t *testing.T, adminAddr string) int {
	t.Helper()
	_, body := get(t, "http://"+adminAddr+"/api/v1/status")
	var s struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("status: %v: %s", err, body)
	}
	return s.PID
}

// processGone reports whether process pid has exited: it no longer exists,
// or it is a zombie nobody has reaped (a process started by an upgrade is
// not the test's child).
func processGone(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// "pid (comm) state ...": the state follows the last parenthesis.
	rest := stat[bytes.LastIndexByte(stat, ')')+1:]
	return len(bytes.TrimSpace(rest)) > 0 && bytes.TrimSpace(rest)[0] == 'Z'
}

// TestSIGUSR2UpgradeUnderLoad: four binary upgrades in a row, each of the
// process the last one started, while 32 clients send requests on
// keep-alive connections as fast as they are answered (a client that,
// like wrk, never sends a request again): not one may fail.
func TestSIGUSR2UpgradeUnderLoad(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	sock := newNotifySocket(t)
	p := startBinaryEnv(t, []string{"NOTIFY_SOCKET=" + sock.path}, `, "shutdown_timeout": "5s"`, a)
	sock.next(t) // READY=1
	oldPID := p.cmd.Process.Pid
	if got := statusPID(t, p.adminAddr); got != oldPID {
		t.Fatalf("status pid %d, process %d", got, oldPID)
	}

	// A new binary that cannot start leaves the old one serving.
	orig, _ := os.ReadFile(p.cfgPath)
	os.WriteFile(p.cfgPath, []byte(`{"port": "broken"}`), 0o600)
	p.cmd.Process.Signal(syscall.SIGUSR2)
	waitLog(t, p, `msg="binary upgrade failed; this process keeps serving"`)
	if code, _ := get(t, "http://"+p.addr+"/"); code != 200 {
		t.Fatalf("after a failed upgrade: %d", code)
	}
	os.WriteFile(p.cfgPath, orig, 0o600)

	l := testbackends.StartLoad("http://"+p.addr+"/", 32)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGUSR2)
	if m := sock.next(t); !regexp.MustCompile(`^MAINPID=\d+\nREADY=1\n`).MatchString(m) || strings.Contains(m, fmt.Sprintf("MAINPID=%d\n", oldPID)) {
		t.Errorf("the new process sent %q, want MAINPID=<its pid> and READY=1", m)
	}
	// The new process keeps the old one's stderr open, so wait for the old
	// process itself rather than for its output to end.
	exited := make(chan *os.ProcessState, 1)
	go func() {
		st, _ := p.cmd.Process.Wait()
		exited <- st
	}()
	select {
	case st := <-exited:
		if st == nil || st.ExitCode() != 0 {
			t.Errorf("old process exit: %v", st)
		}
	case <-time.After(20 * time.Second):
		p.cmd.Process.Signal(syscall.SIGQUIT) // its goroutines, in the log below
		time.Sleep(time.Second)
		t.Fatalf("the old process did not exit after the upgrade; the log of both:\n%s", p.Logs())
	}
	t.Logf("upgrade: old process gone %v after SIGUSR2", time.Since(start).Round(time.Millisecond))
	newPID := statusPID(t, p.adminAddr)
	if newPID == oldPID || newPID == 0 {
		t.Fatalf("status pid after upgrade: %d (old %d)", newPID, oldPID)
	}
	// Three more, each of the process the last one started.
	for range 3 {
		oldPID = newPID
		start := time.Now()
		syscall.Kill(oldPID, syscall.SIGUSR2)
		sock.next(t) // MAINPID and READY=1 of the new one
		deadline := time.Now().Add(20 * time.Second)
		for !processGone(oldPID) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d did not exit after the upgrade:\n%s", oldPID, p.Logs())
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("upgrade: old process gone %v after SIGUSR2", time.Since(start).Round(time.Millisecond))
		if newPID = statusPID(t, p.adminAddr); newPID == oldPID {
			t.Fatalf("status pid %d unchanged after an upgrade", newPID)
		}
	}
	time.Sleep(200 * time.Millisecond)
	finishLoad(t, l)
	if proc, err := os.FindProcess(newPID); err == nil {
		proc.Signal(syscall.SIGTERM)
		deadline := time.Now().Add(10 * time.Second)
		for proc.Signal(syscall.Signal(0)) == nil && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestMakeInstall stages an install with DESTDIR and PREFIX, twice: the
// second keeps the configuration the first installed and an operator edited.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	dest := t.TempDir()
	install := func() string {
		cmd := exec.Command("make", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/opt/fastlb")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
		return string(out)
	}
	install()
	for _, f := range []string{"opt/fastlb/bin/fastlb", "etc/systemd/system/fastlb.service", "etc/fastlb/config.json"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("%s not installed: %v", f, err)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/fastlb.service"))
	for _, want := range []string{"Type=notify", "ExecStart=/opt/fastlb/bin/fastlb -config /etc/fastlb/config.json",
		"ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=", "NotifyAccess=all", "AmbientCapabilities=CAP_NET_BIND_SERVICE"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	cfg := filepath.Join(dest, "etc/fastlb/config.json")
	os.WriteFile(cfg, []byte(`{"port": 9999}`), 0o640)
	if out := install(); !strings.Contains(out, "keeping the existing") {
		t.Errorf("second install did not say it kept the configuration:\n%s", out)
	}
	if data, _ := os.ReadFile(cfg); string(data) != `{"port": 9999}` {
		t.Errorf("install overwrote the configuration: %s", data)
	}
}
