package proxy

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

func wsHandshake(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + wsKey + "\r\n\r\n"
}

func TestWebSocketTunnel(t *testing.T) {
	h := startHarness(t, "", 1)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// The first message follows the handshake at once, before the 101.
	io.WriteString(c, wsHandshake("/upgrade")+"ping1")
	br := bufio.NewReader(c)
	status, _ := br.ReadString('\n')
	if !strings.HasPrefix(status, "HTTP/1.1 101") {
		t.Fatalf("status line %q", status)
	}
	sum := sha1.Sum([]byte(wsKey + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	var headers []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
		headers = append(headers, strings.TrimSpace(line))
	}
	all := strings.ToLower(strings.Join(headers, "\n"))
	for _, want := range []string{"Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:])} {
		if !strings.Contains(all, strings.ToLower(want)) {
			t.Errorf("101 lacks %q:\n%s", want, all)
		}
	}
	read := func(n int) string {
		buf := make([]byte, n)
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatalf("reading %d bytes: %v", n, err)
		}
		return string(buf)
	}
	if got := read(len("welcome\nping1")); got != "welcome\nping1" {
		t.Errorf("first bytes %q", got)
	}
	io.WriteString(c, "ping2")
	if got := read(5); got != "ping2" {
		t.Errorf("echo %q", got)
	}
	if h.metric("fastlb_upgraded_connections") != "1" || h.pool.Snapshot().All[0].Active() != 1 {
		t.Errorf("open tunnel not counted: gauge %s, active %d", h.metric("fastlb_upgraded_connections"), h.pool.Snapshot().All[0].Active())
	}
	c.Close()
	waitFor(t, "the tunnel to end", func() bool {
		return h.metric("fastlb_upgraded_connections") == "0" && h.pool.Snapshot().All[0].Active() == 0
	})
	if h.metric("fastlb_upgrades_total") != "1" {
		t.Errorf("upgrades_total %s", h.metric("fastlb_upgrades_total"))
	}
}

func TestUpgradeRefused(t *testing.T) {
	h := startHarness(t, "", 1)
	out := h.raw(wsHandshake("/status/403"))
	if !strings.HasPrefix(out, "HTTP/1.1 403") || !strings.Contains(out, "status 403") {
		t.Errorf("a backend's refusal was not relayed: %q", out)
	}
}

func TestTunnelIdleAndShutdown(t *testing.T) {
	h := startHarness(t, `"client_idle_timeout": "300ms"`, 1)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, wsHandshake("/upgrade"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	io.ReadAll(c) // the handshake, "welcome", then EOF once idle
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("idle tunnel closed after %v, want about 300ms", d)
	}
	waitFor(t, "the idle tunnel to end", func() bool { return h.metric("fastlb_upgraded_connections") == "0" })

	// A busy tunnel is closed by CloseTunnels once its time is up.
	c2, _ := net.Dial("tcp", h.addr)
	defer c2.Close()
	io.WriteString(c2, wsHandshake("/upgrade"))
	waitFor(t, "the second tunnel", func() bool { return h.metric("fastlb_upgraded_connections") == "1" })
	go func() {
		for range 20 {
			io.WriteString(c2, "x")
			time.Sleep(50 * time.Millisecond)
		}
	}()
	h.server.Shutdown()
	start = time.Now()
	closed := make(chan struct{})
	go func() { h.proxy.CloseTunnels(200 * time.Millisecond); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("CloseTunnels did not return")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("CloseTunnels returned after %v, before its timeout", d)
	}
	waitFor(t, "the busy tunnel to be closed", func() bool { return h.metric("fastlb_upgraded_connections") == "0" })
}

// TestUpgradeMalformedAnswer: the answer to an upgrade request is checked
// like any other: a malformed one is a 502, never passed on.
func TestUpgradeMalformedAnswer(t *testing.T) {
	h := startHarness(t, `"retries": 0, "health_check": {"fall": 100}`, 1)
	for _, kind := range []string{"obs-fold", "cl-and-te", "bad-name"} {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /malformed/"+kind+" HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		if resp.StatusCode != 502 || strings.Contains(string(body), "hello") {
			t.Errorf("%s: got %s %q, want 502 without the backend's body", kind, resp.Status, body)
		}
	}
	if got := h.metric("fastlb_upgrades_total"); got != "3" {
		t.Errorf("fastlb_upgrades_total %s: the requests did not take the upgrade path", got)
	}
}

// TestTunnelServerPushes: a tunnel where only the backend talks (a
// ticker pushed to a client that never sends) is not idle, however long
// the client stays silent.
func TestTunnelServerPushes(t *testing.T) {
	h := startHarness(t, `"client_idle_timeout": "300ms"`, 1)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, wsHandshake("/upgrade?push=50ms"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ticks := 0
	for time.Since(start) < 1200*time.Millisecond {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the tunnel ended after %v of client silence with the backend pushing (%d ticks): %v",
				time.Since(start).Round(time.Millisecond), ticks, err)
		}
		if line == "tick\n" {
			ticks++
		}
	}
	if ticks < 10 {
		t.Errorf("%d ticks in 1.2 s, want about 24", ticks)
	}
}

// TestUpgradeMaxConns: upgrades take a backend's max_conns slots like
// other requests, and hold them while the tunnel is open; requests over
// the limit get 503 (queue_timeout 0), however many arrive at once.
func TestUpgradeMaxConns(t *testing.T) {
	h := startLimited(t, 2, `"queue_timeout": "0s"`)
	const n = 12
	var wg sync.WaitGroup
	statuses := make(chan string, n)
	conns := make(chan net.Conn, n)
	for range n {
		wg.Go(func() {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Error(err)
				return
			}
			conns <- c
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, wsHandshake("/upgrade"))
			status, _ := bufio.NewReader(c).ReadString('\n')
			statuses <- strings.TrimSpace(status)
		})
	}
	wg.Wait()
	close(statuses)
	counts := map[string]int{}
	for s := range statuses {
		counts[s]++
	}
	if counts["HTTP/1.1 101 Switching Protocols"] != 2 || counts["HTTP/1.1 503 Service Unavailable"] != n-2 {
		t.Errorf("answers %v, want two 101 and %d 503", counts, n-2)
	}
	if a := h.pool.Snapshot().All[0].Active(); a != 2 {
		t.Errorf("active %d with two tunnels open", a)
	}
	close(conns)
	for c := range conns {
		c.Close()
	}
	waitFor(t, "the tunnels to end", func() bool { return h.pool.Snapshot().All[0].Active() == 0 })
}
