package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/upstream"
)

// parkAfter is how long a plain keep-alive client connection may wait for
// its next request while it holds a serving goroutine and fasthttp's read and
// write buffers (about 20 KiB). After that it is parked: the goroutine ends,
// the buffers go back to their pools, and the socket waits for the next
// request (in an epoll set on Linux, see parking), until client_idle_timeout;
// then it is served again. Back-to-back requests do not park (but see
// quietWaits for the first after long pauses). A client that
// pauses longer than this costs, per pause, a timer, the parking and
// fasthttp's setting up of the connection once more: about 25 µs of CPU on
// the machine it was measured on. Longer would park fewer pauses but hold
// more memory in connections not yet parked.
const parkAfter = 100 * time.Millisecond

// quietWaits is how many waits for a request in a row must have lasted
// parkAfter or more before a connection is parked as soon as it has been
// answered, without waiting parkAfter first: a client that pauses between
// all its requests then costs one park and one wake per pause instead of a
// timer's firing as well, and gives its buffers back at once. One short wait
// sets the count back to zero. Two rather than one, so that a client that
// sends bursts of requests with long pauses between them (a browser) is not
// parked and woken again after the first request of each burst.
const quietWaits = 2

// parkSlack is how much later than parkAfter a wait may end: the waits
// ending within it end together, on one firing of the set's deadline
// rather than one each (see parking.rearm for what moving that deadline
// per wait cost).
const parkSlack = parkAfter / 8

// Server is the client-facing server of one listener: fasthttp's server, the
// max_client_conns limit, and the parking of idle plain connections (see
// parkAfter). Its methods are safe for concurrent use.
type Server struct {
	fs       *fasthttp.Server
	draining atomic.Bool // answers carry Connection: close (see ShutdownWithContext)
	lnMu     sync.Mutex
	lns      []*onceListener // being served
	serving  atomic.Int32    // Serve calls running
	logger   *slog.Logger
	maxConns int64
	slack    time.Duration // of plain client connections' deadlines (see upstream.LazyDeadline)
	open     atomic.Int64  // plain connections accepted and not yet closed, parked ones included

	parking                // the parked connections, kept as the platform allows
	waiters sync.WaitGroup // goroutines of the parking, and the connections it serves again
	workers workers        // the goroutines that serve them
}

// Serve accepts connections on ln and serves them until ln is closed.
// Connections of a TCP listener are counted against max_client_conns here
// and may be parked; those of another listener (TLS) are served as they
// come, under fasthttp's own limit.
func (s *Server) Serve(ln net.Listener) error {
	if tl, ok := ln.(*net.TCPListener); ok {
		l := &listener{TCPListener: tl, srv: s, retry: newAcceptRetry(s.logger)}
		l.init()
		ln = l
	}
	ol := &onceListener{Listener: ln}
	s.lnMu.Lock()
	s.lns = append(s.lns, ol)
	s.lnMu.Unlock()
	s.serving.Add(1)
	defer s.serving.Add(-1)
	return s.fs.Serve(ol)
}

// onceListener is a listener that both the drain and fasthttp's Shutdown
// close: the second Close does nothing and reports no error.
type onceListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}

// OpenConnections is the number of client connections open: those fasthttp
// is serving and those parked.
func (s *Server) OpenConnections() int {
	// fasthttp counts each Serve that is accepting as one more connection,
	// and takes one off for it while no Shutdown runs, whatever the number
	// of Serve calls.
	return int(s.fs.GetOpenConnectionsCount()) + 1 - int(s.serving.Load()) + s.parkedCount()
}

// Shutdown stops accepting, closes idle connections, parked ones included,
// and waits for in-flight requests to finish.
func (s *Server) Shutdown() error { return s.ShutdownWithContext(context.Background()) }

