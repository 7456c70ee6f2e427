package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"fastlb/upstream"
)

// rawSocket is a plain client connection's TCP socket kept out of Go's
// poller. It is accepted in blocking mode, which keeps os.NewFile from
// registering it there, read and written with MSG_DONTWAIT (clientConn's
// Socket, made with upstream.Socket.InitRaw), and waited on only in the
// parking's epoll set (see Server.block). A request arriving
// then wakes two epoll entries, the socket's in the set and the set's in
// Go's poller, where a socket in both Go's poller and the set woke three
// (on CPU 1 of make bench, the wake-up of an arriving request cost 0.87 µs
// behind fastlb against 0.64 behind HAProxy, whose socket is in one set).
// Measured, that saves small GETs about 1% of CPU, within the noise, and a
// parked connection about 0.5 KiB and a new one two system calls. The
// os.File guards the descriptor: a Close while a read is in the kernel
// closes it once the read returns, never under it.
//
// A connection leaves the set for Go's poller for good (clientConn.toPoller)
// when it is hijacked, since a tunnel reads and writes at once, and when
// the set is gone (Shutdown) or failed.
type rawSocket struct {
	file  *os.File // nil: the connection is in Go's poller
	raddr *net.TCPAddr
	laddr atomic.Pointer[net.TCPAddr] // looked up on first use
}

// initRaw makes c's socket the blocking descriptor fd, accepted from a
// peer at raddr.
func (c *clientConn) initRaw(fd int, raddr *net.TCPAddr) error {
	f := os.NewFile(uintptr(fd), "")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	c.sock.file, c.sock.raddr = f, raddr
	c.Socket.InitRaw(rc)
	return nil
}

// raw reports whether c's socket is outside Go's poller.
func (c *clientConn) raw() bool { return c.sock.file != nil }

// recvNow reads what the socket holds without waiting: syscall.EAGAIN if
// nothing.
func (c *clientConn) recvNow(b []byte) (int, error) {
	n, err := c.Socket.ReadNow(b)
	if err != nil && err != syscall.EAGAIN && err != io.EOF {
		err = c.opError("read", err)
	}
	return n, err
}

// readRaw reads like net.Conn's Read, waiting in the parking's set for
// data until the read deadline.
func (c *clientConn) readRaw(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, err := c.recvNow(b)
		if err != syscall.EAGAIN {
			return n, err
		}
		switch c.srv.block(c, c.readDeadline) {
		case waitTimeout:
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		case waitClosed:
			return 0, c.opError("read", net.ErrClosed)
		case waitUnavailable:
			if err := c.toPoller(); err != nil {
				return 0, err
			}
			return c.Socket.Read(b)
		}
	}
}

// writeRaw writes all of b like net.Conn's Write, waiting in the parking's
// set for room in the socket's buffer until the write deadline.
func (c *clientConn) writeRaw(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Socket.WriteNow(b[n:])
		n += m
		switch {
		case err == nil:
			continue
		case err != syscall.EAGAIN:
			return n, c.opError("write", err)
		}
		switch c.srv.block(c, c.writeDeadline) {
		case waitTimeout:
			return n, c.opError("write", os.ErrDeadlineExceeded)
		case waitClosed:
			return n, c.opError("write", net.ErrClosed)
		case waitUnavailable:
			if err := c.toPoller(); err != nil {
				return n, err
			}
			m, err := c.Socket.Write(b[n:])
			return n + m, err
		}
	}
	return n, nil
}

// toPoller hands c's socket over to Go's poller for good, as a *net.TCPConn
// that c.Socket reads and writes, with the deadlines c kept: it leaves the
// parking's set first, since the set follows the socket, not the
// descriptor, while any descriptor of it is open. Only the goroutine
// serving c calls it.
func (c *clientConn) toPoller() error {
	c.srv.leave(c)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return c.opError("read", net.ErrClosed)
	}
	nc, err := net.FileConn(c.sock.file) // a duplicate, made non-blocking
	if err != nil {
		return c.opError("read", err)
	}
	c.sock.file.Close() //nolint:errcheck // the duplicate holds the socket
	c.sock.file = nil
	c.Socket.Init(nc)
	if err := c.armRead(c.readDeadline, 0); err != nil {
		return err
	}
	if c.writeDeadline.IsZero() {
		return nil
	}
	return c.Conn.SetWriteDeadline(c.wd.Arm(c.writeDeadline, 0))
}

