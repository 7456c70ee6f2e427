package frontend

// The HTTP/2 front end: TLS connections that choose h2 by ALPN are handed
// by fasthttp (Server.NextProto) to net/http's HTTP/2 server, which holds
// the protocol's limits and its defences (rapid reset, CONTINUATION
// floods). Each stream becomes a fasthttp request, served by the same
// handler as HTTP/1.1 requests; its answer is written back to the stream,
// a streamed body as it arrives.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"
)

// MaxConcurrentStreams is how many streams an HTTP/2 client may have open
// on one connection.
const MaxConcurrentStreams = 250

// h2Server serves the connections of a Server that chose h2.
type h2Server struct {
	s   *Server
	srv *http.Server
	ln  *connListener

	mu   sync.Mutex
	done map[net.Conn]chan struct{} // closed when net/http is done with the connection

	conns, streams atomic.Int64
	resets         *metrics.Counter
	set            *metrics.Set
	serving        chan error
}

// enableHTTP2 makes the TLS connections that choose h2 HTTP/2 ones.
func (s *Server) enableHTTP2() {
	h := &h2Server{s: s, ln: newConnListener(), done: map[net.Conn]chan struct{}{}, set: s.opts.Metrics,
		serving: make(chan error, 1)}
	var p http.Protocols
	p.SetHTTP2(true)
	h.srv = &http.Server{
		Handler:        h,
		Protocols:      &p,
		MaxHeaderBytes: s.opts.MaxHeaderBytes,
		IdleTimeout:    s.opts.IdleTimeout,
		// A stream's reads and writes have the deadlines the handler
		// sets (client_read_timeout, per read and write).
		ReadHeaderTimeout: s.opts.ReadTimeout,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: MaxConcurrentStreams,
			// The protocol's default, as HAProxy and nginx keep it: a
			// peer's frame larger than this is a FRAME_SIZE_ERROR (RFC
			// 9113 section 4.2), not a megabyte read on its word.
			MaxReadFrameSize: 16 << 10,
			CountError: func(errType string) {
				h.set.GetOrCreateCounter(`fastlb_http2_errors_total{type="` + errType + `"}`).Inc()
			},
		},
		ConnState: h.connState,
	}
	h.set.NewGauge("fastlb_http2_connections", func() float64 { return float64(h.conns.Load()) })
	h.set.NewGauge("fastlb_http2_streams", func() float64 { return float64(h.streams.Load()) })
	h.resets = h.set.NewCounter("fastlb_http2_streams_reset_total")
	go func() { h.serving <- h.srv.Serve(h.ln) }()
	s.fsTLS.NextProto("h2", h.serveConn)
	s.h2 = h
}

// serveConn hands a connection that chose h2 to net/http's server and
// returns once that is done with it (fasthttp then closes it).
func (h *h2Server) serveConn(c net.Conn) error {
	tc, ok := c.(*tlsConn)
	if !ok {
		return errors.New("h2 on a connection that is not TLS")
	}
	// In flight for as long as it is open: a shutdown ends it with GOAWAY
	// rather than closing it as idle.
	tc.c.state.Store(int32(fasthttp.StateActive))
	done := make(chan struct{})
	h.mu.Lock()
	h.done[tc.Conn] = done
	h.mu.Unlock()
	if !h.ln.push(tc.Conn) {
		h.mu.Lock()
		delete(h.done, tc.Conn)
		h.mu.Unlock()
		return net.ErrClosed
	}
	<-done
	return nil
}

// connState follows net/http's account of the connections.
func (h *h2Server) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		h.conns.Add(1)
	case http.StateClosed, http.StateHijacked:
		h.conns.Add(-1)
		h.mu.Lock()
		if done := h.done[c]; done != nil {
			close(done)
			delete(h.done, c)
		}
		h.mu.Unlock()
	}
}

// shutdown sends GOAWAY on every HTTP/2 connection and waits, until ctx
// ends, for their streams to finish.
func (h *h2Server) shutdown(ctx context.Context) error {
	return h.srv.Shutdown(ctx)
}

