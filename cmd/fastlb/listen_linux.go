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
		return setsockopts(rc,
			sockopt{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			sockopt{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdle},
			sockopt{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveInterval},
			sockopt{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount})
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
	return setsockopts(rc, sockopt{"TCP_DEFER_ACCEPT", syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, 1})
}

// sockopt is an integer socket option and the value to give it.
type sockopt struct {
	name       string // for errors
	level, opt int
	value      int
}

// setsockopts sets opts on rc's socket in turn, stopping at the first that
// fails and naming it in the error.
func setsockopts(rc syscall.RawConn, opts ...sockopt) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		for _, o := range opts {
			if serr := syscall.SetsockoptInt(int(fd), o.level, o.opt, o.value); serr != nil {
				err = os.NewSyscallError("setsockopt "+o.name, serr)
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}