// closeSocket closes c's socket, wherever it is: the caller has taken c
// out of the parking.
func (c *clientConn) closeSocket() error {
	c.mu.Lock()
	f := c.sock.file
	c.mu.Unlock()
	if f == nil {
		return c.Conn.Close()
	}
	return f.Close()
}

// localAddr is the address c was accepted on, looked up once.
func (c *clientConn) localAddr() net.Addr {
	if a := c.sock.laddr.Load(); a != nil {
		return a
	}
	var sa syscall.Sockaddr
	var err error
	if cerr := c.Control(func(fd uintptr) { sa, err = syscall.Getsockname(int(fd)) }); cerr != nil || err != nil {
		return &net.TCPAddr{}
	}
	a := tcpAddr(sa)
	c.sock.laddr.Store(a)
	return a
}

// opError is err as net.Conn's Read and Write report it. Once c is
// closed, the os.File's own error for that is reported as net.Conn's.
func (c *clientConn) opError(op string, err error) error {
	if c.closed.Load() && !errors.Is(err, os.ErrDeadlineExceeded) {
		err = net.ErrClosed
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// tcpAddr is the address sa as the net package has it.
func tcpAddr(sa syscall.Sockaddr) *net.TCPAddr {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IPv4(sa.Addr[0], sa.Addr[1], sa.Addr[2], sa.Addr[3]), Port: sa.Port}
	case *syscall.SockaddrInet6:
		a := &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a
	}
	return &net.TCPAddr{}
}

// accepting is a listener's own duplicate of its listening socket, in Go's
// poller as a file, whose syscall.RawConn can wait for connections and
// accept them outside Go's poller (a listener's own RawConn cannot read).
type accepting struct {
	file   *os.File // nil: accept with acceptPolled
	rc     syscall.RawConn
	accept func(fd uintptr) bool // made once: a closure per call would allocate
	nfd    int
	sa     syscall.Sockaddr
	err    error
}

// init prepares l to accept outside Go's poller. Where it cannot make the
// duplicate, l accepts with acceptPolled.
func (l *listener) init() {
	lrc, err := l.TCPListener.SyscallConn()
	if err != nil {
		return
	}
	fd := -1
	cerr := lrc.Control(func(lfd uintptr) {
		if nfd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, lfd, syscall.F_DUPFD_CLOEXEC, 0); errno == 0 {
			fd = int(nfd)
		}
	})
	if cerr != nil || fd < 0 {
		return
	}
	f := os.NewFile(uintptr(fd), "fastlb-listener") // non-blocking as the listener: in Go's poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return
	}
	l.file, l.rc = f, rc
	l.accept = func(fd uintptr) bool {
		l.nfd, l.sa, l.err = syscall.Accept4(int(fd), syscall.SOCK_CLOEXEC) // blocking: see rawSocket
		return l.err != syscall.EAGAIN
	}
}

// closeAccepting closes the duplicate, ending a wait for a connection.
func (l *listener) closeAccepting() {
	if l.file != nil {
		l.file.Close()
	}
}

// acceptConn accepts the listener's next connection, outside Go's poller
// (see rawSocket) where it can, answering and closing one over
// max_client_conns itself.
func (l *listener) acceptConn() (net.Conn, error) {
	if l.file == nil {
		return l.acceptPolled()
	}
	for {
		if err := l.rc.Read(l.accept); err != nil {
			if l.retry.isClosed() {
				err = net.ErrClosed // what fasthttp's Serve takes for the end
			}
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: err}
		}
		switch l.err {
		case nil:
		case syscall.ECONNABORTED, syscall.EINTR:
			continue
		default:
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.err)}
		}
		fd, sa := l.nfd, l.sa
		l.sa = nil
		if l.srv.open.Add(1) > l.srv.maxConns {
			l.srv.open.Add(-1)
			// A new socket's buffer takes the answer whole.
			upstream.Sendto(uintptr(fd), tooManyConns, syscall.MSG_DONTWAIT)
			syscall.Close(fd)
			continue
		}
		// As Go's net package does with each connection it accepts
		// (accepted sockets do not take it from the listening one).
		syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1) //nolint:errcheck // as Go's: answers go out a little later without it
		c := &clientConn{srv: l.srv, slack: l.srv.slack}
		if err := c.initRaw(fd, tcpAddr(sa)); err != nil {
			l.srv.open.Add(-1) // init closed fd
			return nil, err
		}
		return c, nil
	}
}
