//go:build linux

package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fastlb/testbackends"
)

// keepAlive is a raw keep-alive client connection to fastlb.
type keepAlive struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (h *harness) dialKeepAlive() *keepAlive {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return &keepAlive{t: h.t, c: c, r: bufio.NewReader(c)}
}

// send writes the request parts with pause between them.
func (k *keepAlive) send(pause time.Duration, parts ...string) {
	k.t.Helper()
	for i, p := range parts {
		if i > 0 {
			time.Sleep(pause)
		}
		if _, err := io.WriteString(k.c, p); err != nil {
			k.t.Fatal(err)
		}
	}
}

// answer reads one response and returns its status and body.
func (k *keepAlive) answer() (int, string) {
	k.t.Helper()
	k.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		k.t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		k.t.Fatalf("reading the answer's body: %v", err)
	}
	return resp.StatusCode, string(body)
}

// closedWithin reports whether fastlb closes the connection within d, and
// how long that took.
func (k *keepAlive) closedWithin(d time.Duration) (bool, time.Duration) {
	start := time.Now()
	k.c.SetReadDeadline(start.Add(d))
	_, err := k.r.ReadByte()
	return err == io.EOF, time.Since(start)
}

func (h *harness) parkedConns() int { return h.server.Parked() }

// parkAfter is park_idle_after's default, which the harness keeps.
const parkAfter = 100 * time.Millisecond

// drainIdle is how long a shutdown lets idle connections be
// (frontend.ShutdownWithContext).
const drainIdle = time.Second