// drainIdle is how long a keep-alive connection may stay idle, after a
// shutdown began, before it is closed without an answer. A client in the
// middle of its work sends its next request within a round trip and its
// own processing of the last answer, milliseconds; a browser fetching a
// page's parts, within a few hundred. Closing a connection at that moment
// would fail the request it is already sending, since nothing tells the
// client before it writes. One idle for a second is between bursts: it is
// closed, as nginx and HAProxy close idle connections when they stop.
const drainIdle = time.Second

// ShutdownWithContext is Shutdown that gives up waiting when ctx ends,
// returning ctx.Err().
//
// It first stops accepting and, for drainIdle (less once no connection is
// left, or when ctx ends sooner), answers every request with Connection:
// close, so that a client sending its next request on a keep-alive
// connection gets its answer and is told to go elsewhere rather than
// finding the connection closed under it. Then it closes the connections
// left idle, all idle since before the shutdown began, and waits for the
// requests still in flight.
func (s *Server) ShutdownWithContext(ctx context.Context) error {
	s.draining.Store(true)
	s.lnMu.Lock()
	for _, ln := range s.lns {
		ln.Close() //nolint:errcheck // fasthttp's Shutdown reports it
	}
	s.lnMu.Unlock()
	drained := time.NewTimer(drainIdle)
	tick := time.NewTicker(10 * time.Millisecond)
wait:
	for s.OpenConnections() > 0 {
		select {
		case <-tick.C:
		case <-drained.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	tick.Stop()
	drained.Stop()
	s.closeParked() // and any connection parking from now on is closed
	s.workers.stop()
	err := s.fs.ShutdownWithContext(ctx)
	done := make(chan struct{})
	go func() { s.waiters.Wait(); s.workers.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// connState follows fasthttp's view of a connection: idle between requests,
// active once a request's first byte arrived. fasthttp calls it for these
// two states from the goroutine serving the connection.
func (s *Server) connState(c net.Conn, state fasthttp.ConnState) {
	cc, ok := c.(*clientConn)
	if !ok {
		return
	}
	switch state {
	case fasthttp.StateIdle:
		cc.between = true
	case fasthttp.StateActive:
		cc.between = false
	}
}

// serveAgain serves a parked connection whose next request is arriving, on
// one of s.workers. The caller has counted it in s.waiters.
func (s *Server) serveAgain(c *clientConn) { s.workers.run(c) }

// serveParked is the workers' serving of a connection handed to serveAgain.
func (s *Server) serveParked(c *clientConn) {
	defer s.waiters.Done()
	c.between = false
	if time.Now().Before(c.parkAt) {
		c.quiet = 0 // parked at once, and woken within parkAfter
	} else if c.quiet < quietWaits {
		c.quiet++
	}
	s.fs.ServeConn(c) //nolint:errcheck // fasthttp closes c and answers what it could not serve
}

// listener counts a TCP listener's connections against max_client_conns
// and wraps them for parking. Where connections can park, it accepts them
// outside Go's poller (see rawSocket).
type listener struct {
	*net.TCPListener
	srv   *Server
	retry *acceptRetry

	// The platform's state of accepting.
	accepting
}

// Accept accepts the listener's next connection (see acceptRetry).
func (l *listener) Accept() (net.Conn, error) { return l.retry.accept(l.acceptConn) }

// Close closes the listener, ending a wait in Accept.
func (l *listener) Close() error {
	l.retry.close()
	l.closeAccepting()
	return l.TCPListener.Close()
}

// RetryAccepts returns ln with its accepts tried again as Server.Serve's
// are (see acceptRetry), failures logged to logger: for the listeners that
// do not go to Server.Serve as they are (HTTPS, the admin API).
func RetryAccepts(ln net.Listener, logger *slog.Logger) net.Listener {
	return &retryListener{Listener: ln, retry: newAcceptRetry(logger)}
}

type retryListener struct {
	net.Listener
	retry *acceptRetry
}

func (l *retryListener) Accept() (net.Conn, error) { return l.retry.accept(l.Listener.Accept) }

func (l *retryListener) Close() error {
	l.retry.close()
	return l.Listener.Close()
}

// acceptRetry is a listener's trying again of accepts that fail for want
// of something the system may soon have again (file descriptors, memory):
// logged, and tried again after 5 ms, doubling up to 1 s while the
// failures go on, as Go's net/http server does; HAProxy and nginx likewise
// pause accepting rather than stop. (fasthttp's Serve stops for good on
// such an error: the listening socket stayed open, and clients queued on
// it unanswered.)
type acceptRetry struct {
	logger  *slog.Logger
	closed  chan struct{} // closed by close
	closing sync.Once
	delay   time.Duration // before trying again, while accepting fails
}

func newAcceptRetry(logger *slog.Logger) *acceptRetry {
	return &acceptRetry{logger: logger, closed: make(chan struct{})}
}

// minAcceptDelay and maxAcceptDelay bound how long Accept waits before
// trying again after an accept failed.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// accept calls try until it accepts a connection or fails for good,
// waiting between failures that may pass, or until close.
func (r *acceptRetry) accept(try func() (net.Conn, error)) (net.Conn, error) {
	for {
		c, err := try()
		if err == nil || !retryAccept(err) || r.isClosed() {
			r.delay = 0
			return c, err
		}
		r.delay = min(max(2*r.delay, minAcceptDelay), maxAcceptDelay)
		r.logger.Warn("accepting a client connection failed; trying again", "error", err.Error(), "in", r.delay.String())
		select {
		case <-time.After(r.delay):
		case <-r.closed:
		}
	}
}

// retryAccept reports whether accepting failed for want of something the
// system may soon have again.
func retryAccept(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno) && (errno.Temporary() || errno == syscall.ENOBUFS || errno == syscall.ENOMEM)
}

// close ends a wait between failures, and any more retrying.
func (r *acceptRetry) close() { r.closing.Do(func() { close(r.closed) }) }

// isClosed reports whether close was called.
func (r *acceptRetry) isClosed() bool {
	select {
	case <-r.closed:
		return true
	default:
		return false
	}
}

// acceptPolled accepts the listener's next connection as Go's net package
// does, in its poller, and refuses one over max_client_conns.
func (l *listener) acceptPolled() (net.Conn, error) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			return nil, err
		}
		if l.srv.open.Add(1) > l.srv.maxConns {
			l.srv.open.Add(-1)
			go refuseConn(c)
			continue
		}
		cc := &clientConn{srv: l.srv, slack: l.srv.slack}
		cc.Init(c)
		return cc, nil
	}
}

