package upstream

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/internal/header"
)

// StreamThreshold is the largest body fastlb holds in memory. A response
// body of known length up to it is read whole before the response goes to
// the client; a longer one, or one whose length is unknown (chunked or
// delimited by the connection's close), streams through as it arrives.
// The proxy treats request bodies the same way.
const StreamThreshold = 64 << 10

// ErrMalformedResponse is returned for a response whose header fastlb
// refuses to pass on (see header.CheckFields).
var ErrMalformedResponse = errors.New("malformed response header")

// ErrFull is returned, before anything is sent, when the backend is at its
// max_conns limit: another request took its last slot since it was picked.
var ErrFull = errors.New("backend at max_conns")

// ErrStaleConn is returned when a reused keep-alive connection to the
// backend failed before any byte of the answer arrived, and the request
// could not be sent again on a fresh connection (see transport.RoundTrip).
// The backend had closed the connection, or its process went away: it says
// nothing about whether the backend takes new connections, so it does not
// count towards marking the backend down.
var ErrStaleConn = errors.New("a reused connection to the backend closed before answering")

// staleConnError is a failure of a reused connection before any byte of
// the answer. sent is whether the request may have reached the backend
// (writing it succeeded).
type staleConnError struct {
	err  error
	sent bool
}

func (e *staleConnError) Error() string   { return ErrStaleConn.Error() + ": " + e.err.Error() }
func (e *staleConnError) Unwrap() []error { return []error{ErrStaleConn, e.err} }

// maxStaleRetries bounds how often one request is sent again after reused
// connections failed before answering. Every such failure closes the
// backend's idle connections, so the next attempt dials unless another
// request has just put a connection back.
const maxStaleRetries = 3

// A Pacer is a streamed request body that, each time it is read, extends
// the write deadline of the connection it is being written to. The transport
// hands it the backend connection, so that a long upload is bounded per
// write rather than as a whole.
type Pacer interface {
	Pace(conn net.Conn, timeout time.Duration)
}

// transport is the fasthttp.RoundTripper of a backend's HostClient. Compared
// with fasthttp's own it
//   - hands over responses without hop-by-hop fields (header.RemoveHopByHop);
//   - counts the request as in flight on the backend until its response
//     body has been passed on, streamed or not;
//   - takes its deadline from the pool's backend timeout;
//   - refuses a response whose raw header header.CheckFields refuses;
//   - buffers response bodies up to StreamThreshold and streams the rest,
//     bounding each read of a streamed body by the backend timeout instead
//     of the whole transfer, as nginx's proxy_read_timeout does.
//
// It never asks fasthttp to retry: the proxy decides retries.
type transport struct {
	b    *Backend
	opts *clientSettings
}

// A reused keep-alive connection that fails before any byte of the answer
// (the backend closed it while it sat in the pool, or restarted) tells
// nothing about the backend: the transport then closes the backend's idle
// connections, which are as likely stale, and sends the request again on a
// fresh one, as HTTP clients do (RFC 9112 section 9.3.1): always when the
// request did not go out, and when it did only if its method is idempotent.
// A request whose body streams is never sent again.
func (t *transport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	return false, t.send(hc, req, resp, nil)
}

// send is RoundTrip, each connection starting with prefix (a PROXY
// protocol header) when it is not nil: such a connection is a new one, and
// closed after the request.
func (t *transport) send(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, prefix []byte) error {
	if !t.b.TryAcquire() {
		return ErrFull
	}
	// Writing a streamed body consumes it: decide before the first attempt.
	resendable := !req.IsBodyStream()
	for attempt := 0; ; attempt++ {
		streaming, err := t.roundTrip(hc, req, resp, prefix)
		if stale := staleOf(err); stale != nil {
			t.b.staleConns.Add(1)
			hc.CloseIdleConnections()
			if attempt < maxStaleRetries && resendable && (!stale.sent || Idempotent(req)) {
				continue
			}
		}
		if !streaming {
			t.b.Release()
		}
		return err
	}
}

