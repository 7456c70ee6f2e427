//go:build !linux

package proxy

// Connections are parked only on Linux: elsewhere an idle connection keeps
// its goroutine and buffers until client_idle_timeout, as fasthttp has it.
const canPark = false

type parking struct{}

type parkSpot struct{}

func (s *Server) park(c *clientConn) { c.close() }

func (s *Server) closeParked() {}

func (s *Server) parkedCount() int { return 0 }
