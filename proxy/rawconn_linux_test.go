package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// onlyConn returns the one connection in the parking's set.
func (h *harness) onlyConn() *clientConn {
	h.t.Helper()
	var c *clientConn
	waitFor(h.t, "one connection in the set", func() bool {
		p := &h.server.parking
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, pc := range p.conns {
			c = pc
		}
		return len(p.conns) == 1
	})
	return c
}

// epollSetsWith counts this process's epoll sets that hold descriptor fd,
// from /proc/self/fdinfo.
func epollSetsWith(t *testing.T, fd int) int {
	t.Helper()
	links, err := filepath.Glob("/proc/self/fd/*")
	if err != nil {
		t.Fatal(err)
	}
	sets := 0
	for _, l := range links {
		if target, err := os.Readlink(l); err != nil || target != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + filepath.Base(l))
		if err != nil {
			continue
		}
		if bytes.Contains(info, fmt.Appendf(nil, "tfd: %8d ", fd)) {
			sets++
		}
	}
	return sets
}

// TestRawSockets: a plain client connection's socket waits in the
// parking's epoll set alone, not in Go's poller as well; it has
// TCP_NODELAY, and its addresses are the connection's.
func TestRawSockets(t *testing.T) {
	h := startHarness(t, "", 1)
	k := h.dialKeepAlive()
	k.send(0, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if status, _ := k.answer(); status != 200 {
		t.Fatalf("status %d", status)
	}
	c := h.onlyConn()
	if !c.raw() {
		t.Fatal("the connection's socket is in Go's poller")
	}
	var fd, nodelay int
	var err error
	c.Control(func(s uintptr) {
		fd = int(s)
		nodelay, err = syscall.GetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
	})
	if err != nil || nodelay == 0 {
		t.Errorf("TCP_NODELAY %d (%v), want it set", nodelay, err)
	}
	if n := epollSetsWith(t, fd); n != 1 {
		t.Errorf("the socket is in %d epoll sets, want 1 (the parking's)", n)
	}
	if got, want := c.LocalAddr().String(), h.addr; got != want {
		t.Errorf("LocalAddr %s, want %s", got, want)
	}
	if got, want := c.RemoteAddr().String(), k.c.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr %s, want %s", got, want)
	}
	// A connection in Go's poller, for comparison: the count sees both.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rc, err := d.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(s uintptr) {
		if n := epollSetsWith(t, int(s)); n != 1 {
			t.Errorf("a socket of Go's poller is in %d epoll sets, want 1", n)
		}
	})
}

// readAnswer sends request on a new connection, waits pause before
// reading, and returns how many bytes of body followed the header.
func readAnswer(t *testing.T, addr, request string, pause time.Duration) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	time.Sleep(pause)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	all, err := io.ReadAll(c)
	if err != nil && !isReset(err) {
		t.Fatalf("reading the answer: %v", err)
	}
	i := bytes.Index(all, []byte("\r\n\r\n"))
	if !bytes.HasPrefix(all, []byte("HTTP/1.1 200")) || i < 0 {
		t.Fatalf("answer %q", all[:min(len(all), 200)])
	}
	return len(all) - i - 4
}

func isReset(err error) bool { return strings.Contains(err.Error(), "connection reset") }

// TestRawWriteWaits: an answer larger than the sockets' buffers waits for
// the client to read it, and is cut off once the client has read nothing
// for client_read_timeout.
func TestRawWriteWaits(t *testing.T) {
	const size = 32 << 20
	request := fmt.Sprintf("GET /bytes/%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", size)
	// Margins wide enough for a loaded machine under -race: a short
	// pause 900 ms within the timeout, a long one 1.5 s beyond it.
	h := startHarness(t, `"client_read_timeout": "1s"`, 1)
	if n := readAnswer(t, h.addr, request, 100*time.Millisecond); n != size {
		t.Errorf("after a pause shorter than client_read_timeout: %d bytes of %d", n, size)
	}
	if n := readAnswer(t, h.addr, request, 2500*time.Millisecond); n >= size {
		t.Errorf("after a pause longer than client_read_timeout: %d bytes of %d, want it cut off", n, size)
	}
	if code, _ := h.get("/"); code != 200 {
		t.Errorf("afterwards: %d", code)
	}
}