// ServeHTTP serves one stream: as a fasthttp request through the server's
// handler.
func (h *h2Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.streams.Add(1)
	defer h.streams.Add(-1)
	st := streams.Get().(*stream)
	defer st.release()
	st.w, st.rc = w, http.NewResponseController(w)
	if err := st.request(r); err != nil {
		http.Error(w, "400 Bad Request", http.StatusBadRequest)
		return
	}
	h.s.handle(&st.ctx)
	st.respond(r)
	if r.Context().Err() != nil {
		h.resets.Inc()
	}
}

// stream is one HTTP/2 request as the handler sees it: a fasthttp request
// context over a connection that stands for the stream.
type stream struct {
	ctx  fasthttp.RequestCtx
	conn streamConn
	buf  bytes.Buffer
	br   *bufio.Reader
	w    http.ResponseWriter
	rc   *http.ResponseController
	copy []byte
}

var streams = sync.Pool{New: func() any {
	st := &stream{copy: make([]byte, 32<<10)}
	st.br = bufio.NewReaderSize(&st.buf, 4096)
	st.conn.st = st
	return st
}}

func (st *stream) release() {
	st.ctx.Request.Reset()
	st.ctx.Response.Reset()
	st.buf.Reset()
	st.w, st.rc = nil, nil
	st.conn = streamConn{st: st}
	streams.Put(st)
}

// request fills the fasthttp request from r: its header as an HTTP/1.1
// request's (the handler checks and rewrites it as it does any), :authority
// as Host, its body as a stream.
func (st *stream) request(r *http.Request) error {
	b := &st.buf
	b.WriteString(r.Method)
	b.WriteByte(' ')
	b.WriteString(r.RequestURI)
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(r.Host)
	b.WriteString("\r\n")
	for k, vs := range r.Header {
		if k == "Cookie" && len(vs) > 1 {
			// HTTP/2 may split the cookies over several fields; HTTP/1.1
			// has one (RFC 9113 section 8.2.3).
			b.WriteString("Cookie: ")
			for i, v := range vs {
				if i > 0 {
					b.WriteString("; ")
				}
				b.WriteString(v)
			}
			b.WriteString("\r\n")
			continue
		}
		for _, v := range vs {
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	b.WriteString("\r\n")
	if st.br.Size() < b.Len() {
		st.br = bufio.NewReaderSize(b, b.Len()) // the parser needs the header whole
	}
	st.br.Reset(b)
	st.conn.remote = addrPort(r.RemoteAddr)
	st.conn.local, _ = r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	st.conn.tls = r.TLS
	st.ctx.Init2(&st.conn, nil, false)
	if err := st.ctx.Request.Header.Read(st.br); err != nil {
		return err
	}
	switch {
	case len(r.Trailer) > 0:
		// Trailers declared: they come after the body, which streams so
		// that they can go on (to an HTTP/2 backend) once it is read.
		st.ctx.Request.SetBodyStream(&trailingBody{Reader: r.Body, trailer: r.Trailer}, -1)
	case r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0:
		// Without its Close: the handler may drop the stream it was
		// given (closing it) while it goes on reading the body; net/http
		// closes the body once the stream is answered.
		st.ctx.Request.SetBodyStream(struct{ io.Reader }{r.Body}, int(r.ContentLength))
	}
	return nil
}

// trailingBody is a request body followed by trailers: Trailer names the
// declared ones at once and holds their values once the body was read to
// its end.
type trailingBody struct {
	io.Reader
	trailer http.Header
}

func (b *trailingBody) Trailer() http.Header { return b.trailer }

// respond writes the handler's answer to the stream: its header without
// the fields HTTP/2 does not carry, and its body, a streamed one as it
// arrives.
func (st *stream) respond(r *http.Request) {
	resp := &st.ctx.Response
	hdr := st.w.Header()
	resp.Header.VisitAll(func(k, v []byte) {
		switch string(k) {
		case fasthttp.HeaderConnection, fasthttp.HeaderKeepAlive, fasthttp.HeaderTransferEncoding,
			fasthttp.HeaderUpgrade, fasthttp.HeaderProxyConnection, fasthttp.HeaderContentLength, fasthttp.HeaderDate:
			return
		}
		hdr.Add(string(k), string(v))
	})
	stream := resp.IsBodyStream()
	if !stream {
		hdr.Set(fasthttp.HeaderContentLength, strconv.Itoa(len(resp.Body())))
	} else if n := resp.Header.ContentLength(); n >= 0 {
		hdr.Set(fasthttp.HeaderContentLength, strconv.Itoa(n))
	}
	st.w.WriteHeader(resp.StatusCode())
	if r.Method == http.MethodHead {
		closeBody(resp)
		return
	}
	if !stream {
		st.w.Write(resp.Body()) //nolint:errcheck // the client went away: nothing to tell it
		return
	}
	body := resp.BodyStream()
	for {
		n, err := body.Read(st.copy)
		if n > 0 {
			if _, werr := st.w.Write(st.copy[:n]); werr != nil {
				break
			}
			st.rc.Flush() //nolint:errcheck // the next write fails instead
		}
		if err != nil {
			break
		}
	}
	// A body read to its end from an HTTP/2 backend has its trailers.
	if tb, ok := body.(interface{ Trailer() http.Header }); ok {
		for k, vs := range tb.Trailer() {
			for _, v := range vs {
				hdr.Add(http.TrailerPrefix+k, v)
			}
		}
	}
	closeBody(resp)
}

// closeBody closes a streamed response body, giving its backend connection
// back (or closing it if the body was not read to its end).
func closeBody(resp *fasthttp.Response) {
	if c, ok := resp.BodyStream().(io.Closer); ok {
		c.Close() //nolint:errcheck // nothing left to do with it
	}
}

func addrPort(s string) net.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return &net.TCPAddr{}
	}
	return net.TCPAddrFromAddrPort(ap)
}

