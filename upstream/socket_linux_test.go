package upstream

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"fastlb/config"
)

// socketPair returns a Socket on one end of a loopback TCP connection and
// the other end as it is.
func socketPair(t *testing.T) (*Socket, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s := &Socket{}
	s.Init(c)
	if s.rc == nil {
		t.Fatal("a TCP connection is not read through its socket")
	}
	t.Cleanup(func() { s.Close(); peer.Close() })
	return s, peer.(*net.TCPConn)
}

func TestSocketReadWrite(t *testing.T) {
	s, peer := socketPair(t)
	if n, err := s.Write([]byte("ping")); n != 4 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "ping" {
		t.Fatalf("peer read %q, %v", got, err)
	}
	if _, err := peer.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := s.Read(buf); string(buf[:n]) != "pong" || err != nil {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if n, err := s.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read of nothing = %d, %v", n, err)
	}
	if n, err := s.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write of nothing = %d, %v", n, err)
	}
	peer.Close()
	if n, err := s.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want io.EOF", n, err)
	}
}

// A write larger than the socket buffers waits for the slow reader and
// delivers every byte in order.
func TestSocketLargeWrite(t *testing.T) {
	s, peer := socketPair(t)
	data := make([]byte, 8<<20)
	rand.Read(data)
	got := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		chunk := make([]byte, 64<<10)
		for {
			n, err := peer.Read(chunk)
			b.Write(chunk[:n])
			if err != nil {
				got <- b.Bytes()
				return
			}
			time.Sleep(time.Millisecond / 4)
		}
	}()
	if n, err := s.Write(data); n != len(data) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	s.Close()
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("peer got %d bytes, not the %d written", len(b), len(data))
	}
}

func TestSocketDeadlines(t *testing.T) {
	s, _ := socketPair(t)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := s.Read(make([]byte, 16))
	checkTimeout(t, "Read", "read", n, err)

	// The peer never reads: the write fills both socket buffers and waits.
	// The data is made first: zeroing 64 MiB under the race detector on a
	// busy machine could take the whole deadline, and a write that starts
	// past its deadline sends nothing.
	data := make([]byte, 64<<20)
	s.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err = s.Write(data)
	if n == 0 || n == len(data) {
		t.Errorf("Write wrote %d of %d bytes before its deadline", n, len(data))
	}
	checkTimeout(t, "Write", "write", 0, err)
}

func checkTimeout(t *testing.T, call, op string, n int, err error) {
	t.Helper()
	var oe *net.OpError
	var ne net.Error
	switch {
	case n != 0:
		t.Errorf("%s = %d bytes, want 0", call, n)
	case !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout():
		t.Errorf("%s error %v, want a timeout", call, err)
	case !errors.As(err, &oe) || oe.Op != op || oe.Addr == nil:
		t.Errorf("%s error %#v, want a *net.OpError of %q with the addresses", call, err, op)
	}
}

func TestSocketClosed(t *testing.T) {
	s, _ := socketPair(t)
	s.Close()
	if _, err := s.Read(make([]byte, 4)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
	if _, err := s.ReadNow(make([]byte, 4)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadNow after Close: %v, want net.ErrClosed", err)
	}
}

// A connection reset by its peer fails reads and then writes with the
// errno, as net.Conn's Read and Write do (and no SIGPIPE ends the process).
func TestSocketPeerReset(t *testing.T) {
	s, peer := socketPair(t)
	peer.SetLinger(0)
	peer.Close()
	var oe *net.OpError
	if _, err := s.Read(make([]byte, 4)); !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("Read of a reset connection: %v, want ECONNRESET in a *net.OpError of read", err)
	}
	if _, err := s.Write([]byte("after the reset")); !errors.Is(err, syscall.EPIPE) || !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("Write to a reset connection: %v, want EPIPE in a *net.OpError of write", err)
	}
}

