package frontend

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// acceptRetry is a listener's trying again of accepts that fail for want
// of something the system may soon have again (file descriptors, memory):
// logged, and tried again after 5 ms, doubling up to 1 s while the
// failures go on, as Go's net/http server does; HAProxy and nginx likewise
// pause accepting rather than stop. (fasthttp's Serve stops for good on
// such an error: the listening socket would stay open, and clients queue
// on it unanswered.)
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