// streamConn stands for a stream where the handler asks for its
// connection: its addresses are the connection's, its TLS state the
// connection's, and its deadlines the stream's own. It is not read or
// written.
type streamConn struct {
	st            *stream
	remote, local net.Addr
	tls           *tls.ConnectionState
}

var errStream = errors.New("an HTTP/2 stream is not read or written as a connection")

func (c *streamConn) Read([]byte) (int, error)  { return 0, errStream }
func (c *streamConn) Write([]byte) (int, error) { return 0, errStream }
func (c *streamConn) Close() error              { return nil }
func (c *streamConn) RemoteAddr() net.Addr      { return c.remote }
func (c *streamConn) LocalAddr() net.Addr {
	if c.local == nil {
		return &net.TCPAddr{}
	}
	return c.local
}

// SetDeadline sets the stream's read and write deadlines.
func (c *streamConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t) //nolint:errcheck // as SetWriteDeadline's
	return c.SetWriteDeadline(t)
}

// SetReadDeadline bounds the reads of the stream's request body.
func (c *streamConn) SetReadDeadline(t time.Time) error { return c.st.rc.SetReadDeadline(t) }

// SetWriteDeadline bounds the writes of the stream's answer.
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.st.rc.SetWriteDeadline(t) }

// Handshake and ConnectionState make the stream a TLS one to the handler
// (RequestCtx.IsTLS): HTTP/2 comes over TLS here.
func (c *streamConn) Handshake() error { return nil }

func (c *streamConn) ConnectionState() tls.ConnectionState {
	if c.tls == nil {
		return tls.ConnectionState{}
	}
	return *c.tls
}

// HTTP2 tells the access log which protocol the request came in.
func (c *streamConn) HTTP2() bool { return true }

// connListener is a listener of the connections handed to it.
type connListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands c to the next Accept; it reports false once the listener is
// closed.
func (l *connListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{} }
