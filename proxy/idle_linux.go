package proxy

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
)

const canPark = true

// parking is an epoll set of the server's own, in which plain client
// connections wait for their next request. A connection joins it the first
// time it waits, edge-triggered, and stays until it closes. Its waits are of
// two kinds:
//   - waiting: its goroutine, still holding fasthttp's buffers, sleeps until
//     the set reports the socket readable or parkAt comes;
//   - parked: after parkAt, without a goroutine or buffers, until the next
//     request (then it is served again) or the idle deadline (then closed).
//
// One goroutine watches the set through Go's poller and wakes connections
// in the order their requests arrived. Go's poller, which a read would wait
// in, wakes the goroutines of a batch in the reverse order: under load that
// widened the spread of latencies (wrk -c64 through one core: p99 19% lower
// with the set), and a read tried first failed with EAGAIN for most
// requests.
type parking struct {
	mu      sync.Mutex
	set     *os.File               // the epoll set; nil until the first wait
	epfd    int                    // its descriptor (set.Fd would make it blocking)
	conns   map[uint64]*clientConn // in the set, by the id their epoll events carry
	lastID  uint64
	waiting connList // in the order of their parkAt
	parked  connList // in the order of their idle deadlines
	blocked connList // reads and writes of raw sockets waiting (see Server.block)
	armed   time.Time
	failed  bool // the set could not be made or watched: connections wait in Go's poller
	// stopping is set by Shutdown: waits end, and nothing parks or is
	// served again any more.
	stopping bool
}

// parkSpot is a connection's record in the parking, under its lock.
type parkSpot struct {
	id    uint64 // 0 while not in the set
	state spotState
	ready bool            // the set reported the socket readable while nothing waited
	wake  chan waitResult // made when it first joins the set
	until time.Time       // the deadline of a blocked read or write
	timer *time.Timer     // that ends it; made on the first

	prev, next *clientConn // in the list of its state
}

type spotState uint8

const (
	serving spotState = iota
	waiting
	parked
	blocked
)

// connList is a list of connections in the order they joined it.
type connList struct {
	oldest, newest *clientConn
	n              int
}

func (l *connList) push(c *clientConn) {
	l.n++
	c.spot.prev, c.spot.next = l.newest, nil
	if l.newest != nil {
		l.newest.spot.next = c
	} else {
		l.oldest = c
	}
	l.newest = c
}

func (l *connList) remove(c *clientConn) {
	l.n--
	if c.spot.prev != nil {
		c.spot.prev.spot.next = c.spot.next
	} else {
		l.oldest = c.spot.next
	}
	if c.spot.next != nil {
		c.spot.next.spot.prev = c.spot.prev
	} else {
		l.newest = c.spot.prev
	}
	c.spot.prev, c.spot.next = nil, nil
}

// wait blocks until c's socket is readable or c.parkAt comes; atOnce, it
// does not block, and reports waitTimeout unless the socket is readable.
func (s *Server) wait(c *clientConn, atOnce bool) waitResult {
	p := &s.parking
	p.mu.Lock()
	if r, ok := p.settled(s, c, waitClosed); ok {
		p.mu.Unlock()
		return r
	}
	if atOnce {
		p.mu.Unlock()
		return waitTimeout
	}
	c.spot.state = waiting // its goroutine sleeps: the watcher may read c.parkAt
	p.waiting.push(c)
	p.arm(c.parkAt.Add(parkSlack))
	p.mu.Unlock()
	return <-c.spot.wake
}

// settled reports how a wait of c ends before it begins, if it does: with
// stopped once Shutdown has begun, with waitUnavailable where the set
// cannot take c, and with waitReady if the set reported c's socket ready
// since the last wait. The caller holds p.mu.
func (p *parking) settled(s *Server, c *clientConn, stopped waitResult) (waitResult, bool) {
	switch {
	case p.stopping:
		return stopped, true
	case p.failed || c.spot.id == 0 && p.join(s, c) != nil:
		return waitUnavailable, true
	case c.spot.ready:
		c.spot.ready = false
		return waitReady, true
	}
	return 0, false
}

// block waits until c's socket, outside Go's poller, is ready or deadline
// (zero: none) comes, for a read or write of a request being served: the
// set reports a socket readable or writable alike, and the caller tries
// again. Where the set is gone (Shutdown) or cannot take c, it reports
// waitUnavailable, and the caller goes on in Go's poller.
func (s *Server) block(c *clientConn, deadline time.Time) waitResult {
	p := &s.parking
	p.mu.Lock()
	if r, ok := p.settled(s, c, waitUnavailable); ok {
		p.mu.Unlock()
		return r
	}
	c.spot.until = deadline
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			p.mu.Unlock()
			return waitTimeout
		}
		if c.spot.timer == nil {
			c.spot.timer = time.AfterFunc(d, func() { s.expire(c) })
		} else {
			c.spot.timer.Reset(d)
		}
	}
	c.spot.state = blocked
	p.blocked.push(c)
	p.mu.Unlock()
	return <-c.spot.wake
}

