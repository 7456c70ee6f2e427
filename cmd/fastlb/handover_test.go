package main

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHandOverKeepsListenerNonBlocking: handing a listener to a new
// process (exec passes the file on through its Fd method) leaves the
// listener this process still accepts on in non-blocking mode. (With the
// listener's own File method, Fd made the shared socket blocking: after a
// failed upgrade the old process's accept waited in the kernel, and its
// shutdown hung on closing the listener.)
func TestHandOverKeepsListenerNonBlocking(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := handOver(ln, "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Fd() // what os/exec does with ExtraFiles

	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	if err := rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil || ferr != nil {
		t.Fatal(err, ferr)
	}
	if flags&unix.O_NONBLOCK == 0 {
		t.Fatal("the listener is in blocking mode after the hand-over")
	}
	if _, err := handOver(fakeListener{ln}, "odd"); err == nil {
		t.Error("a listener without a socket was handed over")
	}
}

// fakeListener is a listener that is not a socket of its own.
type fakeListener struct{ net.Listener }
