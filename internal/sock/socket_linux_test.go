package sock

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
	if err := s.Wait(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Wait after Close: %v, want net.ErrClosed", err)
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
	if err := s.Wait(); err != errNoSocket {
		t.Errorf("Wait = %v, want errNoSocket", err)
	}
	if err := s.Control(func(uintptr) {}); err != errNoSocket {
		t.Errorf("Control = %v, want errNoSocket", err)
	}
}

// Wait returns once there is something to read, reading nothing; at the
// read deadline with a timeout; and once the peer has closed.
func TestSocketWait(t *testing.T) {
	s, peer := socketPair(t)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := s.Wait(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait on an empty socket = %v, want a timeout", err)
	}
	s.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v with nothing sent", err)
	case <-time.After(50 * time.Millisecond):
	}
	peer.Write([]byte("hello"))
	if err := <-done; err != nil {
		t.Fatalf("Wait = %v", err)
	}
	if err := s.Wait(); err != nil {
		t.Fatalf("Wait with data already there = %v", err)
	}
	buf := make([]byte, 16)
	if n, err := s.Read(buf); string(buf[:n]) != "hello" || err != nil {
		t.Fatalf("Read after Wait = %q, %v; Wait must not consume", buf[:n], err)
	}
	peer.Close()
	if err := s.Wait(); err != nil {
		t.Fatalf("Wait after the peer closed = %v, want nil (Read reports the end)", err)
	}
	if _, err := s.Read(buf); err != io.EOF {
		t.Fatalf("Read after the peer closed = %v, want io.EOF", err)
	}
}

// ReadNow reads what is there whatever the read deadline, reports
// ErrWouldBlock when nothing is, io.EOF once the peer has closed, and a
// non-TCP connection always would block.
func TestSocketReadNow(t *testing.T) {
	s, peer := socketPair(t)
	buf := make([]byte, 16)
	if n, err := s.ReadNow(buf); n != 0 || err != ErrWouldBlock {
		t.Fatalf("ReadNow on an empty socket = %d, %v; want ErrWouldBlock", n, err)
	}
	s.SetReadDeadline(time.Unix(1, 0)) // long past: ReadNow does not wait, so it does not apply
	peer.Write([]byte("hello"))
	deadline := time.Now().Add(5 * time.Second)
	n, err := s.ReadNow(buf)
	for ; err == ErrWouldBlock && time.Now().Before(deadline); n, err = s.ReadNow(buf) {
		time.Sleep(time.Millisecond)
	}
	if string(buf[:n]) != "hello" || err != nil {
		t.Fatalf("ReadNow = %q, %v; want hello", buf[:n], err)
	}
	if n, err := s.ReadNow(nil); n != 0 || err != ErrWouldBlock {
		t.Fatalf("ReadNow of nothing = %d, %v", n, err)
	}
	if _, err := s.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read under a past deadline = %v, want a timeout", err)
	}
	peer.Close()
	for n, err = s.ReadNow(buf); err == ErrWouldBlock && time.Now().Before(deadline); n, err = s.ReadNow(buf) {
		time.Sleep(time.Millisecond)
	}
	if n != 0 || err != io.EOF {
		t.Fatalf("ReadNow after the peer closed = %d, %v; want io.EOF", n, err)
	}

	a, b := net.Pipe()
	defer b.Close()
	p := &Socket{}
	p.Init(a)
	defer p.Close()
	if _, err := p.ReadNow(buf); err != ErrWouldBlock {
		t.Fatalf("ReadNow of a pipe = %v, want ErrWouldBlock", err)
	}
}
