package proxy

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestSlowloris: a client that sends its header a byte at a time is cut off
// at client_read_timeout, while other clients are served.
func TestSlowloris(t *testing.T) {
	h := startHarness(t, `"client_read_timeout": "300ms"`, 1)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		header := "GET / HTTP/1.1\r\nHost: h\r\nX-Slow: " + strings.Repeat("a", 200)
		for i := range len(header) {
			if _, err := c.Write([]byte{header[i]}); err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	go func() {
		io.ReadAll(c) // returns when fastlb closes the connection
		closed <- time.Since(start)
	}()
	for range 10 {
		if code, _ := h.get("/"); code != 200 {
			t.Fatalf("another client got %d during the slowloris", code)
		}
	}
	select {
	case d := <-closed:
		if d < 250*time.Millisecond || d > 2*time.Second {
			t.Errorf("slow client cut off after %v, want about client_read_timeout (300ms)", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the slow client was never cut off")
	}
	if n := h.backends[0].Requests(); n != 10 {
		t.Errorf("the backend saw %d requests, want only the 10 good ones", n)
	}
}

// TestManyIdleConnections: 2,000 idle keep-alive connections do not keep
// other clients from being served.
func TestManyIdleConnections(t *testing.T) {
	h := startHarness(t, "", 1)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, 1024)
	for range 2000 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			t.Fatalf("connection %d: %q %v", len(conns), buf[:n], err)
		}
	}
	start := time.Now()
	for range 20 {
		if code, _ := h.get("/"); code != 200 {
			t.Fatalf("status %d with 2,000 idle connections open", code)
		}
	}
	t.Logf("20 requests beside 2,000 idle connections in %v", time.Since(start).Round(time.Millisecond))
}

// TestIdleTimeout: a keep-alive connection that sends nothing after its
// request is closed after client_idle_timeout, not before.
func TestIdleTimeout(t *testing.T) {
	h := startHarness(t, `"client_idle_timeout": "300ms"`, 1)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatalf("%q %v", buf[:n], err)
	}
	start := time.Now()
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("idle connection: %v, want it closed", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("idle connection closed after %v, want about client_idle_timeout (300ms)", d)
	}
}
