package upstream

import (
	"net"
	"syscall"
	"testing"
	"time"

	"fastlb/config"
)

// TestBackendConnectionsWithoutKeepAliveProbes: backend connections are
// dialled without TCP keep-alive probes, and with TCP_NODELAY.
func TestBackendConnectionsWithoutKeepAliveProbes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hc := newHostClient(config.Backend{Addr: ln.Addr().String()}, newClientSettings(ClientOptions{}))
	c, err := hc.DialTimeout(hc.Addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bc, ok := c.(*backendConn)
	if !ok {
		t.Fatalf("dialled a %T", c)
	}
	var keepAlive, noDelay int
	var kerr, nerr error
	if err := bc.Control(func(fd uintptr) {
		keepAlive, kerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		noDelay, nerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
	}); err != nil {
		t.Fatal(err)
	}
	if kerr != nil || keepAlive != 0 {
		t.Errorf("SO_KEEPALIVE %d (%v), want 0", keepAlive, kerr)
	}
	if nerr != nil || noDelay == 0 {
		t.Errorf("TCP_NODELAY %d (%v), want it set", noDelay, nerr)
	}
}
