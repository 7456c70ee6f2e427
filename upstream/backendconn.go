package upstream

import (
	"time"

	"fastlb/internal/sock"
)

// backendConn is a backend connection whose deadlines are lazy, with the
// slack of the backend timeout in force when they are set, read and written
// as a sock.Socket. Its deadlines are set by the one goroutine using the
// connection at a time.
type backendConn struct {
	sock.Socket
	opts   *clientSettings
	rd, wd sock.LazyDeadline
}

func (c *backendConn) slack() time.Duration {
	return sock.Slack(time.Duration(c.opts.backendTimeout.Load()))
}

func (c *backendConn) SetDeadline(t time.Time) error {
	slack := c.slack()
	r, w := !c.rd.Covers(t, slack), !c.wd.Covers(t, slack)
	switch {
	case r && w:
		c.wd.Arm(t, slack)
		return c.set(c.Conn.SetDeadline(c.rd.Arm(t, slack)))
	case r:
		return c.set(c.Conn.SetReadDeadline(c.rd.Arm(t, slack)))
	case w:
		return c.set(c.Conn.SetWriteDeadline(c.wd.Arm(t, slack)))
	}
	return nil
}

func (c *backendConn) SetReadDeadline(t time.Time) error {
	if slack := c.slack(); !c.rd.Covers(t, slack) {
		return c.set(c.Conn.SetReadDeadline(c.rd.Arm(t, slack)))
	}
	return nil
}

func (c *backendConn) SetWriteDeadline(t time.Time) error {
	if slack := c.slack(); !c.wd.Covers(t, slack) {
		return c.set(c.Conn.SetWriteDeadline(c.wd.Arm(t, slack)))
	}
	return nil
}

// set passes on the error of setting a deadline, after which neither is
// known.
func (c *backendConn) set(err error) error {
	if err != nil {
		c.rd.Forget()
		c.wd.Forget()
	}
	return err
}
