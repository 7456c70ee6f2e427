package upstream

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Socket is a connection whose TCP socket is read with recvfrom and written
// with sendto, as HAProxy does, rather than with read and write, which Go's
// net package uses. For a socket the two pairs do the same, but read and
// write go through the kernel's generic file layer first (a file position
// lock, permission and notification hooks): on small proxied requests
// (four calls each) that cost 2 to 4% of fastlb's CPU. Waits and deadlines
// are still those of Go's poller, through the connection's syscall.RawConn.
//
// A connection other than a *net.TCPConn is read and written as it is.
// Reads (Read and ReadNow share their state) and writes may each be made by
// one goroutine at a time, as fasthttp makes them.
type Socket struct {
	net.Conn
	rc syscall.RawConn // nil: Conn's own Read and Write

	// recv and peek read into rbuf, send writes wbuf, each reporting in
	// the fields after it: made once per socket because a closure per call
	// would allocate.
	recv, send    func(fd uintptr) bool
	peek, sendNow func(fd uintptr)
	rbuf, wbuf    []byte
	rn, wn        int
	rerr          syscall.Errno
	werr          error
}

// Init makes s the socket of c.
func (s *Socket) Init(c net.Conn) {
	*s = Socket{Conn: c}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	s.init(rc, 0)
}

// InitRaw makes s the socket of a descriptor in blocking mode outside Go's
// poller, reached through rc (an os.File's): one whose readiness is
// watched elsewhere (the proxy's client sockets). Such a socket is read
// with ReadNow and written with WriteNow, both with MSG_DONTWAIT, and has
// no net.Conn: its errors are left for its owner to name.
func (s *Socket) InitRaw(rc syscall.RawConn) {
	*s = Socket{}
	s.init(rc, syscall.MSG_DONTWAIT)
}

// init makes the closures that read and write through rc with flags.
func (s *Socket) init(rc syscall.RawConn, flags int) {
	s.rc = rc
	s.recv = func(fd uintptr) bool {
		s.rn, s.rerr = recvfrom(fd, s.rbuf, flags)
		return s.rerr != syscall.EAGAIN
	}
	s.peek = func(fd uintptr) { s.rn, s.rerr = recvfrom(fd, s.rbuf, flags) }
	s.sendNow = func(fd uintptr) { s.send(fd) }
	s.send = func(fd uintptr) bool {
		for s.wn < len(s.wbuf) {
			n, errno := Sendto(fd, s.wbuf[s.wn:], flags)
			switch {
			case errno == syscall.EAGAIN:
				return false
			case errno != 0:
				s.werr = os.NewSyscallError("sendto", errno)
				return true
			case n == 0:
				s.werr = io.ErrUnexpectedEOF // as net.Conn's Write reports a send of nothing
				return true
			}
			s.wn += n
		}
		return true
	}
}

// recvfrom reads into b from the socket fd with recvfrom and flags, again
// when a signal interrupts it.
func recvfrom(fd uintptr, b []byte, flags int) (int, syscall.Errno) {
	for {
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(flags), 0, 0)
		if errno != syscall.EINTR {
			return int(n), errno
		}
	}
}

// Sendto sends b on the socket fd with sendto and flags and MSG_NOSIGNAL (a
// peer gone gives EPIPE, not SIGPIPE), again when a signal interrupts it.
func Sendto(fd uintptr, b []byte, flags int) (int, syscall.Errno) {
	for {
		n, _, errno := syscall.Syscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(flags|syscall.MSG_NOSIGNAL), 0, 0)
		if errno != syscall.EINTR {
			return int(n), errno
		}
	}
}

// Read reads like net.Conn's Read, waiting for data until the read
// deadline.
func (s *Socket) Read(b []byte) (int, error) {
	if s.rc == nil {
		return s.Conn.Read(b)
	}
	if len(b) == 0 {
		return 0, nil
	}
	return s.read(b, true)
}

// ReadNow reads what the socket holds without waiting: syscall.EAGAIN if
// nothing. It is for a connection whose readiness is watched elsewhere
// (the proxy's parking).
func (s *Socket) ReadNow(b []byte) (int, error) {
	if s.rc == nil {
		return 0, errNoSocket
	}
	return s.read(b, false)
}

// read reads into b, waiting in Go's poller for data or not.
func (s *Socket) read(b []byte, wait bool) (int, error) {
	s.rbuf, s.rn, s.rerr = b, 0, 0
	var err error
	if wait {
		err = s.rc.Read(s.recv)
	} else {
		err = s.rc.Control(s.peek)
	}
	n, errno := s.rn, s.rerr
	s.rbuf = nil
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case errno == syscall.EAGAIN:
		return 0, syscall.EAGAIN // only when not waiting
	case errno != 0:
		return 0, s.opError("read", os.NewSyscallError("recvfrom", errno))
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of b like net.Conn's Write, waiting for room in the
// socket's buffer until the write deadline.
func (s *Socket) Write(b []byte) (int, error) {
	if s.rc == nil {
		return s.Conn.Write(b)
	}
	if len(b) == 0 {
		return 0, nil
	}
	return s.write(b, true)
}

// WriteNow writes as much of b as the socket's buffer takes without
// waiting: syscall.EAGAIN, with the count written, if not all of it.
func (s *Socket) WriteNow(b []byte) (int, error) {
	if s.rc == nil {
		return 0, errNoSocket
	}
	n, err := s.write(b, false)
	if err == nil && n < len(b) {
		err = syscall.EAGAIN
	}
	return n, err
}

// write sends b through the RawConn, waiting for room in the socket's
// buffer or not.
func (s *Socket) write(b []byte, wait bool) (int, error) {
	s.wbuf, s.wn, s.werr = b, 0, nil
	var err error
	if wait {
		err = s.rc.Write(s.send)
	} else {
		err = s.rc.Control(s.sendNow)
	}
	if err == nil {
		err = s.werr
	}
	n := s.wn
	s.wbuf, s.werr = nil, nil
	if err != nil {
		return n, s.opError("write", err)
	}
	return n, nil
}

// errNoSocket is what ReadNow, WriteNow and Control report for a connection that is
// not a TCP socket.
var errNoSocket = errors.New("not a TCP socket")

// Control runs f with the socket's descriptor, as syscall.RawConn's Control.
func (s *Socket) Control(f func(fd uintptr)) error {
	if s.rc == nil {
		return errNoSocket
	}
	return s.rc.Control(f)
}

// opError is err as net.Conn's Read and Write report it: a *net.OpError
// naming the operation and the connection's addresses. An error of the
// RawConn is one already, named raw-read or raw-write: it is renamed. A
// socket of InitRaw has no addresses: err is left as it is.
func (s *Socket) opError(op string, err error) error {
	if s.Conn == nil {
		return err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: err}
}