// expire ends c's blocked read or write if its deadline has come: the
// timer of an earlier one may fire late.
func (s *Server) expire(c *clientConn) {
	p := &s.parking
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.spot.state == blocked && !c.spot.until.IsZero() && !time.Now().Before(c.spot.until) {
		p.takeOut(c)
		c.spot.wake <- waitTimeout
	}
}

// readNow reads what c's socket holds without waiting: errNothingYet if
// nothing (a readiness already consumed by an earlier read).
func (c *clientConn) readNow(b []byte) (int, error) {
	if c.spot.wake == nil {
		return 0, errNothingYet // not in the set yet: joining it reports what is there
	}
	var n int
	var err error
	if c.raw() {
		n, err = c.recvNow(b)
	} else {
		n, err = c.ReadNow(b)
	}
	if err == syscall.EAGAIN {
		return 0, errNothingYet
	}
	return n, err
}

// join adds c's socket to the set, starting the set on the first call. A
// socket already readable is reported at once. The caller holds p.mu.
func (p *parking) join(s *Server, c *clientConn) error {
	if err := p.start(s); err != nil {
		p.failed = true
		return err
	}
	if c.spot.wake == nil {
		c.spot.wake = make(chan waitResult, 1)
	}
	id := p.lastID + 1
	events := uint32(syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET)
	if c.raw() {
		events |= syscall.EPOLLOUT // its writes wait in the set too
	}
	ev := syscall.EpollEvent{Events: events, Fd: int32(id), Pad: int32(id >> 32)}
	var err error
	if cerr := c.Control(func(fd uintptr) { err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return err
	}
	p.lastID = id
	c.spot.id = id
	p.conns[id] = c
	return nil
}

// epollET is EPOLLET as the event mask's type (syscall has it negative).
const epollET = 1 << 31

// arm makes the set's deadline no later than t. The caller holds p.mu.
func (p *parking) arm(t time.Time) {
	if p.armed.IsZero() || t.Before(p.armed) {
		p.setDeadline(t)
	}
}

// setDeadline sets the set's deadline to t (zero: none). The caller holds
// p.mu.
func (p *parking) setDeadline(t time.Time) {
	p.armed = t
	p.set.SetReadDeadline(t) //nolint:errcheck // the set is pollable
}

// rearm sets the set's deadline to next, the first wait's end (zero for
// none), after the watcher has ended those due at now. A deadline still to
// come is only ever moved earlier; when it comes with nothing due, the
// watcher wakes once for nothing. Moving it later each time the first
// waiting connection is woken would move it for most requests, and each
// move of a timer in the runtime's heap makes the runtime scan the whole
// heap once the timer's new time comes (with every request waking a
// parked connection, the deadline was moved several thousand times a
// second to a moment already due, and runtime.(*timers).adjust took 7% of
// fastlb's CPU in make bench's 2000-paused-conns). The caller holds p.mu.
func (p *parking) rearm(next, now time.Time) {
	switch {
	case next.IsZero():
		if !p.armed.IsZero() && !p.armed.After(now) {
			// It has come. Cleared, not left expired: an expired
			// deadline ends every wait for the set at once.
			p.setDeadline(time.Time{})
		}
	case p.armed.IsZero() || next.Before(p.armed) || !p.armed.After(now):
		p.setDeadline(next)
	}
}

// forget takes c out of the parking, ending its wait, as it closes (which
// takes its socket out of the set).
func (s *Server) forget(c *clientConn) {
	p := &s.parking
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forget(c)
}

// leave takes c's socket out of the set for good: fasthttp hands the
// connection over (a hijack, for a tunnel), whose reads the set need not
// follow.
func (s *Server) leave(c *clientConn) {
	p := &s.parking
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.spot.id == 0 {
		return
	}
	p.forget(c)
	if p.set != nil && !p.stopping {
		c.Control(func(fd uintptr) { syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) }) //nolint:errcheck // its events would only be ignored
	}
}

// forget is Server.forget with p.mu held.
func (p *parking) forget(c *clientConn) {
	if c.spot.id == 0 {
		return
	}
	delete(p.conns, c.spot.id)
	c.spot.id = 0
	if st := p.takeOut(c); st == waiting || st == blocked {
		c.spot.wake <- waitClosed
	}
}

