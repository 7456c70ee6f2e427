//go:build !linux

package upstream

import "net"

// Socket is a connection read and written as it is: the recvfrom and sendto
// path is Linux's (see socket_linux.go).
type Socket struct {
	net.Conn
}

// Init makes s the socket of c.
func (s *Socket) Init(c net.Conn) { s.Conn = c }
