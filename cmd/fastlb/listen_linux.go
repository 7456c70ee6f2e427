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
