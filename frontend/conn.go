package frontend

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/internal/sock"
)

// stateClosed marks a conn whose socket is closed; the other states are
// fasthttp's (fasthttp.ConnState), as connState last heard them.
const stateClosed = -1

// conn is a client connection as the server keeps it. A plain one is what
// fasthttp serves, in turns: a turn is one call of Server.ServeConn, and
// ends, as fasthttp documents, by its closing the connection it was given.
// It ends thus when the client closes, when a request or answer fails, and
// when the connection waited park_idle_after for its next request (the
// IdleTimeout the server gives fasthttp). In that last case conn's Close
// leaves the socket open and the connection is parked (see serveTurns);
// otherwise it closes the socket.
//
// The fields from idleSince on belong to the goroutine serving the
// connection, or to its tunnel once it is hijacked (direct).
type conn struct {
	sock.Socket
	srv    *Server
	state  atomic.Int32 // fasthttp's last report (connState), or stateClosed
	closed atomic.Bool

	idleSince time.Time // when the last answer was sent, as reckoned when the connection parks
	answered  bool      // an answer was sent in this turn
	quiet     uint8     // the waits for a request in a row that lasted park_idle_after, up to quietWaits
	timedOut  bool      // the last Read ended at its deadline, having read nothing
	park      bool      // Close kept the socket open: the turn ended idle
	// direct is set once the connection has left fasthttp's serving loop
	// (an upgrade) or speaks TLS: its deadlines are then set as asked, by
	// the goroutines that read and write it.
	direct bool

	// In the server's epoll set (park_linux.go), under its lock.
	inSet      bool
	fd         int
	prev, next *conn

	// The deadlines of a request being served are armed lazily, up to
	// srv.slack late (see sock.LazyDeadline). A read deadline set while a
	// request is read is armed by the next Read that must wait, if any:
	// most requests are whole in the socket when their first byte is, and
	// the wait for the next request has a deadline of its own.
	rd, wd       sock.LazyDeadline
	readDeadline time.Time
	readPending  bool
	// expired: the wait for the next request ends at once (a quiet
	// connection), without a deadline armed on the socket.
	expired bool

	// Set before the connection is first served (see admitted).
	remote  net.Addr    // the client's address from a PROXY protocol header; nil: the peer's
	pending []byte      // read before serving began; Read returns it first
	client  netip.Addr  // counted in srv.clients while counted is set
	counted atomic.Bool // set once client is counted; cleared by whoever uncounts it
}

// RemoteAddr is the client's address: the one its PROXY protocol header
// named, else the peer's.
func (c *conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// tlsConn is a TLS client connection as fasthttp serves it: crypto/tls's,
// over c. It is never parked: crypto/tls keeps its buffers with the
// connection whatever it does.
type tlsConn struct {
	*tls.Conn
	c *conn
}

// parkSlack is how much later than park_idle_after a wait for the next
// request may end: a connection's waits between requests closer together
// than it then share one armed timer.
func (s *Server) parkSlack() time.Duration { return s.parkAfter / 8 }

// quietWaits is how many waits for a request in a row must have lasted
// park_idle_after before a connection is parked as soon as it has been
// answered: a client that pauses before every request then costs a park
// and a wake per pause, not a wait of park_idle_after as well, and holds
// no buffers while it pauses. Two rather than one, so that a client that
// sends bursts with long pauses between them (a browser) is not parked and
// woken again after the first request of each burst.
const quietWaits = 2

// errExpired is what a Read of a quiet connection's wait for its next
// request reports: its deadline passed (net.Error, Timeout true), as a
// read of a socket whose deadline has passed reports, and nothing read.
var errExpired error = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}

// SetReadDeadline arms a deadline for the wait for the next request at once
// (unless the armed one covers it), and leaves any other for the Read that
// must wait (see Read). A quiet connection's wait has a deadline already
// past: it ends at once unless the request is already read, and the
// connection parks; the socket's own deadline is left as it is, since no
// Read reaches the socket before another deadline is set.
func (c *conn) SetReadDeadline(t time.Time) error {
	if c.direct {
		return c.Conn.SetReadDeadline(t)
	}
	c.expired = false
	if fasthttp.ConnState(c.state.Load()) != fasthttp.StateIdle {
		c.readDeadline, c.readPending = t, true
		return nil
	}
	c.readPending = false
	if c.quiet >= quietWaits && c.srv.parkAfter > 0 {
		c.expired = true
		return nil
	}
	return c.armRead(t, c.srv.parkSlack())
}

// woken notes that c's next request arrived while it was parked: the wait
// lasted park_idle_after, or, if it parked at once, may have been shorter.
func (c *conn) woken() {
	if time.Since(c.idleSince) < c.srv.parkAfter {
		c.quiet = 0
	} else if c.quiet < quietWaits {
		c.quiet++
	}
	c.state.CompareAndSwap(int32(fasthttp.StateIdle), int32(fasthttp.StateNew))
}

