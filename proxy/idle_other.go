//go:build !linux

package proxy

// Connections are parked only on Linux: elsewhere an idle connection keeps
// its goroutine and buffers until client_idle_timeout, as fasthttp has it,
// and waits for its next request in Go's poller.
const canPark = false

type parking struct{}

type parkSpot struct{}

func (s *Server) wait(c *clientConn, atOnce bool) waitResult { return waitUnavailable }

func (c *clientConn) readNow(b []byte) (int, error) { return 0, errNothingYet }

func (s *Server) park(c *clientConn) { c.close() }

func (s *Server) forget(c *clientConn) {}

func (s *Server) leave(c *clientConn) {}

func (s *Server) closeParked() {}

func (s *Server) parkedCount() int { return 0 }
