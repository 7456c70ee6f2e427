package frontend

// What a connection must pass before it is served: a PROXY protocol header
// from the peers trusted to send one, and the limit of connections per
// client address. Both are checked in the connection's own goroutine, never
// in the accept loop, which a peer slow to send its header would stall.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
)

// Edge are the checks a connection passes before it is served; a reload
// may change them (Server.SetEdge). The zero value checks nothing.
type Edge struct {
	// ProxyProtocol reads a PROXY protocol header (v1 or v2) from the
	// peers in Trusted, and closes their connections that have none, a
	// malformed one, or none within HeaderTimeout; it closes a connection
	// from another peer that starts with one.
	ProxyProtocol bool
	Trusted       []netip.Prefix
	HeaderTimeout time.Duration
	// MaxConnsPerClient is how many connections a client address (the
	// header's, with the PROXY protocol) may hold open; 0: no limit.
	MaxConnsPerClient int
}

// on reports whether a connection must pass anything.
func (e *Edge) on() bool { return e.ProxyProtocol || e.MaxConnsPerClient > 0 }

func (e *Edge) trusts(a netip.Addr) bool {
	for _, p := range e.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Reasons a connection is refused at accept, the label of
// fastlb_client_conns_refused_total.
const (
	RefusedMaxClientConns    = "max_client_conns"
	RefusedMaxConnsPerClient = "max_conns_per_client"
	RefusedProxyProtocol     = "proxy_protocol"
)

// SetEdge puts e in force for the connections accepted from now on.
func (s *Server) SetEdge(e Edge) { s.edge.Store(&e) }

// admitted serves a connection that had to pass the edge's checks, or
// whose TLS handshake is to come, in a goroutine of its own.
func (s *Server) admitted(c *conn, e *Edge, tlsServe func(*conn)) {
	if e.ProxyProtocol {
		if reason := s.proxyHeader(c, e); reason != "" {
			s.logger.Debug("connection refused", "peer", c.Conn.RemoteAddr().String(), "cause", reason)
			s.countRefused(RefusedProxyProtocol)
			c.close() //nolint:errcheck // refused
			return
		}
	}
	if e.MaxConnsPerClient > 0 {
		a := addrOf(c.RemoteAddr())
		if !s.clients.acquire(a, e.MaxConnsPerClient) {
			s.logger.Debug("connection refused", "client", a.String(), "cause", "max_conns_per_client")
			s.countRefused(RefusedMaxConnsPerClient)
			c.close() //nolint:errcheck // refused
			return
		}
		c.client = a
		c.counted.Store(true)
		if c.closed.Load() && c.counted.CompareAndSwap(true, false) {
			s.clients.release(a) // a shutdown closed it meanwhile
			return
		}
	}
	if tlsServe != nil {
		tlsServe(c)
		return
	}
	s.serveTurns(c)
}

// proxyHeader reads c's PROXY protocol header if its peer is trusted, and
// makes the address it names c's remote address (a LOCAL command, or an
// UNKNOWN address, leaves c's own). From another peer it reads what c sends
// first, to refuse a header. It returns why c must be closed, or "".
// What was read beyond a header is c's to read next.
func (s *Server) proxyHeader(c *conn, e *Edge) string {
	peer := addrOf(c.Conn.RemoteAddr())
	wait := e.HeaderTimeout
	if !e.trusts(peer) {
		// An untrusted client may take as long as any to send its
		// request.
		wait = s.opts.ReadTimeout
	}
	if wait > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(wait)) //nolint:errcheck // the read fails instead
		defer func() {
			c.Conn.SetReadDeadline(time.Time{}) //nolint:errcheck // as above
			c.rd.Forget()
		}()
	}
	if !e.trusts(peer) {
		buf := make([]byte, 512)
		n, err := c.Socket.Read(buf)
		switch {
		case err != nil:
			return "nothing read: " + err.Error()
		case startsWithHeader(buf[:n]):
			return "a PROXY protocol header from an untrusted peer"
		}
		c.pending = buf[:n]
		return ""
	}
	br := bufio.NewReaderSize(&c.Socket, 256)
	h, err := proxyproto.Read(br)
	if err != nil {
		return "no valid PROXY protocol header from a trusted peer: " + err.Error()
	}
	if h.Command.IsProxy() && h.TransportProtocol.IsStream() && (h.TransportProtocol.IsIPv4() || h.TransportProtocol.IsIPv6()) {
		c.remote = h.SourceAddr
	}
	if n := br.Buffered(); n > 0 {
		rest, _ := br.Peek(n)
		c.pending = bytes.Clone(rest)
	}
	return ""
}

var (
	sigV1 = []byte("PROXY ")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// startsWithHeader reports whether b starts with a PROXY protocol header's
// signature (one shorter than the signature is taken for a request).
func startsWithHeader(b []byte) bool {
	return bytes.HasPrefix(b, sigV1) || bytes.HasPrefix(b, sigV2)
}

// addrOf is a's IP address, unmapped; the zero Addr if a has none.
func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// Clients counts the open connections of each client address, for
// max_conns_per_client; the plain and TLS listeners share one. It is safe
// for concurrent use.
type Clients struct {
	shards [64]clientShard
}

type clientShard struct {
	mu sync.Mutex
	m  map[netip.Addr]int32
}

// NewClients returns an empty count.
func NewClients() *Clients {
	cs := &Clients{}
	for i := range cs.shards {
		cs.shards[i].m = map[netip.Addr]int32{}
	}
	return cs
}

func (cs *Clients) shard(a netip.Addr) *clientShard {
	b := a.As16()
	h := (binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])) * 0x9e3779b97f4a7c15
	return &cs.shards[h>>58]
}

// acquire counts a connection of a unless a has limit open already.
func (cs *Clients) acquire(a netip.Addr, limit int) bool {
	sh := cs.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if int(sh.m[a]) >= limit {
		return false
	}
	sh.m[a]++
	return true
}

// release uncounts a connection of a.
func (cs *Clients) release(a netip.Addr) {
	sh := cs.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m[a] <= 1 {
		delete(sh.m, a)
		return
	}
	sh.m[a]--
}

// Open is how many connections a has open (counted when a limit applies).
func (cs *Clients) Open(a netip.Addr) int {
	sh := cs.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return int(sh.m[a])
}