// takeOut takes c out of the list of its state, waiting or parked, and
// returns that state. The caller holds p.mu, and ends a wait.
func (p *parking) takeOut(c *clientConn) spotState {
	st := c.spot.state
	switch st {
	case waiting:
		p.waiting.remove(c)
	case parked:
		p.parked.remove(c)
	case blocked:
		p.blocked.remove(c)
		if c.spot.timer != nil {
			c.spot.timer.Stop()
		}
	}
	c.spot.state = serving
	return st
}

// park keeps c, which fasthttp has just let go of, until its next request
// or its idle deadline.
func (s *Server) park(c *clientConn) {
	p := &s.parking
	p.mu.Lock()
	switch {
	case p.stopping || p.failed || c.spot.id == 0:
		p.mu.Unlock()
		c.close()
		return
	case c.spot.ready:
		// Its request arrived since the wait ended.
		c.spot.ready = false
		s.waiters.Add(1)
		p.mu.Unlock()
		s.serveAgain(c)
		return
	}
	c.spot.state = parked
	p.parked.push(c)
	p.arm(c.deadline)
	p.mu.Unlock()
}

// start makes the epoll set and its watcher on the first wait. The caller
// holds p.mu.
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

// watch waits for the set's sockets to become readable and for the
// deadlines of its waits, until Shutdown closes the set.
func (s *Server) watch(rc syscall.RawConn) {
	defer s.waiters.Done()
	p := &s.parking
	events := make([]syscall.EpollEvent, 256)
	var again, expired []*clientConn
	var n int
	var werr error
	poll := func(fd uintptr) bool { // made once: a closure per call would allocate
		n, werr = syscall.EpollWait(int(fd), events, 0)
		return n > 0 || werr != nil && werr != syscall.EINTR
	}
	for {
		n, werr = 0, nil
		err := rc.Read(poll)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return // closed by Shutdown
		}
		if werr != nil && werr != syscall.EINTR {
			// Not expected of a set only this goroutine waits on; rather
			// than spin, stop using the set.
			s.giveUp()
			return
		}
		again, expired = again[:0], expired[:0]
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			c := p.conns[uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32]
			if c == nil {
				continue
			}
			switch p.takeOut(c) {
			case waiting, blocked:
				c.spot.wake <- waitReady
			case parked:
				again = append(again, c)
			default:
				c.spot.ready = true
			}
		}
		now := time.Now()
		for c := p.waiting.oldest; c != nil && !c.parkAt.After(now); c = p.waiting.oldest {
			p.takeOut(c)
			c.spot.wake <- waitTimeout
		}
		for c := p.parked.oldest; c != nil && !c.deadline.After(now); c = p.parked.oldest {
			p.takeOut(c)
			expired = append(expired, c)
		}
		var next time.Time
		if c := p.waiting.oldest; c != nil {
			next = c.parkAt.Add(parkSlack)
		}
		if c := p.parked.oldest; c != nil && (next.IsZero() || c.deadline.Before(next)) {
			next = c.deadline
		}
		p.rearm(next, now)
		stopping := p.stopping
		if !stopping {
			s.waiters.Add(len(again))
		}
		p.mu.Unlock()
		for _, c := range expired {
			c.close()
		}
		for _, c := range again {
			if stopping {
				c.close()
			} else {
				s.serveAgain(c)
			}
		}
	}
}

// closeParked closes the parked connections, ends the waits and stops any
// more from parking or being served again.
func (s *Server) closeParked() {
	p := &s.parking
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return
	}
	p.stopping = true
	parked := p.endAll(waitClosed)
	if p.set != nil {
		p.set.Close() // ends the watcher
	}
	p.mu.Unlock()
	for _, c := range parked {
		c.close()
	}
}

// giveUp stops using the set: waits end, to go on in Go's poller until the
// idle deadline, and parked connections close.
func (s *Server) giveUp() {
	p := &s.parking
	p.mu.Lock()
	p.failed = true
	parked := p.endAll(waitUnavailable)
	p.mu.Unlock()
	for _, c := range parked {
		c.close()
	}
}

// endAll ends every wait with result and takes the parked connections out,
// returning them for the caller to close once it has let go of p.mu, which
// it holds.
func (p *parking) endAll(result waitResult) []*clientConn {
	var parked []*clientConn
	for c := p.parked.oldest; c != nil; c = p.parked.oldest {
		p.takeOut(c)
		parked = append(parked, c)
	}
	for c := p.waiting.oldest; c != nil; c = p.waiting.oldest {
		p.takeOut(c)
		c.spot.wake <- result
	}
	// Reads and writes of requests being served go on in Go's poller.
	for c := p.blocked.oldest; c != nil; c = p.blocked.oldest {
		p.takeOut(c)
		c.spot.wake <- waitUnavailable
	}
	return parked
}

func (s *Server) parkedCount() int {
	p := &s.parking
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.parked.n
}
