package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"fastlb/testbackends"
)

// backendProcess is a test backend in a process of its own, which a test
// can kill and start again on the same port, as an operator restarts one.
type backendProcess struct {
	port int
	cmd  *exec.Cmd
}

func (b *backendProcess) url() string { return fmt.Sprintf("http://127.0.0.1:%d", b.port) }
func (b *backendProcess) id() string  { return fmt.Sprintf("127.0.0.1:%d", b.port) }

// stablePort returns a free loopback port below the kernel's ephemeral
// range, that no earlier call (or freePort) returned. A backend restarted on
// its own port needs one: while it is down, an outgoing connection (fastlb's
// own, to the other backends) may be given a port from the ephemeral range,
// its old one included, and its restart would then fail.
func stablePort(t *testing.T) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	const first = 10000
	if low <= first+100 {
		t.Skipf("the ephemeral port range starts at %d; no stable ports below it", low)
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = make(map[int]bool)
	}
	for range 100 {
		port := first + rand.IntN(low-first)
		if handedOut.ports[port] {
			continue
		}
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		handedOut.ports[port] = true
		return port
	}
	t.Fatal("no free port below the ephemeral range")
	return 0
}

// start runs the backend and waits until its port accepts connections.
func (b *backendProcess) start(t *testing.T) {
	t.Helper()
	b.cmd = exec.Command(backendsBinary, "-ports", strconv.Itoa(b.port))
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend on port %d did not start: %v", b.port, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop ends the backend with sig and waits for its process to exit.
func (b *backendProcess) stop(sig syscall.Signal) {
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(sig)
	b.cmd.Wait()
	b.cmd = nil
}

// backendHealthy asks fastlb's admin API whether it holds backend id healthy.
func backendHealthy(t *testing.T, adminAddr, id string) bool {
	t.Helper()
	code, body := get(t, "http://"+adminAddr+"/api/v1/backends/"+id)
	var b struct {
		Healthy bool `json:"healthy"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &b) != nil {
		t.Fatalf("backend %s: %d %s", id, code, body)
	}
	return b.Healthy
}

// TestRollingRestartUnderLoad restarts each of three backends in turn,
// twice, while 32 clients send requests through fastlb as fast as they
// are answered: killed outright, and stopped gracefully. Not one request
// may fail. The stale keep-alive connections a restart leaves in fastlb's
// pools must neither reach a client nor take a healthy backend down.
func TestRollingRestartUnderLoad(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			backends := make([]*backendProcess, 3)
			var urls []string
			for i := range backends {
				backends[i] = &backendProcess{port: stablePort(t)}
				backends[i].start(t)
				defer func() { backends[i].stop(syscall.SIGKILL) }()
				urls = append(urls, backends[i].url())
			}
			p := startBinaryURLs(t, nil, `, "retries": 2, "health_check_frequency": "200ms"`, urls...)
			load := testbackends.StartLoad("http://"+p.addr+"/", 32)
			time.Sleep(300 * time.Millisecond)
			for i := range 6 {
				b := backends[i%len(backends)]
				b.stop(sig)
				time.Sleep(600 * time.Millisecond)
				b.start(t)
				time.Sleep(600 * time.Millisecond)
			}
			sent, failed, first := load.Stop()
			// Each is up again within a few health checks (rise 2, every
			// 200 ms), and stays up.
			for _, b := range backends {
				deadline := time.Now().Add(5 * time.Second)
				for !backendHealthy(t, p.adminAddr, b.id()) {
					if time.Now().After(deadline) {
						t.Fatalf("backend %s not healthy 5 s after the last restart:\n%s", b.id(), p.Logs())
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			t.Logf("%d requests, %d failed", sent, failed)
			if failed != 0 {
				t.Errorf("%d of %d requests failed; first: %s\n%s", failed, sent, first, p.Logs())
			}
			if sent < 1000 {
				t.Errorf("only %d requests sent", sent)
			}
		})
	}
}
