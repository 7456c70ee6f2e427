package proxy

import (
	"bytes"
	"errors"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// hopHeaders are the hop-by-hop fields of RFC 9110 section 7.6.1, plus the
// obsolete Proxy-Connection and Keep-Alive that clients still send.
var hopHeaders = []string{
	"Connection",
	"Keep-Alive",
	"Proxy-Connection",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// header is what removeHopByHop needs of fasthttp's request and response
// headers.
type header interface {
	PeekAll(key string) [][]byte
	Del(key string)
	DelBytes(key []byte)
}

var (
	_ header = (*fasthttp.RequestHeader)(nil)
	_ header = (*fasthttp.ResponseHeader)(nil)
)

// removeHopByHop deletes the hop-by-hop fields of h (RFC 9110 section
// 7.6.1): Connection, every field that Connection names, and hopHeaders.
// It works on request and response headers alike and allocates nothing.
//
// The names Connection lists are views into the header. Deleting with them
// is safe: DelBytes copies the name before it looks, and deleting moves
// header entries without touching the bytes of any value; nothing is added
// to the header until the loop ends.
func removeHopByHop(h header) {
	for _, v := range h.PeekAll("Connection") {
		for len(v) > 0 {
			var tok []byte
			tok, v, _ = bytes.Cut(v, comma)
			// Host is never hop-by-hop: a client naming it must not strip
			// the request of its target host.
			if tok = bytes.TrimSpace(tok); len(tok) > 0 && !bytes.EqualFold(tok, headerHost) {
				h.DelBytes(tok)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

var (
	errFraming    = errors.New("both Content-Length and Transfer-Encoding")
	errHeaderName = errors.New("invalid character in a header name")
	errObsFold    = errors.New("obsolete line folding in a header")
)

// checkHeaders refuses requests whose framing or header syntax a backend
// might read differently from fastlb (request smuggling). fasthttp's parser
// already refuses duplicate or malformed Content-Length, unknown transfer
// codings and control characters in values; it accepts a request with both
// Content-Length and Transfer-Encoding by dropping Content-Length, and
// header names holding separators. raw is the header block as received.
func checkHeaders(raw []byte, chunked bool) error {
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errObsFold
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errHeaderName
		}
		name := line[:colon]
		for _, c := range name {
			if !isTokenChar(c) {
				return errHeaderName
			}
		}
		if chunked && len(name) == len("Content-Length") && bytes.EqualFold(name, []byte("Content-Length")) {
			return errFraming
		}
	}
	return nil
}

// isTokenChar reports whether c may appear in a field name (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	return tokenChars[c]
}

var tokenChars = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

var (
	headerHost      = []byte("Host")
	headerXFF       = []byte("X-Forwarded-For")
	headerXFP       = []byte("X-Forwarded-Proto")
	headerXFH       = []byte("X-Forwarded-Host")
	headerRequestID = []byte("X-Request-Id")
	commaSpace      = []byte(", ")
	comma           = []byte(",")
	protoHTTP       = []byte("http")
	protoHTTPS      = []byte("https")
	hexDigits       = "0123456789abcdef"
)

// setForwarded adds the client's address to X-Forwarded-For and sets
// X-Forwarded-Proto and X-Forwarded-Host. Several X-Forwarded-For lines are
// joined into one list, as RFC 9110 section 5.3 allows.
func setForwarded(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	var buf [256]byte
	b := buf[:0]
	lines := h.PeekAll("X-Forwarded-For")
	for _, v := range lines {
		if len(v) == 0 {
			continue
		}
		b = append(b, v...)
		b = append(b, commaSpace...)
	}
	if ip, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		b = ip.Unmap().AppendTo(b)
	}
	if len(lines) > 1 {
		h.DelBytes(headerXFF) // SetCanonical replaces one line only
	}
	// The keys are already in canonical form: no normalisation needed.
	h.SetCanonical(headerXFF, b)
	if ctx.IsTLS() {
		h.SetCanonical(headerXFP, protoHTTPS)
	} else {
		h.SetCanonical(headerXFP, protoHTTP)
	}
	if host := h.Host(); len(host) > 0 {
		h.SetCanonical(headerXFH, host)
	} else {
		h.DelBytes(headerXFH)
	}
}

// appendRequestID appends a request id: the process's random prefix, a dash,
// and a sequence number, all in hex.
func appendRequestID(dst []byte, prefix *[8]byte, seq uint64) []byte {
	for _, c := range prefix {
		dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
	}
	dst = append(dst, '-')
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigits[(seq>>uint(shift))&15])
	}
	return dst
}