// refuseConn answers a connection over max_client_conns with 503 and closes
// it, as fasthttp does with one over its own limit.
func refuseConn(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(time.Second)) //nolint:errcheck // the write fails instead
	c.Write(tooManyConns)                           //nolint:errcheck // closed next either way
	c.Close()
}

// SocketListener returns a listener whose connections are read and
// written as upstream.Sockets, for a listener that does not go to
// Server.Serve as it is (the TLS one goes through crypto/tls first).
func SocketListener(ln net.Listener) net.Listener { return socketListener{ln} }

type socketListener struct{ net.Listener }

func (l socketListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s := &upstream.Socket{}
	s.Init(c)
	return s, nil
}

// tooManyConns is the answer on a connection over max_client_conns.
var tooManyConns = func() []byte {
	body := "503 Service Unavailable: too many client connections\n"
	return []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + body)
}()

// clientConn is a plain client connection that can be parked between
// requests. between, deadline and parkAt belong to the goroutine serving it
// (the parking reads parkAt while that goroutine waits in it, and deadline
// once the connection is parked), spot to the parking (under its lock). Its
// socket is sock, outside Go's poller, where the platform allows (see
// rawSocket); otherwise, and once it has left sock, it is read and written
// as an upstream.Socket.
type clientConn struct {
	upstream.Socket
	sock rawSocket
	srv  *Server

	between  bool      // fasthttp is waiting for the next request: the next Read may park
	deadline time.Time // the idle deadline fasthttp set for that wait
	parkAt   time.Time // when the wait ends in parking (deadline, or parkAfter before it)
	full     bool      // the last read filled its buffer
	quiet    uint8     // the last waits for a request that lasted parkAfter or more, in a row, up to quietWaits

	// The deadlines of the Socket, in Go's poller.
	rd, wd upstream.LazyDeadline
	slack  time.Duration // of the deadlines while fasthttp serves c; 0 once hijacked
	// A read deadline set while a request is served is armed by the next
	// Read: most requests are read whole with their first byte, and the
	// next read is then the wait for the next request, which needs none.
	// The deadlines of sock are only kept: a read or write that has to
	// wait waits until them.
	readDeadline  time.Time
	readPending   bool
	writeDeadline time.Time

	mu      sync.Mutex  // orders the closing of sock with its leaving (toPoller)
	parking atomic.Bool // Read gave up waiting: fasthttp's Close parks c instead
	closed  atomic.Bool
	spot    parkSpot // the parking's own record of c
}

