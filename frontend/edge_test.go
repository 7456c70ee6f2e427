package frontend

import (
	"bufio"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/pires/go-proxyproto"
	"github.com/valyala/fasthttp"

	"fastlb/config"
)

// startEdge serves, with the edge e, a handler that answers with the
// client's address as the request saw it.
func startEdge(t *testing.T, e Edge, tlsCfg *tls.Config) (*Server, string, *metrics.Set) {
	t.Helper()
	o := FromConfig(config.Defaults())
	o.Edge = e
	o.Metrics = metrics.NewSet()
	o.Logger = slog.New(slog.DiscardHandler)
	s := New(func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(ctx.RemoteAddr().String()) }, o)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			done <- s.ServeTLS(ln, tlsCfg)
		} else {
			done <- s.Serve(ln)
		}
	}()
	t.Cleanup(func() {
		s.Shutdown()
		<-done
	})
	return s, ln.Addr().String(), o.Metrics
}

// exchange writes prefix and then, unless closed first, a request, over a
// plain or TLS connection, and returns the answer's body, or "closed" when
// the connection ended without an answer.
func exchange(t *testing.T, addr string, prefix []byte, useTLS bool) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(prefix); err != nil {
		return "closed"
	}
	var rw io.ReadWriter = c
	if useTLS {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			return "closed"
		}
		rw = tc
	}
	if _, err := io.WriteString(rw, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		return "closed"
	}
	resp, err := http.ReadResponse(bufio.NewReader(rw), nil)
	if err != nil {
		return "closed"
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func header(t *testing.T, version byte, cmd proxyproto.ProtocolVersionAndCommand, src, dst string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	h.Command = cmd
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestProxyProtocolIn(t *testing.T) {
	trusted := Edge{ProxyProtocol: true, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, HeaderTimeout: 300 * time.Millisecond}
	v1 := header(t, 1, proxyproto.PROXY, "203.0.113.7:4711", "198.51.100.1:443")
	v2 := header(t, 2, proxyproto.PROXY, "203.0.113.8:4712", "198.51.100.1:443")
	v2six := header(t, 2, proxyproto.PROXY, "[2001:db8::9]:4713", "[2001:db8::1]:443")
	local := header(t, 2, proxyproto.LOCAL, "203.0.113.9:1", "198.51.100.1:443")
	for _, useTLS := range []bool{false, true} {
		var tlsCfg *tls.Config
		name := "plain"
		if useTLS {
			tlsCfg, name = selfSigned(t), "tls"
		}
		t.Run(name, func(t *testing.T) {
			_, addr, set := startEdge(t, trusted, tlsCfg)
			for _, tc := range []struct {
				name   string
				prefix []byte
				want   string
			}{
				{"v1", v1, "203.0.113.7:4711"},
				{"v2", v2, "203.0.113.8:4712"},
				{"v2 TCP6", v2six, "[2001:db8::9]:4713"},
				{"v1 UNKNOWN", []byte("PROXY UNKNOWN\r\n"), "127.0.0.1:"},
				{"v2 LOCAL", local, "127.0.0.1:"},
				{"missing", nil, "closed"},
				{"malformed v1", []byte("PROXY TCP4 203.0.113.7 nonsense\r\n"), "closed"},
				{"v1 without CRLF", []byte("PROXY TCP4 203.0.113.7 198.51.100.1 1 2\n"), "closed"},
				{"v2 of version 3", append(append([]byte{}, v2[:12]...), append([]byte{0x31}, v2[13:]...)...), "closed"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					got := exchange(t, addr, tc.prefix, useTLS)
					if !strings.HasPrefix(got, tc.want) {
						t.Errorf("got %q, want %q", got, tc.want)
					}
				})
			}
			if got := set.GetOrCreateCounter(`fastlb_client_conns_refused_total{reason="proxy_protocol"}`).Get(); got != 4 {
				t.Errorf("refused %d, want 4", got)
			}
			if got := exchange(t, addr, []byte("PROXY TCP4 203.0.113.7"), useTLS); got != "closed" {
				t.Errorf("a partial header: %q", got)
			}
			// A header that never comes: closed after the timeout. (A
			// header sent in part is closed at once: the parser takes a
			// v1 header from one read, as the protocol allows.)
			c, _ := net.Dial("tcp", addr)
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			start := time.Now()
			if n, err := c.Read(make([]byte, 10)); err == nil || n > 0 {
				t.Errorf("a late header was answered")
			}
			if waited := time.Since(start); waited < 200*time.Millisecond || waited > 2*time.Second {
				t.Errorf("closed after %v, want the 300ms timeout", waited)
			}
		})
	}
}

// An untrusted peer is served as plain HTTP, and closed if it starts with
// a PROXY header.
func TestProxyProtocolUntrusted(t *testing.T) {
	e := Edge{ProxyProtocol: true, Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, HeaderTimeout: time.Second}
	_, addr, _ := startEdge(t, e, nil)
	if got := exchange(t, addr, nil, false); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("plain request from an untrusted peer: %q", got)
	}
	for _, prefix := range [][]byte{header(t, 1, proxyproto.PROXY, "203.0.113.7:1", "198.51.100.1:2"), header(t, 2, proxyproto.PROXY, "203.0.113.7:1", "198.51.100.1:2")} {
		if got := exchange(t, addr, prefix, false); got != "closed" {
			t.Errorf("a header from an untrusted peer was served: %q", got)
		}
	}
	// Several requests on one connection after the first read.
	c, _ := net.Dial("tcp", addr)
	defer c.Close()
	br := bufio.NewReader(c)
	for range 3 {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
}

// max_conns_per_client: 5 of 10 connections from one address are served;
// the count is per client address, after the PROXY protocol.
func TestMaxConnsPerClient(t *testing.T) {
	e := Edge{ProxyProtocol: true, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, HeaderTimeout: time.Second, MaxConnsPerClient: 5}
	s, addr, set := startEdge(t, e, nil)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	served := 0
	for i := range 12 {
		src := "203.0.113.7:1000"
		if i >= 10 {
			src = "203.0.113.8:1000" // another client
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write(header(t, 2, proxyproto.PROXY, src, "198.51.100.1:80"))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			resp.Body.Close()
			served++
		}
	}
	if served != 7 {
		t.Errorf("%d of 12 served, want 5 of the first client's 10 and the other's 2", served)
	}
	if got := set.GetOrCreateCounter(`fastlb_client_conns_refused_total{reason="max_conns_per_client"}`).Get(); got != 5 {
		t.Errorf("refused %d", got)
	}
	// Closing connections frees their places.
	for _, c := range conns[:5] {
		c.Close()
	}
	waitFor(t, "the count to fall", func() bool { return s.clients.Open(netip.MustParseAddr("203.0.113.7")) == 0 })
}
