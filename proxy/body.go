package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/upstream"
)

// The server streams request bodies (fasthttp's StreamRequestBody): the
// handler runs once the header and up to 8 KiB of the body are in, and
// takeBody decides what happens to the rest. A body of up to
// upstream.StreamThreshold bytes is read whole, so the request can be
// retried like one without a body. A longer one, or a chunked one that turns
// out longer, streams to the backend as the client sends it: it is never
// retried once a byte of it has been read, max_request_body is counted as
// it goes, and client_read_timeout bounds each read rather than the whole
// upload.

var (
	errBodyTooLarge = errors.New("request body larger than max_request_body")
	// errLengthTooLarge refuses a body by its Content-Length, before any of
	// it is read.
	errLengthTooLarge = fmt.Errorf("%w (by its Content-Length)", errBodyTooLarge)
)

// takeBody reads the request's body into the request, or sets it up to
// stream. It returns the streamed body (nil when the body was read whole),
// or the error that refuses the request.
func (p *Proxy) takeBody(ctx *fasthttp.RequestCtx) (*clientBody, error) {
	req := &ctx.Request
	cl := req.Header.ContentLength()
	if p.maxBody > 0 && cl > p.maxBody {
		return nil, errLengthTooLarge
	}
	// body stays on the stack unless it streams.
	body := clientBody{
		r: req.BodyStream(), length: int64(cl), limit: int64(p.maxBody),
		client: ctx.Conn(), timeout: p.clientReadTimeout,
	}
	if cl > upstream.StreamThreshold {
		return streamBody(req, body, cl), nil
	}
	if cl < 0 && bytes.HasPrefix(req.Header.ContentType(), grpc) {
		// gRPC: its messages go on as they come (a stream may wait for
		// an answer before it sends more), never held.
		return streamBody(req, body, -1), nil
	}
	if _, ok := body.r.(upstream.Trailing); ok {
		// Trailers follow the body: it goes on as it comes, and they
		// after it.
		return streamBody(req, body, -1), nil
	}
	// Read the body into the request's own buffer. ResetBody first hands
	// the buffer holding what the server has read ahead to the stream, so
	// the two never share memory.
	req.ResetBody()
	chunk := chunks.Get().(*[16 << 10]byte)
	defer chunks.Put(chunk)
	for {
		n, err := body.Read(chunk[:])
		req.AppendBody(chunk[:n])
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if body.n > upstream.StreamThreshold {
			// A chunked body too long to hold: stream what was read and
			// the rest.
			body.head, body.sent = bytes.Clone(req.Body()), 0
			return streamBody(req, body, -1), nil
		}
	}
}

// streamBody makes body the request's body, of length cl (-1: chunked).
func streamBody(req *fasthttp.Request, body clientBody, cl int) *clientBody {
	s := new(clientBody)
	*s = body
	req.SetBodyStream(s, cl)
	return s
}

var grpc = []byte("application/grpc")

var chunks = sync.Pool{New: func() any { return new([16 << 10]byte) }}

// refuseBody answers a request whose body could not be taken: 413 when it
// is too large, 408 when the client stopped sending, else 400. The
// connection is closed unless the body was refused before any of it was
// read: then the server reads and drops a modest rest of it (256 KiB) and
// keeps the connection, so a client still sending reads the answer rather
// than a reset.
func (p *Proxy) refuseBody(ctx *fasthttp.RequestCtx, err error) {
	status := fasthttp.StatusBadRequest
	var netErr net.Error
	switch {
	case errors.Is(err, errBodyTooLarge):
		status = fasthttp.StatusRequestEntityTooLarge
	case errors.As(err, &netErr) && netErr.Timeout():
		status = fasthttp.StatusRequestTimeout
	}
	p.logger.Debug("request body refused", "client", ctx.RemoteAddr().String(), "status", status, "cause", err.Error())
	if err != errLengthTooLarge {
		ctx.SetConnectionClose()
	}
	writeError(ctx, status)
}

// clientBody is a request body as the client sends it, read under
// client_read_timeout per read and held to max_request_body. It remembers
// the first error that was the client's doing, so that the proxy can tell
// a client that stopped sending from a backend that failed.
type clientBody struct {
	head    []byte // read from the client before the body began to stream
	r       io.Reader
	length  int64 // Content-Length, or -1 when chunked
	limit   int64 // max_request_body; 0: none
	n       int64 // bytes read from the client
	sent    int64 // bytes handed on since the body began to stream
	err     error // the client's failure
	client  net.Conn
	timeout time.Duration

	backend        net.Conn // see Pace
	backendTimeout time.Duration
}

// Trailer is the trailers of an HTTP/2 client's body (upstream.Trailing),
// nil for any other.
func (c *clientBody) Trailer() http.Header {
	if t, ok := c.r.(upstream.Trailing); ok {
		return t.Trailer()
	}
	return nil
}

// Pace makes every read of the body first extend conn's write deadline by
// timeout; the transport passes the backend connection the body goes to.
func (c *clientBody) Pace(conn net.Conn, timeout time.Duration) {
	c.backend, c.backendTimeout = conn, timeout
}

func (c *clientBody) Read(p []byte) (int, error) {
	n, err := c.read(p)
	c.sent += int64(n)
	return n, err
}

func (c *clientBody) read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	now := time.Now()
	if c.timeout > 0 {
		c.client.SetReadDeadline(now.Add(c.timeout))
	}
	if c.backend != nil && c.backendTimeout > 0 {
		c.backend.SetWriteDeadline(now.Add(c.backendTimeout))
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	switch {
	case c.limit > 0 && c.n > c.limit:
		c.err = errBodyTooLarge
		return 0, c.err
	case err == io.EOF && c.length >= 0 && c.n < c.length:
		c.err = io.ErrUnexpectedEOF
		return n, c.err
	case err != nil && err != io.EOF:
		c.err = err
	}
	return n, err
}
