package upstream

// HTTP/2 backends (h2c:// in clear, h2:// over TLS), reached with net/http's
// HTTP/2 transport: one multiplexed connection per backend (more when its
// stream limit is reached), trailers both ways, bodies streamed.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"fastlb/config"
	"fastlb/internal/header"
)

// ErrCannotConnect wraps the failure to open a connection to a backend:
// nothing of the request was sent.
var ErrCannotConnect = errors.New("cannot connect to the backend")

func newH2Transport(c config.Backend, opts *clientSettings) *http.Transport {
	var p http.Protocols
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: time.Duration(opts.connectTimeout.Load())}
			return d.DialContext(ctx, network, addr)
		},
		MaxResponseHeaderBytes: int64(max(opts.maxHeaderBytes, 4096)),
		DisableCompression:     true, // the client's Accept-Encoding, as it sent it
		IdleConnTimeout:        90 * time.Second,
		Protocols:              &p,
		HTTP2:                  &http.HTTP2Config{},
	}
	if c.Scheme == "h2" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if opts.tls != nil {
			cfg = opts.tls.Clone()
		}
		cfg.ServerName = c.Host
		t.TLSClientConfig = cfg
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	return t
}

// IsH2 reports whether b is reached over HTTP/2.
func (b *Backend) IsH2() bool { return b.h2 != nil }

// DoH2 sends req to an HTTP/2 backend and puts its answer in resp: a body
// of up to StreamThreshold bytes whole, a longer one or one of unknown
// length (gRPC's) as a stream that ends with the answer's trailers
// (H2Body). teTrailers sends "TE: trailers" on, which gRPC requires. The
// answer's header must come within the backend timeout; a streamed body has
// no time limit of its own.
func (b *Backend) DoH2(req *fasthttp.Request, resp *fasthttp.Response, teTrailers bool) error {
	if !b.TryAcquire() {
		return ErrFull
	}
	streaming := false
	defer func() {
		if !streaming {
			b.Release()
		}
	}()
	scheme := "http://"
	if b.Scheme == "h2" {
		scheme = "https://"
	}
	uri := req.Header.RequestURI()
	if len(uri) == 0 || uri[0] != '/' {
		uri = req.URI().RequestURI()
	}
	var body io.Reader
	length := int64(req.Header.ContentLength())
	switch {
	case req.IsBodyStream():
		body = req.BodyStream()
	case len(req.Body()) > 0:
		body, length = bytes.NewReader(req.Body()), int64(len(req.Body()))
	default:
		length = 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	hreq, err := http.NewRequestWithContext(ctx, string(req.Header.Method()), scheme+b.Addr+string(uri), body)
	if err != nil {
		cancel()
		return err
	}
	hreq.ContentLength = max(length, -1)
	if t, ok := body.(Trailing); ok && len(t.Trailer()) > 0 {
		// Declared now, sent once the body is read to its end (when
		// net/http has their values).
		hreq.Trailer = make(http.Header, len(t.Trailer()))
		for k := range t.Trailer() {
			hreq.Trailer[k] = nil
		}
		hreq.Body = &trailerCopy{r: body, from: t, to: hreq.Trailer}
		hreq.ContentLength = -1
	}
	hreq.Host = string(req.Header.Host())
	req.Header.VisitAll(func(k, v []byte) {
		switch string(k) {
		case fasthttp.HeaderHost, fasthttp.HeaderContentLength, fasthttp.HeaderTransferEncoding, fasthttp.HeaderConnection:
			return
		}
		hreq.Header.Add(string(k), string(v))
	})
	if teTrailers {
		hreq.Header.Set("Te", "trailers")
	}
	timer := time.AfterFunc(time.Duration(b.t.opts.backendTimeout.Load()), cancel)
	hresp, err := b.h2.RoundTrip(hreq)
	timedOut := !timer.Stop()
	if err != nil {
		cancel()
		var op *net.OpError
		switch {
		case timedOut:
			return fasthttp.ErrTimeout
		case errors.As(err, &op) && op.Op == "dial":
			return fmt.Errorf("%w: %w", ErrCannotConnect, err)
		}
		return err
	}
	resp.Reset()
	resp.SetStatusCode(hresp.StatusCode)
	for k, vs := range hresp.Header {
		if header.IsHopField(k) || k == fasthttp.HeaderContentLength {
			continue
		}
		for _, v := range vs {
			resp.Header.Add(k, v)
		}
	}
	if hresp.ContentLength >= 0 && hresp.ContentLength <= StreamThreshold && len(hresp.Trailer) == 0 {
		data, err := io.ReadAll(io.LimitReader(hresp.Body, StreamThreshold+1))
		hresp.Body.Close()
		cancel()
		if err != nil {
			return err
		}
		resp.SetBody(data)
		return nil
	}
	streaming = true
	resp.SetBodyStream(&H2Body{b: b, resp: hresp, cancel: cancel}, int(max(hresp.ContentLength, -1)))
	return nil
}

// Trailing is a request body followed by trailers (an HTTP/2 client's):
// Trailer names them before the body is read, and holds their values
// once it was read to its end. DoH2 sends them on; an HTTP/1.1 backend
// does not get them.
type Trailing interface {
	Trailer() http.Header
}

// trailerCopy reads a request body to an HTTP/2 backend and, at its end,
// fills the outgoing request's declared trailers from the client's. The
// outgoing request has a map of its own: the transport reads its keys
// while it writes the header, when net/http's server may be filling the
// client's.
type trailerCopy struct {
	r    io.Reader
	from Trailing
	to   http.Header
}

func (c *trailerCopy) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		for k := range c.to {
			c.to[k] = c.from.Trailer()[k]
		}
	}
	return n, err
}

func (c *trailerCopy) Close() error { return nil }

// H2Body is the streamed body of an HTTP/2 backend's answer. Once read to
// its end, Trailer holds the answer's trailers.
type H2Body struct {
	b      *Backend
	resp   *http.Response
	cancel context.CancelFunc
	once   sync.Once
}

func (s *H2Body) Read(p []byte) (int, error) {
	n, err := s.resp.Body.Read(p)
	if err != nil {
		s.finish()
	}
	return n, err
}

// Close ends the stream (resetting it if it was not read to its end) and
// frees the backend's place.
func (s *H2Body) Close() error {
	s.finish()
	return nil
}

func (s *H2Body) finish() {
	s.once.Do(func() {
		s.resp.Body.Close()
		s.cancel()
		s.b.Release()
	})
}

// Trailer is the answer's trailers, once the body has been read to its end.
func (s *H2Body) Trailer() http.Header { return s.resp.Trailer }

// CheckH2 is an HTTP health check of an HTTP/2 backend: the status of a GET
// of path, within timeout.
func (b *Backend) CheckH2(path string, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	scheme := "http://"
	if b.Scheme == "h2" {
		scheme = "https://"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+b.Addr+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "fastlb-health-check")
	resp, err := b.h2.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) //nolint:errcheck // the status decides
	resp.Body.Close()
	return resp.StatusCode, nil
}
