//go:build !linux

package proxy

import "net"

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

// Sockets stay in Go's poller.
type rawSocket struct{ raddr net.Addr }

type accepting struct{}

func (l *listener) init() {}

func (l *listener) acceptConn() (net.Conn, error) { return l.acceptPolled() }

func (l *listener) closeAccepting() {}

func (c *clientConn) raw() bool { return false }

func (c *clientConn) readRaw(b []byte) (int, error) { return c.Socket.Read(b) }

func (c *clientConn) writeRaw(b []byte) (int, error) { return c.Socket.Write(b) }

func (c *clientConn) toPoller() error { return nil }

func (c *clientConn) localAddr() net.Addr { return c.Conn.LocalAddr() }

func (c *clientConn) closeSocket() error { return c.Conn.Close() }
