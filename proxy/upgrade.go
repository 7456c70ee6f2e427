package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/internal/header"
	"fastlb/upstream"
)

// Upgrade requests (WebSocket and the like) cannot go through a HostClient,
// which would pool or close the connection after the 101. fastlb dials the
// backend itself, forwards the request with Connection: Upgrade and Upgrade
// kept, and on a 101 answer hijacks the client connection and copies bytes
// both ways until either side closes or stays silent for the idle timeout.

// tunnels tracks the hijacked connections, so shutdown can wait for them and
// then close them.
type tunnels struct {
	mu    sync.Mutex
	open  map[*tunnel]struct{}
	wg    sync.WaitGroup
	count func(delta int)
}

type tunnel struct {
	client, backend net.Conn
}

func (ts *tunnels) add(t *tunnel) {
	ts.mu.Lock()
	ts.open[t] = struct{}{}
	ts.mu.Unlock()
	ts.count(1)
}

func (ts *tunnels) remove(t *tunnel) {
	ts.mu.Lock()
	delete(ts.open, t)
	ts.mu.Unlock()
	ts.count(-1)
}

// CloseTunnels waits until the upgraded connections end or timeout passes,
// then closes those left. Call it after the servers stopped accepting.
func (p *Proxy) CloseTunnels(timeout time.Duration) {
	done := make(chan struct{})
	go func() { p.tunnels.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(timeout):
	}
	p.tunnels.mu.Lock()
	for t := range p.tunnels.open {
		t.client.Close()
		t.backend.Close()
	}
	p.tunnels.mu.Unlock()
	// A tunnel whose hijack fasthttp skipped (the server was already
	// closing connections) never registers; do not wait for it.
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}

// upgradeOf returns the protocol a client asks to switch to, or nil. A
// request that also asks to close the connection is not upgraded (fasthttp
// would not hand the connection over).
func upgradeOf(h *fasthttp.RequestHeader) []byte {
	if !h.ConnectionUpgrade() || h.ConnectionClose() {
		return nil
	}
	if v := h.Peek("Upgrade"); len(v) > 0 {
		return bytes.Clone(v) // RemoveHopByHop deletes it
	}
	return nil
}

var errNotSwitched = errors.New("the backend did not switch protocols")

// dialError is a failure to connect to a backend for an upgrade; like
// fasthttp's dial errors, nothing reached the backend.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return "cannot connect to " + e.addr + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// serveUpgrade forwards an upgrade request to b and, on a 101, tunnels the
// connection. It returns the error to answer with, or nil once the answer
// (101, or the backend's refusal) is in ctx.Response.
//
// The backend's slot (max_conns) is taken before dialling, as for every
// request, and held until the tunnel ends.
func (p *Proxy) serveUpgrade(ctx *fasthttp.RequestCtx, st *settings, pl *Pool, b *upstream.Backend, upgrade []byte) (err error) {
	if !b.TryAcquire() {
		return upstream.ErrFull
	}
	tunnelled := false
	defer func() {
		if !tunnelled {
			b.Release()
		}
	}()
	h := &ctx.Request.Header
	h.Set("Connection", "Upgrade")
	h.SetBytesV("Upgrade", upgrade)

	timeout := pl.Upstream.BackendTimeout()
	var bc net.Conn
	dialer := &net.Dialer{Timeout: pl.Upstream.ConnectTimeout()}
	p.upgrades.Inc()
	if bc, err = dialer.Dial("tcp", b.Addr); err != nil {
		return &dialError{addr: b.Addr, err: err}
	}
	bc.SetDeadline(time.Now().Add(timeout))
	if v := b.SendsProxy(); v != 0 {
		// Before the TLS handshake, if any.
		if _, err := bc.Write(upstream.ProxyHeader(v, ctx.RemoteAddr(), ctx.LocalAddr())); err != nil {
			bc.Close()
			return err
		}
	}
	if b.Scheme == "https" {
		tc := tls.Client(bc, b.Client.TLSConfig)
		if err := tc.Handshake(); err != nil {
			bc.Close()
			return &dialError{addr: b.Addr, err: err}
		}
		bc = tc
	}
	bw := bufio.NewWriter(bc)
	if _, err := h.WriteTo(bw); err != nil {
		bc.Close()
		return err
	}
	if body := ctx.Request.Body(); len(body) > 0 {
		bw.Write(body) //nolint:errcheck // Flush reports it
	}
	if err := bw.Flush(); err != nil {
		bc.Close()
		return err
	}
	br := bufio.NewReaderSize(bc, 16<<10)
	resp := &ctx.Response
	hop, err := upstream.ReadResponseHeader(br, &resp.Header)
	if err != nil {
		bc.Close()
		return err
	}
	if resp.StatusCode() != fasthttp.StatusSwitchingProtocols {
		// A refusal: relay it whole, then let the connection go.
		err := resp.ReadBody(br, 0)
		bc.Close()
		if err != nil {
			return err
		}
		header.RemoveHopByHop(&resp.Header, hop)
		resp.Header.ResetConnectionClose()
		return errNotSwitched
	}
	bc.SetDeadline(time.Time{})
	idle := st.TunnelIdleTimeout
	tunnelled = true
	p.tunnels.wg.Add(1)
	ctx.Hijack(func(c net.Conn) {
		t := &tunnel{client: c, backend: bc}
		p.tunnels.add(t)
		defer func() {
			p.tunnels.remove(t)
			b.Release()
			p.tunnels.wg.Done()
		}()
		relay(c, bc, br, idle)
	})
	return nil
}

// relay copies client->backend and backend->client (starting with what br,
// reading the backend, already holds), then closes both connections. A
// side that ends its stream has it ended towards the other side too (a
// half-close), and the other direction goes on. The tunnel is idle only
// when neither side has sent a byte for idle (0: never): a server pushing
// to a client that never sends keeps it open. Idle, both connections are
// closed.
func relay(client, backend net.Conn, br *bufio.Reader, idle time.Duration) {
	var last atomic.Int64 // when a byte last went either way, in Unix nanoseconds
	last.Store(time.Now().UnixNano())
	end := func(dst net.Conn, idled bool) {
		if idled {
			client.Close()
			backend.Close()
		} else {
			closeWrite(dst)
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { end(backend, copyIdle(backend, client, client, idle, &last)) })
	end(client, copyIdle(client, br, backend, idle, &last))
	wg.Wait()
	client.Close()
	backend.Close()
}

// copyIdle copies src, which reads from the connection srcConn, to dst
// until src ends or fails, or the tunnel has been idle (last) for idle; it
// reports whether it stopped for being idle.
func copyIdle(dst net.Conn, src io.Reader, srcConn net.Conn, idle time.Duration, last *atomic.Int64) (idled bool) {
	buf := make([]byte, 16<<10)
	for {
		if idle > 0 {
			srcConn.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
		}
		n, err := src.Read(buf)
		if n > 0 {
			now := time.Now()
			last.Store(now.UnixNano())
			dst.SetWriteDeadline(now.Add(max(idle, time.Minute)))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return false
			}
		}
		if err != nil {
			if idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				if time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other direction was busy meanwhile
				}
				return true
			}
			return false
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite() //nolint:errcheck // the connection closes right after anyway
		return
	}
	c.Close()
}
