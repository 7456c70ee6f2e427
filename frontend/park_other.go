//go:build !linux

package frontend

// parkSet is Linux's (park_linux.go): elsewhere a parked connection waits
// in a goroutine of its own, in Go's poller.
type parkSet struct{}

func (s *Server) park(c *conn) { go s.waitParked(c) }

func (s *Server) closeParked() {}