// armRead sets the read deadline to t, up to slack late.
func (c *conn) armRead(t time.Time, slack time.Duration) error {
	if c.rd.Covers(t, slack) {
		return nil
	}
	err := c.Conn.SetReadDeadline(c.rd.Arm(t, slack))
	if err != nil {
		c.rd.Forget()
	}
	return err
}

// SetWriteDeadline sets the write deadline, up to srv.slack late.
func (c *conn) SetWriteDeadline(t time.Time) error {
	if c.direct {
		return c.Conn.SetWriteDeadline(t)
	}
	if c.wd.Covers(t, c.srv.slack) {
		return nil
	}
	err := c.Conn.SetWriteDeadline(c.wd.Arm(t, c.srv.slack))
	if err != nil {
		c.wd.Forget()
	}
	return err
}

// SetDeadline sets both deadlines as asked. fasthttp calls it when the
// connection leaves its serving loop (an upgrade): from then on the
// tunnel sets the deadlines, from two goroutines.
func (c *conn) SetDeadline(t time.Time) error {
	c.direct, c.readPending = true, false
	return c.Conn.SetDeadline(t)
}

// Read reads, and notes whether it ended at its deadline with nothing read.
// A read deadline left pending is armed only if the Read must wait: most
// requests are whole in the socket when their wait ends (or the connection
// wakes from parking), and then none is.
func (c *conn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		if c.pending = c.pending[n:]; len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	if c.expired {
		c.timedOut = true
		return 0, errExpired
	}
	if c.readPending {
		n, err := c.Socket.ReadNow(b)
		if err != sock.ErrWouldBlock {
			if err != nil {
				c.timedOut = false
			}
			return n, err
		}
		c.readPending = false
		if err := c.armRead(c.readDeadline, c.srv.slack); err != nil {
			return 0, err
		}
	}
	n, err := c.Socket.Read(b)
	if err != nil && !c.direct {
		c.timedOut = n == 0 && errors.Is(err, os.ErrDeadlineExceeded)
	}
	return n, err
}

// Close ends fasthttp's turn. A plain connection whose turn ended because
// it waited park_idle_after for its next request is kept for parking; any
// other is closed.
func (c *conn) Close() error {
	if !c.direct && c.timedOut && c.srv.parkAfter > 0 &&
		fasthttp.ConnState(c.state.Load()) == fasthttp.StateIdle {
		c.timedOut = false
		c.park = true
		// The wait that ended lasted park_idle_after, or nothing for a
		// quiet connection (see SetReadDeadline): the clock is read here,
		// once per park, rather than at every answer.
		waited := c.srv.parkAfter
		if c.quiet >= quietWaits {
			waited = 0
		}
		c.idleSince = time.Now().Add(-waited)
		return nil
	}
	return c.close()
}

// close closes the socket, once, whoever calls it.
func (c *conn) close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	s := c.srv
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	if c.state.Swap(stateClosed) == int32(fasthttp.StateHijacked) {
		s.tunnels.Add(-1)
	}
	if c.counted.CompareAndSwap(true, false) {
		s.clients.release(c.client)
	}
	s.open.Add(-1)
	return c.Conn.Close()
}

// serveTurns serves a plain connection until it closes or is parked. The
// goroutine that served it, whose stack grew to what serving takes, then
// ends: a parked connection holds its socket and no buffers, and waits in
// the server's epoll set (park_linux.go), or else in a goroutine of its
// own (waitParked).
func (s *Server) serveTurns(c *conn) {
	c.answered = false
	s.serving(1)
	s.fs.ServeConn(c) //nolint:errcheck // fasthttp closes c and answers what it could not serve
	s.serving(-1)
	if c.park {
		c.park = false
		s.park(c)
	}
}

// waitParked waits for a parked connection's next request in a goroutine of
// its own, in Go's poller,
// until client_idle_timeout after its last answer; then it serves the
// connection again, or closes it.
func (s *Server) waitParked(c *conn) {
	s.mu.Lock()
	stopping := s.stopping
	s.mu.Unlock()
	if stopping {
		c.close() //nolint:errcheck // nothing to report it to
		return
	}
	c.rd.Forget()
	if err := c.Conn.SetReadDeadline(s.idleDeadline(c)); err != nil {
		c.close() //nolint:errcheck // already failing
		return
	}
	s.parked.Add(1)
	err := c.Wait()
	s.parked.Add(-1)
	if err != nil {
		c.close() //nolint:errcheck // the idle timeout, or closed by a shutdown
		return
	}
	c.woken()
	s.serveTurns(c)
}

// idleDeadline is when c, idle, is closed: client_idle_timeout after its
// last answer; zero for never.
func (s *Server) idleDeadline(c *conn) time.Time {
	if d := s.opts.IdleTimeout; d > 0 {
		return c.idleSince.Add(d)
	}
	return time.Time{}
}

// listener is a listener whose accepts are tried again (see acceptRetry).
type listener struct {
	net.Listener
	retry *acceptRetry
}

// Accept accepts the listener's next connection.
func (l *listener) Accept() (net.Conn, error) { return l.retry.accept(l.Listener.Accept) }

// Close closes the listener, ending a wait in Accept.
func (l *listener) Close() error {
	l.retry.close()
	return l.Listener.Close()
}
