package frontend

import (
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// parkSet is an epoll set of the server's own, in which parked connections
// wait for their next request without a goroutine. Go's poller, waited on
// by a goroutine per connection, costs each parked connection that
// goroutine's stack: 4 KiB, since the runtime starts goroutines at the
// average stack size it last saw rounded up to a power of two; a parked
// connection costs about 2 KiB without it. One goroutine waits, in Go's
// poller, for the set to report a socket readable or for the oldest
// parked connection's idle deadline.
//
// A connection joins the set (one-shot) when it parks and leaves it when
// its next request arrives (it is then served again), at its idle deadline
// or at shutdown (then it is closed). Only the set closes a parked
// connection's socket, after taking it out of the set, so a descriptor
// in the set is never one reused by another socket.
type parkSet struct {
	mu     sync.Mutex
	epfd   int
	file   *os.File // epfd in Go's poller, readable when the set has events
	conns  []*conn  // parked, indexed by descriptor (descriptors are small and reused)
	oldest *conn    // the parked connections, oldest first (conn.prev, conn.next)
	newest *conn
	armed  time.Time // the idle deadline the watcher's wait ends at
	closed bool      // by closeParked: connections park no more
}

// park parks c: in the set if there is one, else in a goroutine of its own
// waiting in Go's poller.
func (s *Server) park(c *conn) {
	p := s.parkSet()
	if p == nil {
		go s.waitParked(c)
		return
	}
	fd := c.fd // known once it has been in the set
	if !c.inSet {
		if err := c.Control(func(f uintptr) { fd = int(f) }); err != nil {
			c.close() //nolint:errcheck // closed already
			return
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close() //nolint:errcheck // nothing to report it to
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
	op := unix.EPOLL_CTL_MOD // the descriptor stays in the set after its one shot
	if !c.inSet {
		op = unix.EPOLL_CTL_ADD
	}
	if err := unix.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		p.mu.Unlock()
		go s.waitParked(c)
		return
	}
	c.inSet, c.fd = true, fd
	if fd >= len(p.conns) {
		p.conns = append(p.conns, make([]*conn, fd+1-len(p.conns))...)
	}
	p.conns[fd] = c
	c.prev, c.next = p.newest, nil
	if p.newest != nil {
		p.newest.next = c
	} else {
		p.oldest = c
	}
	p.newest = c
	s.parked.Add(1)
	if p.armed.IsZero() {
		// Under the lock, as the watcher sets it: the last one set stands.
		p.armed = s.idleDeadline(c)
		p.file.SetReadDeadline(p.armed) //nolint:errcheck // a file in Go's poller takes deadlines
	}
	p.mu.Unlock()
}

// unpark takes c out of the parked list; the caller holds p.mu.
func (p *parkSet) unpark(s *Server, c *conn) {
	p.conns[c.fd] = nil
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		p.oldest = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		p.newest = c.prev
	}
	c.prev, c.next = nil, nil
	s.parked.Add(-1)
}

// parkSet returns the server's set, made on first use; nil if the
// system would not make one.
func (s *Server) parkSet() *parkSet {
	s.setOnce.Do(func() {
		epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			s.logger.Warn("no epoll set for parked connections; they wait in goroutines", "error", err.Error())
			return
		}
		// Non-blocking, so that os.NewFile puts it in Go's poller.
		if err := unix.SetNonblock(epfd, true); err != nil {
			unix.Close(epfd)
			return
		}
		p := &parkSet{epfd: epfd, file: os.NewFile(uintptr(epfd), "parked")}
		rc, err := p.file.SyscallConn()
		if err != nil {
			p.file.Close()
			return
		}
		s.set.Store(p)
		go s.watchParked(p, rc)
	})
	return s.set.Load()
}

// watchParked serves again the connections whose next request arrives and
// closes those that reach their idle deadline, until the set is closed.
//
// The connections that became readable are taken inside the read
// callback, which then asks Go's poller to wait for more: readiness that
// arrives while the callback runs is noted by the poller (the wait has
// begun), so one epoll_wait on the set per wake is enough. The callback
// returns only on an error; the read ends at the idle deadline armed.
func (s *Server) watchParked(p *parkSet, rc syscall.RawConn) {
	events := make([]unix.EpollEvent, 128)
	ready := make([]*conn, 0, len(events)) // wake's, reused
	var waitErr error
	take := func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				waitErr = err
				return true
			}
			ready = s.wake(p, events[:n], ready[:0])
			if n < len(events) {
				return false // all taken: wait for more
			}
		}
	}
	for {
		err := rc.Read(take)
		if err == nil {
			err = waitErr
		}
		var expired []*conn
		p.mu.Lock()
		now := time.Now()
		for c := p.oldest; c != nil; c = p.oldest {
			if d := s.idleDeadline(c); d.IsZero() || d.After(now) {
				break
			}
			p.unpark(s, c)
			expired = append(expired, c)
		}
		if p.oldest != nil {
			p.armed = s.idleDeadline(p.oldest)
		} else {
			p.armed = time.Time{}
		}
		closed := p.closed
		if !closed && os.IsTimeout(err) {
			p.file.SetReadDeadline(p.armed) //nolint:errcheck // a file in Go's poller takes deadlines
		}
		p.mu.Unlock()
		for _, c := range expired {
			c.close() //nolint:errcheck // idle for client_idle_timeout
		}
		if closed {
			p.file.Close()
			return
		}
		if !os.IsTimeout(err) {
			s.logger.Error("waiting for parked connections failed; closing them", "error", err.Error())
			s.closeParked()
			return
		}
	}
}

// wake serves again the parked connections that events report readable,
// listing them in ready, which it returns for the next call.
func (s *Server) wake(p *parkSet, events []unix.EpollEvent, ready []*conn) []*conn {
	if len(events) == 0 {
		return ready
	}
	p.mu.Lock()
	for _, ev := range events {
		if fd := int(ev.Fd); fd < len(p.conns) {
			if c := p.conns[fd]; c != nil {
				p.unpark(s, c)
				ready = append(ready, c)
			}
		}
	}
	p.mu.Unlock()
	for i, c := range ready {
		ready[i] = nil // not kept alive by the buffer
		c.woken()
		s.run(c)
	}
	return ready
}

// closeParked closes the parked connections, and any that parks from now
// on.
func (s *Server) closeParked() {
	s.setOnce.Do(func() {}) // no set is made from now on
	p := s.set.Load()
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	var all []*conn
	for c := p.oldest; c != nil; c = p.oldest {
		p.unpark(s, c)
		all = append(all, c)
	}
	p.mu.Unlock()
	for _, c := range all {
		c.close() //nolint:errcheck // shutting down
	}
	p.file.SetReadDeadline(time.Now()) //nolint:errcheck // ends the watcher's wait
}