// SetReadDeadline keeps the deadline of the wait for the next request,
// which Read enforces, and leaves any other for the next Read to arm.
// fasthttp has just read the clock for t, which is that moment plus its
// IdleTimeout, so the time to park follows from t without reading it again.
// A wait without a deadline (fastlb always has client_idle_timeout), or one
// where connections are not parked, is fasthttp's and never parks.
func (c *clientConn) SetReadDeadline(t time.Time) error {
	raw := c.raw()
	if raw {
		c.readDeadline = t
	}
	if !c.between {
		if !raw {
			c.readDeadline, c.readPending = t, true
		}
		return nil
	}
	c.readPending = false
	c.deadline, c.parkAt = t, t
	if !canPark || t.IsZero() {
		if raw {
			return nil
		}
		return c.armRead(t, 0)
	}
	if idle := c.srv.fs.IdleTimeout; idle > parkAfter {
		c.parkAt = t.Add(parkAfter - idle)
	}
	return nil
}

// armRead sets c's read deadline to t, up to slack late (see
// upstream.LazyDeadline).
func (c *clientConn) armRead(t time.Time, slack time.Duration) error {
	if c.rd.Covers(t, slack) {
		return nil
	}
	err := c.Conn.SetReadDeadline(c.rd.Arm(t, slack))
	if err != nil {
		c.rd.Forget()
	}
	return err
}

// SetWriteDeadline sets c's write deadline, up to c.slack late.
func (c *clientConn) SetWriteDeadline(t time.Time) error {
	if c.raw() {
		c.writeDeadline = t
		return nil
	}
	if c.wd.Covers(t, c.slack) {
		return nil
	}
	err := c.Conn.SetWriteDeadline(c.wd.Arm(t, c.slack))
	if err != nil {
		c.wd.Forget()
	}
	return err
}