// DoProxied sends req to b as its Client's Do does, on a new connection
// that starts with header (ProxyHeader) and is closed after the answer:
// a connection that names one client carries no other's requests.
func (b *Backend) DoProxied(req *fasthttp.Request, resp *fasthttp.Response, header []byte) error {
	resp.Reset()
	// As HostClient.Do, so that the request is written the same way.
	req.URI().DisablePathNormalizing = b.Client.DisablePathNormalizing
	return b.t.send(b.Client, req, resp, header)
}

// SendsProxy is the PROXY protocol version b's connections start with, 1
// or 2; 0: none.
func (b *Backend) SendsProxy() int { return int(b.t.opts.sendProxy.Load()) }

// staleOf returns the staleConnError in err, or nil. A function of its own
// so that the variable errors.As needs is allocated on failures only, not
// on every request.
func staleOf(err error) *staleConnError {
	if err == nil {
		return nil
	}
	var stale *staleConnError
	if errors.As(err, &stale) {
		return stale
	}
	return nil
}

// Idempotent reports whether a request that may have reached a backend
// can be sent again: its method is idempotent (RFC 9110 section 9.2.2) and
// its body was not streamed.
func Idempotent(req *fasthttp.Request) bool {
	if req.IsBodyStream() {
		return false
	}
	switch string(req.Header.Method()) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodOptions,
		fasthttp.MethodTrace, fasthttp.MethodPut, fasthttp.MethodDelete:
		return true
	}
	return false
}