// waitParked waits until n connections are parked.
func (h *harness) waitParked(n int) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for h.parkedConns() != n {
		if time.Now().After(deadline) {
			h.t.Fatalf("%d connections parked, want %d", h.parkedConns(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitOpen waits until n plain connections are counted open.
func (h *harness) waitOpen(n int64) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for int64(h.server.OpenConnections()) != n {
		if time.Now().After(deadline) {
			h.t.Fatalf("%d connections counted open, want %d", h.server.OpenConnections(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// shutdown starts the server's shutdown, giving it 5 s, and returns where
// its result arrives.
func (h *harness) shutdown() <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- h.server.ShutdownWithContext(ctx)
	}()
	return done
}

// TestIdleConnectionParks: a keep-alive connection that waits longer than
// parkAfter for its next request is parked, and the request that wakes it,
// whether whole or in slow pieces, with or without a body, is served as if
// nothing had happened.
func TestIdleConnectionParks(t *testing.T) {
	h := startHarness(t, "", 1)
	get := "GET /echo HTTP/1.1\r\nHost: h\r\n\r\n"
	post := "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n"
	for _, tc := range []struct {
		name  string
		parts []string // sent parkAfter*3 apart once the connection has parked
		body  string   // what the backend must see
	}{
		{"whole request", []string{get}, ""},
		{"one byte, then the rest", []string{"G", get[1:]}, ""},
		{"header in three pieces", []string{"GET /ec", "ho HTTP/1.1\r\nHo", "st: h\r\n\r\n"}, ""},
		{"body after a pause", []string{post, "0123456789"}, "0123456789"},
		{"body in two pieces", []string{post + "01234", "56789"}, "0123456789"},
		{"two pipelined requests", []string{get + get}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := h.dialKeepAlive()
			k.send(0, get)
			if status, _ := k.answer(); status != 200 {
				t.Fatalf("first request: %d", status)
			}
			h.waitParked(1)
			if n := h.server.OpenConnections(); n != 1 {
				t.Errorf("OpenConnections with one parked: %d", n)
			}
			k.send(3*parkAfter, tc.parts...)
			answers := strings.Count(strings.Join(tc.parts, ""), "HTTP/1.1\r\n")
			for range answers {
				status, body := k.answer()
				var e testbackends.Echo
				if err := json.Unmarshal([]byte(body), &e); status != 200 || err != nil {
					t.Fatalf("request after parking: %d %q", status, body)
				}
				if string(e.Body) != tc.body {
					t.Errorf("backend saw body %q, want %q", e.Body, tc.body)
				}
			}
			// And the connection parks again.
			h.waitParked(1)
			k.c.Close()
			h.waitParked(0)
		})
	}
	h.waitOpen(0)
}

// parkedWithin reports whether n connections are parked within d.
func (h *harness) parkedWithin(n int, d time.Duration) bool {
	for end := time.Now().Add(d); h.parkedConns() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			return false
		}
	}
	return true
}

// TestParkedIdleTimeout: a parked connection is closed at
// client_idle_timeout, counted from its own last request, as an unparked
// one; connections parked at different times expire in turn, and one that
// woke and parked again starts afresh.
func TestParkedIdleTimeout(t *testing.T) {
	h := startHarness(t, `"client_idle_timeout": "600ms"`, 1)
	type conn struct {
		k    *keepAlive
		last time.Time
	}
	var conns []conn
	for i := range 3 {
		if i > 0 {
			time.Sleep(150 * time.Millisecond)
		}
		k := h.dialKeepAlive()
		k.send(0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if status, _ := k.answer(); status != 200 {
			t.Fatalf("status %d", status)
		}
		conns = append(conns, conn{k, time.Now()})
	}
	// The first one speaks again after parking, which restarts its clock.
	h.waitParked(3)
	conns[0].k.send(0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if status, _ := conns[0].k.answer(); status != 200 {
		t.Fatalf("woken connection: status %d", status)
	}
	conns[0].last = time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			closed, _ := c.k.closedWithin(3 * time.Second)
			if idle := time.Since(c.last); !closed || idle < 550*time.Millisecond || idle > 1500*time.Millisecond {
				t.Errorf("connection %d closed %v after its last request (closed: %v), want about 600ms", i, idle, closed)
			}
		})
	}
	wg.Wait()
	h.waitParked(0)
	h.waitOpen(0)
}

// TestMaxClientConnsCountsParked: parked connections count against
// max_client_conns, and a closed parked one makes room.
func TestMaxClientConnsCountsParked(t *testing.T) {
	h := startHarness(t, `"max_client_conns": 2`, 1)
	var ks []*keepAlive
	for range 2 {
		k := h.dialKeepAlive()
		k.send(0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if status, _ := k.answer(); status != 200 {
			t.Fatalf("connection within the limit: %d", status)
		}
		ks = append(ks, k)
	}
	h.waitParked(2)
	out := h.raw("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 503") || !strings.Contains(out, "too many client connections") {
		t.Errorf("a connection over max_client_conns with two parked: %q", out)
	}
	ks[0].c.Close()
	h.waitOpen(1)
	h.waitParked(1)
	if out := h.raw("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
		t.Errorf("after a parked one closed: %q", firstLine(out))
	}
	// The other parked one still works.
	ks[1].send(0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if status, _ := ks[1].answer(); status != 200 {
		t.Errorf("parked connection within the limit: %d", status)
	}
}

// TestShutdownClosesParked: shutdown closes parked connections once they
// have stayed idle for drainIdle, and lets a request that woke one just
// before finish.
func TestShutdownClosesParked(t *testing.T) {
	h := startHarness(t, "", 1)
	idle := h.dialKeepAlive()
	busy := h.dialKeepAlive()
	for _, k := range []*keepAlive{idle, busy} {
		k.send(0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if status, _ := k.answer(); status != 200 {
			t.Fatalf("status %d", status)
		}
	}
	h.waitParked(2)
	busy.send(0, "GET /delay/300ms HTTP/1.1\r\nHost: h\r\n\r\n")
	h.waitParked(1)
	start := time.Now()
	done := h.shutdown()
	if closed, took := idle.closedWithin(drainIdle + 2*time.Second); !closed || took < drainIdle-50*time.Millisecond || took > drainIdle+time.Second {
		t.Errorf("parked connection at shutdown: closed %v after %v, want after about %v", closed, took, drainIdle)
	}
	if status, _ := busy.answer(); status != 200 {
		t.Errorf("request in flight at shutdown: %d", status)
	}
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if took := time.Since(start); took > drainIdle+2*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	if n := h.server.OpenConnections(); n != 0 {
		t.Errorf("%d connections still counted open after shutdown", n)
	}
}

// TestParkingUnderLoad: many keep-alive clients whose pauses fall on both
// sides of parkAfter, so connections park and wake while others are served
// and new ones arrive; every request is answered in order.
func TestParkingUnderLoad(t *testing.T) {
	h := startHarness(t, "", 1, 1)
	const clients, rounds = 24, 8
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			r := bufio.NewReader(c)
			rnd := rand.New(rand.NewPCG(uint64(i), 1))
			for j := range rounds {
				time.Sleep(time.Duration(rnd.IntN(int(2 * parkAfter))))
				path := fmt.Sprintf("/echo/%d/%d", i, j)
				if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", path); err != nil {
					errs <- err
					return
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %w", i, j, err)
					return
				}
				var e testbackends.Echo
				err = json.NewDecoder(resp.Body).Decode(&e)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || e.URI != path {
					errs <- fmt.Errorf("client %d request %d: status %d, uri %q, %v", i, j, resp.StatusCode, e.URI, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestPipelinedBurstOnBufferBoundaries: requests pipelined in one burst
// larger than the read buffer, each exactly 64 bytes, so that reads fill
// the buffer and fasthttp finishes each buffer on a request's end. The set
// reports only what arrives after the last read; a wait after a full read
// must not wait for a report of what is already there.
func TestPipelinedBurstOnBufferBoundaries(t *testing.T) {
	h := startHarness(t, "", 1)
	k := h.dialKeepAlive()
	const n = 700 // 44,800 bytes: the 16 KiB buffer fills twice
	var burst strings.Builder
	for i := range n {
		req := fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
		req = strings.Replace(req, " HTTP", "?"+strings.Repeat("p", 64-len(req)-1)+" HTTP", 1)
		if len(req) != 64 {
			t.Fatalf("request of %d bytes", len(req))
		}
		burst.WriteString(req)
	}
	k.send(0, burst.String())
	// A wait for a report that never comes would last until the idle
	// timeout, parked after parkAfter: answer gives up after 5 s.
	for i := range n {
		if status, _ := k.answer(); status != 200 {
			t.Fatalf("request %d: status %d", i, status)
		}
	}
}

// TestShutdownEndsWaits: a connection waiting for its next request, not yet
// parked, is closed at shutdown once it has stayed idle for drainIdle, and
// shutdown ends then.
func TestShutdownEndsWaits(t *testing.T) {
	h := startHarness(t, "", 1)
	k := h.dialKeepAlive()
	k.send(0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if status, _ := k.answer(); status != 200 {
		t.Fatalf("status %d", status)
	}
	start := time.Now()
	done := h.shutdown()
	if closed, took := k.closedWithin(drainIdle + 2*time.Second); !closed || took < drainIdle-50*time.Millisecond || took > drainIdle+time.Second {
		t.Errorf("waiting connection at shutdown: closed %v after %v, want after about %v", closed, took, drainIdle)
	}
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if took := time.Since(start); took > drainIdle+time.Second {
		t.Errorf("shutdown took %v", took)
	}
	if p := h.parkedConns(); p != 0 {
		t.Errorf("%d connections parked after shutdown", p)
	}
}

// cpuTime is the CPU time the test process has used.
func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestShutdownAnswersWithClose: during a shutdown a request arriving on an
// idle keep-alive connection, parked or not, is answered, with
// Connection: close, and the connection then closed; no new connection is
// accepted; and shutdown ends as soon as no connection is left.
func TestShutdownAnswersWithClose(t *testing.T) {
	h := startHarness(t, "", 1)
	waiting, parked := h.dialKeepAlive(), h.dialKeepAlive()
	for _, k := range []*keepAlive{parked, waiting} {
		k.send(0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if status, _ := k.answer(); status != 200 {
			t.Fatalf("status %d", status)
		}
		if k == parked {
			h.waitParked(1)
		}
	}
	start := time.Now()
	done := h.shutdown()
	waitFor(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", h.addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	for name, k := range map[string]*keepAlive{"waiting": waiting, "parked": parked} {
		k.send(0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		k.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(k.r, nil)
		if err != nil {
			t.Fatalf("%s connection: request during shutdown: %v", name, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !resp.Close {
			t.Errorf("%s connection: %d, Connection %q; want 200 and close", name, resp.StatusCode, resp.Header.Get("Connection"))
		}
		if closed, _ := k.closedWithin(time.Second); !closed {
			t.Errorf("%s connection stayed open after its answer with Connection: close", name)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if took := time.Since(start); took > drainIdle-100*time.Millisecond {
		t.Errorf("shutdown took %v with every connection closed early", took)
	}
}