// TestShutdownWithReadWaiting: a request whose body is still arriving when
// shutdown starts is read to its end, in Go's poller once the set is gone,
// and answered.
func TestShutdownWithReadWaiting(t *testing.T) {
	h := startHarness(t, "", 1)
	k := h.dialKeepAlive()
	body := strings.Repeat("b", 1000)
	k.send(0, "POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"+body[:500])
	waitFor(t, "the body's read to wait", func() bool {
		p := &h.server.parking
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.blocked.n == 1
	})
	done := h.shutdown()
	waitFor(t, "the shutdown to begin", func() bool {
		p := &h.server.parking
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.stopping
	})
	k.send(0, body[500:])
	status, answer := k.answer()
	var r sinkResult
	if status != 200 || json.Unmarshal([]byte(answer), &r) != nil || r.Bytes != 1000 {
		t.Errorf("request in flight at shutdown: %d %q", status, answer)
	}
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// TestRawReadTimeout: a request body that stops arriving mid-way is cut off
// at client_read_timeout while its read waits in the set.
func TestRawReadTimeout(t *testing.T) {
	h := startHarness(t, `"client_read_timeout": "300ms"`, 1)
	k := h.dialKeepAlive()
	start := time.Now()
	k.send(0, "POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n"+strings.Repeat("b", 500))
	k.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, k.c) // until fastlb closes the connection, after any answer
	if took := time.Since(start); took < 250*time.Millisecond || took > 3*time.Second {
		t.Errorf("connection closed after %v, want about client_read_timeout (300ms)", took)
	}
	if code, _ := h.get("/"); code != 200 {
		t.Errorf("afterwards: %d", code)
	}
}

// useUpDescriptors lowers the process's limit of open files to a little
// above what it has open and opens /dev/null until the limit is reached,
// then closes one, for one socket more. release closes the rest and puts
// the limit back; the test's cleanup calls it too.
func useUpDescriptors(t *testing.T) (release func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = uint64(len(entries) + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var fill []*os.File
	released := false
	release = func() {
		if released {
			return
		}
		released = true
		for _, f := range fill {
			f.Close()
		}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	}
	t.Cleanup(release)
	for {
		f, err := os.Open("/dev/null")
		if err != nil {
			break
		}
		fill = append(fill, f)
	}
	if len(fill) == 0 {
		t.Fatal("no descriptor left to use up")
	}
	fill[len(fill)-1].Close()
	fill = fill[:len(fill)-1]
	return release
}

// TestAcceptAfterDescriptorsRunOut: when the process runs out of file
// descriptors, accepting fails, is logged and tried again, and the client
// waiting in the listen queue is served once descriptors are free again.
func TestAcceptAfterDescriptorsRunOut(t *testing.T) {
	h := startHarness(t, "", 1)
	if code, _ := h.get("/"); code != 200 { // the backend connection is made
		t.Fatalf("status %d", code)
	}
	h.client.CloseIdleConnections()
	release := useUpDescriptors(t)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "a failed accept to be logged", func() bool {
		return strings.Contains(h.logs.String(), "accepting a client connection failed")
	})
	release()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, err := io.ReadAll(c)
	if !bytes.HasPrefix(answer, []byte("HTTP/1.1 200")) {
		t.Errorf("the client waiting while descriptors ran out: %q (%v)", answer[:min(len(answer), 100)], err)
	}
	if code, _ := h.get("/"); code != 200 {
		t.Errorf("afterwards: %d", code)
	}
}

// TestRetryAccepts: a listener of RetryAccepts (HTTPS, the admin API)
// tries failed accepts again like Server.Serve's, and Close ends a wait
// between tries at once.
func TestRetryAccepts(t *testing.T) {
	logs := &syncBuffer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := RetryAccepts(ln, slog.New(slog.NewTextHandler(logs, nil)))
	defer r.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	accept := func() chan accepted {
		ch := make(chan accepted, 1)
		go func() {
			c, err := r.Accept()
			ch <- accepted{c, err}
		}()
		return ch
	}
	release := useUpDescriptors(t)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := accept()
	waitFor(t, "a failed accept to be logged", func() bool {
		return strings.Contains(logs.String(), "too many open files")
	})
	release()
	select {
	case a := <-got:
		if a.err != nil {
			t.Fatalf("Accept once descriptors were free: %v", a.err)
		}
		a.c.Close()
	case <-time.After(3 * time.Second):
		t.Fatal("Accept did not try again")
	}

	// Close while waiting between tries.
	release = useUpDescriptors(t)
	c2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	got = accept()
	// Once the wait between tries has grown to its longest, Close must
	// end it at once rather than after it.
	waitFor(t, "the wait between tries to reach 1 s", func() bool {
		return strings.Contains(logs.String(), "in=1s")
	})
	start := time.Now()
	r.Close()
	select {
	case a := <-got:
		if a.err == nil {
			a.c.Close()
			t.Error("Accept after Close accepted a connection")
		}
		if took := time.Since(start); took > 500*time.Millisecond {
			t.Errorf("Accept returned %v after Close", took)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not end Accept")
	}
	release()
}
