// Package etcdtest runs a real etcd server in the test's process, on
// loopback ports that it keeps across a stop and a start, for the tests of
// a fleet.
package etcdtest

import (
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is one etcd member with its data in a directory of the test's.
type Server struct {
	t    testing.TB
	dir  string
	URL  string // the client URL, http://127.0.0.1:port
	peer string
	e    *embed.Etcd
}

// Start starts a server; the test's cleanup stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, dir: t.TempDir(), URL: freeURL(t), peer: freeURL(t)}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

func freeURL(t testing.TB) string {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

// Restart starts the server again after Stop, with the data it had.
func (s *Server) Restart() {
	s.t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = s.dir
	cu, _ := url.Parse(s.URL)
	pu, _ := url.Parse(s.peer)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + s.peer
	cfg.TickMs, cfg.ElectionMs, cfg.UnsafeNoFsync = 10, 50, true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	var err error
	for range 100 { // a stopped server's ports may take a moment to free
		if s.e, err = embed.StartEtcd(cfg); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	select {
	case <-s.e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		s.t.Fatal("etcd did not start")
	}
}

// Stop stops the server, as an outage would.
func (s *Server) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}