func TestSocketReadNow(t *testing.T) {
	s, peer := socketPair(t)
	buf := make([]byte, 16)
	if n, err := s.ReadNow(buf); n != 0 || err != syscall.EAGAIN {
		t.Fatalf("ReadNow of an empty socket = %d, %v; want EAGAIN", n, err)
	}
	peer.Write([]byte("now"))
	deadline := time.Now().Add(2 * time.Second)
	n, err := s.ReadNow(buf)
	for err == syscall.EAGAIN && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		n, err = s.ReadNow(buf)
	}
	if string(buf[:n]) != "now" || err != nil {
		t.Fatalf("ReadNow = %q, %v", buf[:n], err)
	}
	peer.Close()
	for err = syscall.EAGAIN; err == syscall.EAGAIN && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		n, err = s.ReadNow(buf)
	}
	if n != 0 || err != io.EOF {
		t.Fatalf("ReadNow after the peer closed = %d, %v; want io.EOF", n, err)
	}
}

// A connection that is not a TCP socket is read and written as it is.
func TestSocketNotTCP(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	s := &Socket{}
	s.Init(a)
	defer s.Close()
	go b.Write([]byte("pipe"))
	buf := make([]byte, 8)
	if n, err := s.Read(buf); string(buf[:n]) != "pipe" || err != nil {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	go io.ReadAll(b)
	if n, err := s.Write([]byte("back")); n != 4 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if _, err := s.ReadNow(buf); err != errNoSocket {
		t.Errorf("ReadNow = %v, want errNoSocket", err)
	}
	if err := s.Control(func(uintptr) {}); err != errNoSocket {
		t.Errorf("Control = %v, want errNoSocket", err)
	}
}

// TestBackendConnectionsWithoutKeepAliveProbes: backend connections are
// dialled without TCP keep-alive probes, and with TCP_NODELAY.
func TestBackendConnectionsWithoutKeepAliveProbes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hc := newHostClient(config.Backend{Addr: ln.Addr().String()}, newClientSettings(ClientOptions{}))
	c, err := hc.DialTimeout(hc.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bc, ok := c.(*backendConn)
	if !ok {
		t.Fatalf("dialled a %T", c)
	}
	var keepAlive, noDelay int
	var kerr, nerr error
	if err := bc.Control(func(fd uintptr) {
		keepAlive, kerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		noDelay, nerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
	}); err != nil {
		t.Fatal(err)
	}
	if kerr != nil || keepAlive != 0 {
		t.Errorf("SO_KEEPALIVE %d (%v), want 0", keepAlive, kerr)
	}
	if nerr != nil || noDelay == 0 {
		t.Errorf("TCP_NODELAY %d (%v), want it set", noDelay, nerr)
	}
}

// A socket of InitRaw, a blocking descriptor outside Go's poller, is read
// and written without waiting: what fits, then EAGAIN.
func TestSocketRaw(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "raw") // blocking: not in Go's poller
	defer f.Close()
	peer := os.NewFile(uintptr(fds[1]), "peer")
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	s := &Socket{}
	s.InitRaw(rc)
	buf := make([]byte, 16)
	if n, err := s.ReadNow(buf); n != 0 || err != syscall.EAGAIN {
		t.Fatalf("ReadNow of an empty socket = %d, %v; want EAGAIN", n, err)
	}
	big := make([]byte, 8<<20)
	n, err := s.WriteNow(big)
	if err != syscall.EAGAIN || n <= 0 || n >= len(big) {
		t.Fatalf("WriteNow of 8 MiB = %d, %v; want part of it and EAGAIN", n, err)
	}
	got := make(chan int64)
	go func() {
		m, _ := io.Copy(io.Discard, peer)
		got <- m
	}()
	sent := n
	deadline := time.Now().Add(5 * time.Second)
	for sent < len(big) && time.Now().Before(deadline) {
		m, err := s.WriteNow(big[sent:])
		sent += m
		if err != nil && err != syscall.EAGAIN {
			t.Fatalf("WriteNow: %v", err)
		}
	}
	f.Close()
	if m := <-got; m != int64(len(big)) || sent != len(big) {
		t.Fatalf("sent %d, the peer read %d of %d", sent, m, len(big))
	}
	peer.Close()
}
