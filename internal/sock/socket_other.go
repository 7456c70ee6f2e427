//go:build !linux

package sock

import (
	"errors"
	"net"
)

// Socket is a connection read and written as it is: the recvfrom and sendto
// path is Linux's (see socket_linux.go).
type Socket struct {
	net.Conn
}

// Init makes s the socket of c.
func (s *Socket) Init(c net.Conn) { s.Conn = c }

// Wait is Linux's only: elsewhere connections are not parked.
func (s *Socket) Wait() error { return errors.ErrUnsupported }

// ReadNow reads nothing: elsewhere every read waits in Go's poller.
func (s *Socket) ReadNow([]byte) (int, error) { return 0, ErrWouldBlock }