// roundTrip sends req and reads the response header and, unless it
// streams, the body. It reports whether the body streams; the stream then
// owns the connection and the backend's in-flight count.
func (t *transport) roundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response, prefix []byte) (bool, error) {
	timeout := time.Duration(t.opts.backendTimeout.Load())
	cc, err := hc.AcquireConn(timeout, req.ConnectionClose())
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	// fasthttp stamps a connection when it goes back to the pool: a fresh
	// one has never been.
	reused := !cc.LastUseTime().IsZero()
	var raw net.Conn // where prefix goes: under TLS, the connection below it
	if prefix != nil {
		raw = conn
		if tc, ok := conn.(*tls.Conn); ok {
			raw = tc.NetConn()
			if tc.ConnectionState().HandshakeComplete {
				reused = true // made before send_proxy_protocol was on
			}
		}
		if reused {
			// One kept from before send_proxy_protocol was on: it named
			// no client. Such connections go, one by one.
			hc.CloseConn(cc)
			return t.roundTrip(hc, req, resp, prefix)
		}
	}

	writeTimeout := timeout
	if hc.WriteTimeout > 0 && (writeTimeout <= 0 || hc.WriteTimeout < writeTimeout) {
		writeTimeout = hc.WriteTimeout
	}
	// One deadline bounds the attempt, writing the request and reading the
	// answer (or, when it streams, its header): one clock reading and one
	// runtime timer. A streamed request body instead extends the write
	// deadline as it goes, and the time for the answer starts once it has
	// gone.
	now := time.Now()
	pacer, streamed := req.BodyStream().(Pacer)
	oneDeadline := writeTimeout == timeout && !streamed
	if oneDeadline {
		err = conn.SetDeadline(deadline(now, timeout))
	} else {
		err = conn.SetWriteDeadline(deadline(now, writeTimeout))
	}
	if err != nil {
		hc.CloseConn(cc)
		return false, err
	}
	if streamed {
		pacer.Pace(conn, writeTimeout)
	}
	if raw != nil {
		if _, err := raw.Write(prefix); err != nil {
			hc.CloseConn(cc)
			return false, timeoutAsErrTimeout(err)
		}
	}
	// Body reads a body held in memory; a streamed one is never read here.
	body := req.IsBodyStream() || len(req.Body()) > 0
	bw := t.opts.writer(conn, body)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	t.opts.putWriter(bw, body)
	if err != nil {
		hc.CloseConn(cc)
		// A streamed body's own failure (the client's) fails the write
		// too: only a body held in memory tells that the connection did.
		if reused && !streamed && !isTimeout(err) {
			return false, &staleConnError{err: err}
		}
		return false, timeoutAsErrTimeout(err)
	}

	// Let the other connections' work run while the backend prepares its
	// answer: the read that follows then often finds the answer instead
	// of failing with EAGAIN and parking until the poller reports it. With
	// nothing else to run it returns at once.
	runtime.Gosched()
	if !oneDeadline {
		if streamed {
			now = time.Now()
		}
		if err := conn.SetReadDeadline(deadline(now, timeout)); err != nil {
			hc.CloseConn(cc)
			return false, err
		}
	}
	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	br := t.opts.reader(conn)
	if reused {
		// The answer's first byte (which reading the header waits for
		// anyway): a connection closed before it is stale.
		if _, err := br.Peek(1); err != nil && !isTimeout(err) {
			t.opts.putReader(br)
			hc.CloseConn(cc)
			return false, &staleConnError{err: err, sent: true}
		}
	}
	hop, err := ReadResponseHeader(br, &resp.Header)
	if err != nil {
		t.opts.putReader(br)
		hc.CloseConn(cc)
		return false, timeoutAsErrTimeout(err)
	}
	// A 101 outside an upgrade (which the proxy sends on a connection of
	// its own) leaves the connection speaking something else.
	closeConn := req.ConnectionClose() || resp.ConnectionClose() || resp.StatusCode() == fasthttp.StatusSwitchingProtocols ||
		prefix != nil
	// The client gets none of the backend connection's own fields, and a
	// backend closing its connection does not close the client's.
	header.RemoveHopByHop(&resp.Header, hop)
	resp.Header.ResetConnectionClose()
	cl := resp.Header.ContentLength()
	switch code := resp.StatusCode(); {
	case resp.SkipBody || code < 200 || code == fasthttp.StatusNoContent || code == fasthttp.StatusNotModified:
		// No body, whatever the header says.
	case cl >= 0 && cl <= StreamThreshold:
		if err := resp.ReadBody(br, 0); err != nil {
			t.opts.putReader(br)
			hc.CloseConn(cc)
			return false, timeoutAsErrTimeout(err)
		}
	default:
		s := newResponseStream(t.b, br, conn, timeout, cl, func(reuse bool) {
			t.opts.putReader(br)
			if reuse && !closeConn {
				hc.ReleaseConn(cc)
			} else {
				hc.CloseConn(cc)
			}
		})
		if cl < 0 {
			cl = -1
		}
		resp.SetBodyStream(s, cl)
		return true, nil
	}
	t.opts.putReader(br)
	if closeConn {
		hc.CloseConn(cc)
	} else {
		hc.ReleaseConn(cc)
	}
	return false, nil
}

// maxInterim bounds the 1xx responses skipped before the final one.
const maxInterim = 16

// ReadResponseHeader reads the final response header from br into h,
// skipping interim (1xx) responses other than 101, and reports which
// hop-by-hop fields it holds. It refuses a header that header.CheckFields refuses
// (ErrMalformedResponse), checking it before fasthttp parses it: the parser
// rewrites folded lines in place.
func ReadResponseHeader(br *bufio.Reader, h *fasthttp.ResponseHeader) (hop header.Fields, err error) {
	for range maxInterim {
		if hop, err = header.CheckFields(peekHeader(br)); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrMalformedResponse, err)
		}
		if err := h.Read(br); err != nil {
			return 0, err
		}
		if code := h.StatusCode(); code >= 200 || code == fasthttp.StatusSwitchingProtocols {
			return hop, nil
		}
	}
	return 0, fmt.Errorf("%w: more than %d interim responses", ErrMalformedResponse, maxInterim)
}

