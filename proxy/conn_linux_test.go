package proxy

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"fastlb/frontend"
)

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

// TestSlowReaderCutOff: an answer larger than the sockets' buffers waits for
// the client to read it, and is cut off once the client has read nothing
// for client_read_timeout.
func TestSlowReaderCutOff(t *testing.T) {
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

// TestBodyReadTimeout: a request body that stops arriving mid-way is cut
// off at client_read_timeout.
func TestBodyReadTimeout(t *testing.T) {
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
	r := frontend.RetryAccepts(ln, slog.New(slog.NewTextHandler(logs, nil)))
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
