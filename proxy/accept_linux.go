package proxy

import (
	"net"
	"os"
	"syscall"
)

// DeferAccept asks the kernel to hand over ln's connections only once the
// client has sent its first bytes (TCP_DEFER_ACCEPT, what nginx's listen
// option "deferred" and HAProxy's "defer-accept" set). HTTP and TLS clients
// speak first, so the first read of a new connection finds the request
// instead of failing with EAGAIN and waiting in Go's poller. A client that
// connects and sends nothing is handed over anyway after about a second
// (when the kernel first repeats its side of the handshake), and then times
// out as any silent connection does. A listener other than a TCP one is
// left as it is.
func DeferAccept(ln net.Listener) error {
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