// peekHeader returns the header fields of the response at the head of br
// (the lines after the status line, up to the blank line) without consuming
// anything, reading from the connection as needed. It returns nil when the
// header cannot be read whole; the header parser then meets and reports the
// same problem.
func peekHeader(br *bufio.Reader) []byte {
	n := 1
	for {
		if _, err := br.Peek(n); err != nil {
			return nil
		}
		b, _ := br.Peek(br.Buffered())
		if end := blankLine(b); end >= 0 {
			b = b[:end+1]
			return b[bytes.IndexByte(b, '\n')+1:]
		}
		if len(b) >= br.Size() {
			return nil
		}
		n = len(b) + 1
	}
}

// blankLine returns the index of the line feed that ends the last line
// before the first empty one (CRLF or, as RFC 9112 lets a recipient accept,
// a bare LF), or -1.
func blankLine(b []byte) int {
	end := bytes.Index(b, lfcrlf)
	head := b // where a bare-LF end would have to be, to come first
	if end >= 0 {
		head = b[:end+1]
	}
	if i := bytes.Index(head, lflf); i >= 0 {
		return i
	}
	return end
}

var (
	lfcrlf = []byte("\n\r\n")
	lflf   = []byte("\n\n")
)

// deadline is now plus d, or no deadline when d is 0.
func deadline(now time.Time, d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return now.Add(d)
}

// isTimeout reports whether err is a network timeout.
func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// timeoutAsErrTimeout reports a network timeout as fasthttp.ErrTimeout, as
// fasthttp's own transport does.
func timeoutAsErrTimeout(err error) error {
	if isTimeout(err) {
		return fasthttp.ErrTimeout
	}
	return err
}

// responseStream is a response body passed on as it arrives. It holds the
// backend connection, and the request's place in the backend's in-flight
// count, until the server has written it and closed it.
type responseStream struct {
	b       *Backend
	body    *fasthttp.Response // reads the body off br; its header only frames it
	r       io.Reader
	conn    net.Conn
	timeout time.Duration
	release func(reuse bool)

	client        net.Conn // see Pace
	clientTimeout time.Duration
	done          bool // the body was read to its end
}

var framers = sync.Pool{New: func() any { return new(fasthttp.Response) }}

func newResponseStream(b *Backend, br *bufio.Reader, conn net.Conn, timeout time.Duration, cl int, release func(bool)) *responseStream {
	body := framers.Get().(*fasthttp.Response)
	body.Header.SetContentLength(cl)
	body.StreamBody = true
	body.ReadBody(br, 0) // only sets up the stream: cannot fail
	return &responseStream{b: b, body: body, r: body.BodyStream(), conn: conn, timeout: timeout, release: release}
}

// Pace makes every read of the body first extend conn's write deadline by
// timeout: the proxy passes the client's connection, which the body is
// written to.
func (s *responseStream) Pace(conn net.Conn, timeout time.Duration) {
	s.client, s.clientTimeout = conn, timeout
}

func (s *responseStream) Read(p []byte) (int, error) {
	now := time.Now()
	if s.client != nil {
		s.client.SetWriteDeadline(deadline(now, s.clientTimeout))
	}
	s.conn.SetReadDeadline(deadline(now, s.timeout))
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.done = true
	}
	return n, timeoutAsErrTimeout(err)
}

// CloseWithError ends the stream: the connection goes back to the pool if
// the body was read to its end and writing it did not fail, else it is
// closed. fasthttp calls it once the response is written, or dropped.
func (s *responseStream) CloseWithError(err error) error {
	if s.release == nil {
		return nil
	}
	reuse := s.done && err == nil
	if !reuse {
		// Stop a read that may still be waiting on the backend.
		s.conn.Close()
	}
	s.body.CloseBodyStream()
	s.body.Reset()
	framers.Put(s.body)
	s.release(reuse)
	s.release = nil
	s.b.Release()
	return nil
}
