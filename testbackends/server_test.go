package testbackends

import (
	"net"
	"testing"
	"time"
)

// TestCloseRightAfterStart: a backend closed at once, before the goroutine
// that serves it has run, stops listening all the same. (fasthttp's
// Shutdown closes only the listeners its Serve has taken: the listener of
// such a backend stayed open, and a test that restarted the backend on its
// port found the port taken.)
func TestCloseRightAfterStart(t *testing.T) {
	for i := range 50 {
		s, err := Start("127.0.0.1:0", Options{})
		if err != nil {
			t.Fatal(err)
		}
		addr := s.ln.Addr().String()
		if err := s.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatalf("backend %d still accepts connections on %s after Close", i, addr)
		}
		again, err := Start(addr, Options{})
		if err != nil {
			t.Fatalf("backend %d's port after Close: %v", i, err)
		}
		again.Close()
	}
}
