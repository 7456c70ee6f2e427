package sock

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
// net package uses: for a socket the two pairs do the same, but read and
// write go through the kernel's generic file layer first (a file position
// lock, permission and notification hooks), which costs a little on every
// call of a proxy that makes four per small request. Waits and deadlines
// are those of Go's poller, through the connection's syscall.RawConn.
//
// A connection other than a *net.TCPConn is read and written as it is.
// Reads and writes may each be made by one goroutine at a time, as
// fasthttp makes them.
type Socket struct {
	net.Conn
	rc syscall.RawConn // nil: Conn's own Read and Write

	// recv, send and ready read into rbuf or write wbuf, each reporting in
	// the fields after it: made once per socket because a closure per call
	// would allocate.
	recv, send, ready func(fd uintptr) bool
	recvNow           func(fd uintptr)
	rbuf, wbuf        []byte
	rn, wn            int
	rerr              syscall.Errno
	werr              error
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
	s.rc = rc
	s.recv = func(fd uintptr) bool {
		s.rn, s.rerr = recvfrom(fd, s.rbuf, 0)
		return s.rerr != syscall.EAGAIN
	}
	s.recvNow = func(fd uintptr) { s.recv(fd) } // the socket does not block: recv without Read's wait
	s.ready = func(fd uintptr) bool {
		var b [1]byte
		s.rn, s.rerr = recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return s.rerr != syscall.EAGAIN
	}
	s.send = func(fd uintptr) bool {
		for s.wn < len(s.wbuf) {
			n, errno := sendto(fd, s.wbuf[s.wn:])
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

// sendto sends b on the socket fd with sendto and MSG_NOSIGNAL (a peer gone
// gives EPIPE, not SIGPIPE), again when a signal interrupts it.
func sendto(fd uintptr, b []byte) (int, syscall.Errno) {
	for {
		n, _, errno := syscall.Syscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), syscall.MSG_NOSIGNAL, 0, 0)
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
	s.rbuf, s.rn, s.rerr = b, 0, 0
	return s.received(s.rc.Read(s.recv))
}

// ReadNow reads like Read what the socket holds, without waiting and
// whatever the read deadline: ErrWouldBlock if it holds nothing yet. A
// connection other than a TCP socket reports ErrWouldBlock always.
func (s *Socket) ReadNow(b []byte) (int, error) {
	if s.rc == nil || len(b) == 0 {
		return 0, ErrWouldBlock
	}
	s.rbuf, s.rn, s.rerr = b, 0, 0
	return s.received(s.rc.Control(s.recvNow))
}

// received reports the read into rbuf that recv made, err being the
// RawConn's: as net.Conn's Read does, and ErrWouldBlock for EAGAIN (which
// only a read that does not wait can end with).
func (s *Socket) received(err error) (int, error) {
	n, errno := s.rn, s.rerr
	s.rbuf = nil
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case errno == syscall.EAGAIN:
		return 0, ErrWouldBlock
	case errno != 0:
		return 0, s.opError("read", os.NewSyscallError("recvfrom", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Wait waits in Go's poller, until the read deadline, for the socket to
// have something to read: data, or the peer's end (a Read then reports
// io.EOF or the error). It reads nothing.
func (s *Socket) Wait() error {
	if s.rc == nil {
		return errNoSocket
	}
	if err := s.rc.Read(s.ready); err != nil {
		return s.opError("read", err)
	}
	return nil
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
	s.wbuf, s.wn, s.werr = b, 0, nil
	err := s.rc.Write(s.send)
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

// errNoSocket is what Wait and Control report for a connection that is not
// a TCP socket.
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
// RawConn is one already, named raw-read or raw-write: it is renamed.
func (s *Socket) opError(op string, err error) error {
	oe, ok := err.(*net.OpError) // RawConn makes these: errors.As, which reflects, only for others
	if ok || errors.As(err, &oe) {
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: "tcp", Source: s.LocalAddr(), Addr: s.RemoteAddr(), Err: err}
}