// Read waits for the next request, between requests, in the parking's epoll
// set: connections are then served in the order their requests arrive, and
// no read is tried before one has. A wait that reaches parkAt ends with
// io.EOF, after which fasthttp lets go of the connection and calls Close,
// which parks it; one that reaches the idle deadline ends in a timeout.
// Where the set cannot take the connection, it waits in Go's poller until
// the idle deadline instead.
func (c *clientConn) Read(b []byte) (int, error) {
	if !c.between {
		var n int
		var err error
		if c.raw() {
			n, err = c.readRaw(b)
		} else {
			if c.readPending {
				c.readPending = false
				if err := c.armRead(c.readDeadline, c.slack); err != nil {
					return 0, err
				}
			}
			n, err = c.Socket.Read(b)
		}
		c.full = n == len(b)
		return n, err
	}
	if canPark && !c.deadline.IsZero() {
		// A quiet connection parks at once unless its request is
		// already there (see quietWaits).
		atOnce := c.quiet >= quietWaits
		// The set reports what arrives after the last read: one that
		// filled its buffer may have left more behind.
		result := waitReady
		if !c.full {
			result = c.srv.wait(c, atOnce)
		}
		for {
			switch result {
			case waitReady:
				n, err := c.readNow(b)
				if err == errNothingYet {
					c.full = false
					result = c.srv.wait(c, atOnce)
					continue
				}
				c.between, c.full, c.quiet = false, n == len(b), 0
				return n, err
			case waitTimeout:
				return 0, c.idle()
			case waitClosed:
				return 0, net.ErrClosed
			}
			break // waitUnavailable
		}
		// Without the set there is no parking either: the wait lasts
		// until the idle deadline, in Go's poller.
		if c.raw() {
			if err := c.toPoller(); err != nil {
				return 0, err
			}
		}
		if err := c.armRead(c.deadline, 0); err != nil {
			return 0, err
		}
	}
	var n int
	var err error
	if c.raw() {
		n, err = c.readRaw(b)
	} else {
		n, err = c.Socket.Read(b)
	}
	if n == 0 && canPark && errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, c.idle()
	}
	c.between, c.full = false, n == len(b)
	return n, err
}

// Write writes all of b, waiting for room until the write deadline.
func (c *clientConn) Write(b []byte) (int, error) {
	if c.raw() {
		return c.writeRaw(b)
	}
	return c.Socket.Write(b)
}

// idle ends a wait for the next request that reached parkAt: with io.EOF,
// so that fasthttp's Close parks the connection, unless its idle deadline
// has come too.
func (c *clientConn) idle() error {
	if time.Now().Before(c.deadline) {
		c.parking.Store(true)
		return io.EOF
	}
	return os.ErrDeadlineExceeded
}

// SetDeadline sets both deadlines, to the time. fasthttp calls it to clear
// them for a hijacked connection, which then leaves the parking, and
// whose tunnel sets its own deadlines from two goroutines at once: its
// socket goes to Go's poller.
func (c *clientConn) SetDeadline(t time.Time) error {
	if c.raw() {
		if err := c.toPoller(); err != nil {
			return err
		}
	} else if canPark {
		c.srv.leave(c)
	}
	c.slack, c.readPending = 0, false
	err := c.Conn.SetDeadline(t)
	if err != nil {
		c.rd.Forget()
		c.wd.Forget()
		return err
	}
	c.rd.Arm(t, 0)
	c.wd.Arm(t, 0)
	return nil
}

// LocalAddr is the address the connection was accepted on.
func (c *clientConn) LocalAddr() net.Addr {
	if c.raw() {
		return c.localAddr()
	}
	return c.Conn.LocalAddr()
}

// RemoteAddr is the client's address.
func (c *clientConn) RemoteAddr() net.Addr {
	if c.raw() {
		return c.sock.raddr
	}
	return c.Conn.RemoteAddr()
}

// waitResult is how a wait for the next request ended.
type waitResult uint8

const (
	waitUnavailable waitResult = iota // no set to wait in: wait in Go's poller
	waitReady                         // the socket is readable
	waitTimeout                       // parkAt came
	waitClosed                        // the connection was closed, or the server is shutting down
)

// errNothingYet is readNow finding nothing to read: the readiness it was
// woken for had been consumed by an earlier read.
var errNothingYet = errors.New("nothing to read yet")

// Close parks a connection that Read let go of, and closes any other.
func (c *clientConn) Close() error {
	if c.parking.CompareAndSwap(true, false) {
		c.srv.park(c)
		return nil
	}
	return c.close()
}

func (c *clientConn) close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.srv.forget(c)
	c.srv.open.Add(-1)
	return c.closeSocket()
}
