package main

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// dial connects to ln, until the test ends.
func dial(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestListenKeepAlive: connections accepted by a listener of listen have
// Go's keep-alive probes, inherited from the listening socket.
func TestListenKeepAlive(t *testing.T) {
	ln, err := listen("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dial(t, ln)
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
	} {
		var got int
		var gerr error
		rc.Control(func(fd uintptr) { got, gerr = syscall.GetsockoptInt(int(fd), o.level, o.opt) })
		if gerr != nil || got != o.want {
			t.Errorf("%s of an accepted connection: %d, %v; want %d", o.name, got, gerr, o.want)
		}
	}
}

// TestDeferAccept: a listener's connection is handed over once its client
// has sent something, and one whose client stays silent after a second or
// so, not never.
func TestDeferAccept(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := deferAccept(ln); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	talker := dial(t, ln)
	select {
	case <-accepted:
		t.Fatal("a connection was handed over before its client sent anything")
	case <-time.After(300 * time.Millisecond):
	}
	start := time.Now()
	if _, err := talker.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	select {
	case c = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("a connection whose client sent a request was not handed over")
	}
	if wait := time.Since(start); wait > 500*time.Millisecond {
		t.Errorf("handed over %v after its first bytes", wait)
	}
	// Its first bytes are there to read at once.
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	var n int
	var rerr error
	rc.Control(func(fd uintptr) { n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT) })
	if rerr != nil || string(buf[:n]) != "GET / HTTP/1.1\r\n" {
		t.Errorf("first read: %q, %v", buf[:n], rerr)
	}
	c.Close()

	dial(t, ln) // and stays silent
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("a silent connection was not handed over within 10 s")
	}
}

func TestDeferAcceptOtherListeners(t *testing.T) {
	ln, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := deferAccept(ln); err != nil {
		t.Errorf("a unix listener: %v, want it left as it is", err)
	}
}
