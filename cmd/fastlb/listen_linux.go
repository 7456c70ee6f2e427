package main

import (
	"net"
	"os"
	"syscall"
)

// Keep-alive probes of accepted connections: Go's defaults (after 15 s
// idle, every 15 s, given up after 9 unanswered).
const (
	keepAliveIdle     = 15
	keepAliveInterval = 15
	keepAliveCount    = 9
)

// listenConfig sets the keep-alive probes of a listener's connections once,
// on the listening socket, whose accepted sockets inherit them, rather than
// with four system calls per accepted connection as Go's net package does.
// Listeners inherited in a binary upgrade were not made here: Go sets the
// same probes on their connections itself.
func listenConfig() net.ListenConfig {
	return net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		cerr := rc.Control(func(fd uintptr) {
			for _, o := range []struct{ level, name, value int }{
				{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
				{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdle},
				{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveInterval},
				{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
			} {
				if err == nil {
					err = os.NewSyscallError("setsockopt", syscall.SetsockoptInt(int(fd), o.level, o.name, o.value))
				}
			}
		})
		if cerr != nil {
			return cerr
		}
		return err
	}}
}

// deferAccept asks the kernel to hand over ln's connections only once the
// client has sent its first bytes (TCP_DEFER_ACCEPT, what nginx's listen
// option "deferred" and HAProxy's "defer-accept" set). HTTP and TLS clients
// speak first, so the first read of a new connection finds the request
// instead of failing with EAGAIN and waiting in Go's poller. A client that
// connects and sends nothing is handed over anyway after about a second
// (when the kernel first repeats its side of the handshake), and then times
// out as any silent connection does. A listener other than a TCP one is
// left as it is.
func deferAccept(ln net.Listener) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, 1)
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt TCP_DEFER_ACCEPT", serr)
}
