package proxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

const canPark = true

// parking keeps the parked connections without a goroutine each: their
// sockets wait in an epoll set of the server's own, itself watched through
// Go's poller by one goroutine, which hands a connection whose next request
// arrives back to fasthttp and closes those whose idle deadline passes. A
// parked connection costs its socket and a few hundred bytes.
type parking struct {
	mu       sync.Mutex
	set      *os.File               // the epoll set; nil until the first connection parks
	epfd     int                    // its descriptor (set.Fd would make it blocking)
	conns    map[uint64]*clientConn // parked, by the id their epoll event carries
	lastID   uint64
	oldest   *clientConn // the parked ones in the order they parked, which
	newest   *clientConn // is the order of their idle deadlines
	stopping bool        // set by Shutdown: nothing parks or wakes any more
}

// parkSpot is a parked connection's place in the parking.
type parkSpot struct {
	id         uint64 // 0 while not parked
	prev, next *clientConn
	rc         syscall.RawConn // the socket, for epoll
	registered bool            // in the epoll set (disarmed once it fired)
}

// park hands c, which fasthttp has just let go of, to the epoll set.
func (s *Server) park(c *clientConn) {
	p := &s.parking
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping || p.start(s) != nil || c.arm(p.epfd, p.lastID+1) != nil {
		c.close()
		return
	}
	p.lastID++
	c.spot.id = p.lastID
	p.conns[c.spot.id] = c
	c.spot.prev = p.newest
	if p.newest != nil {
		p.newest.spot.next = c
	} else {
		p.oldest = c
		p.set.SetReadDeadline(c.deadline) //nolint:errcheck // the set is pollable
	}
	p.newest = c
}

// arm adds c's socket to the epoll set epfd for one readiness event, which
// carries id.
func (c *clientConn) arm(epfd int, id uint64) error {
	if c.spot.rc == nil {
		rc, err := c.Conn.(*net.TCPConn).SyscallConn()
		if err != nil {
			return err
		}
		c.spot.rc = rc
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(id), Pad: int32(id >> 32)}
	op := syscall.EPOLL_CTL_ADD
	if c.spot.registered {
		op = syscall.EPOLL_CTL_MOD
	}
	var err error
	if cerr := c.spot.rc.Control(func(fd uintptr) { err = syscall.EpollCtl(epfd, op, int(fd), &ev) }); cerr != nil {
		return cerr
	}
	c.spot.registered = err == nil
	return err
}

// unpark takes c out of the parking. The caller holds p.mu.
func (p *parking) unpark(c *clientConn) {
	delete(p.conns, c.spot.id)
	c.spot.id = 0
	if c.spot.prev != nil {
		c.spot.prev.spot.next = c.spot.next
	} else {
		p.oldest = c.spot.next
	}
	if c.spot.next != nil {
		c.spot.next.spot.prev = c.spot.prev
	} else {
		p.newest = c.spot.prev
	}
	c.spot.prev, c.spot.next = nil, nil
}

// start makes the epoll set and its watcher on the first parking. The
// caller holds p.mu.
func (p *parking) start(s *Server) error {
	if p.set != nil {
		return nil
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return err
	}
	// Non-blocking, the set is pollable: Go's poller tells when it has
	// events, so no thread blocks in epoll_wait.
	p.set, p.epfd = os.NewFile(uintptr(epfd), "fastlb-parking"), epfd
	rc, err := p.set.SyscallConn()
	if err != nil {
		p.set.Close()
		p.set = nil
		return err
	}
	p.conns = map[uint64]*clientConn{}
	s.waiters.Add(1)
	go s.watch(rc)
	return nil
}

// watch waits for parked connections to become readable or reach their
// idle deadline (the set's read deadline is the oldest one's), until
// Shutdown closes the set.
func (s *Server) watch(rc syscall.RawConn) {
	defer s.waiters.Done()
	p := &s.parking
	events := make([]syscall.EpollEvent, 128)
	var ready, expired []*clientConn
	for {
		n := 0
		var werr error
		err := rc.Read(func(fd uintptr) bool {
			n, werr = syscall.EpollWait(int(fd), events, 0)
			return n > 0 || werr != nil && werr != syscall.EINTR
		})
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return // closed by Shutdown
		}
		if werr != nil && werr != syscall.EINTR {
			// Not expected of a set only this goroutine waits on; rather
			// than spin, give up parking: idle connections then close
			// when they would have parked.
			s.closeParked()
			return
		}
		ready, expired = ready[:0], expired[:0]
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			if c := p.conns[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]; c != nil {
				p.unpark(c)
				ready = append(ready, c)
			}
		}
		now := time.Now()
		for c := p.oldest; c != nil && !c.deadline.After(now); c = p.oldest {
			p.unpark(c)
			expired = append(expired, c)
		}
		var next time.Time
		if p.oldest != nil {
			next = p.oldest.deadline
		}
		p.set.SetReadDeadline(next) //nolint:errcheck // the set is pollable
		stopping := p.stopping
		if !stopping {
			s.waiters.Add(len(ready))
		}
		p.mu.Unlock()
		for _, c := range expired {
			c.close()
		}
		for _, c := range ready {
			if stopping {
				c.close()
			} else {
				go s.serveAgain(c)
			}
		}
	}
}

// closeParked closes the parked connections and stops any more from
// parking or waking.
func (s *Server) closeParked() {
	p := &s.parking
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return
	}
	p.stopping = true
	for c := p.oldest; c != nil; c = p.oldest {
		p.unpark(c)
		c.close()
	}
	if p.set != nil {
		p.set.Close() // ends the watcher
	}
}

func (s *Server) parkedCount() int {
	s.parking.mu.Lock()
	defer s.parking.mu.Unlock()
	return len(s.parking.conns)
}
