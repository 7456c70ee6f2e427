// Package sock holds the socket helpers shared by the client side
// (frontend) and the backend side (upstream): a TCP connection read and
// written with recvfrom and sendto in Go's poller, and deadlines armed
// lazily.
package sock

import "errors"

// ErrWouldBlock is what Socket.ReadNow reports when the socket has nothing
// to read yet.
var ErrWouldBlock = errors.New("nothing to read yet")
