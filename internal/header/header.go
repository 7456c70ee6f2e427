// Package header holds the checks of HTTP header fields that both sides of
// the proxy share: the hop-by-hop fields, which are never forwarded, and
// the checks a raw request or response header must pass to be forwarded.
package header

import (
	"bytes"
	"errors"

	"github.com/valyala/fasthttp"
)

// HopFields are the hop-by-hop fields of RFC 9110 section 7.6.1, plus the
// obsolete Proxy-Connection and Keep-Alive that clients still send. They
// belong to one connection and are never forwarded.
var HopFields = [...]string{
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

// ForwardFields are the fields the proxy sets on every request that it
// must look up when the client sent them: X-Forwarded-For to append to,
// X-Forwarded-Host to drop when the request has no Host, X-Request-Id to
// keep. CheckFields notes them too, so that the proxy looks one up only
// when the client sent it. (X-Forwarded-Proto is set whatever the client
// sent.)
var ForwardFields = [...]string{
	"X-Forwarded-For",
	"X-Forwarded-Host",
	"X-Request-Id",
}

// Fields is a set of the fields CheckFields notes: bit i stands for
// HopFields[i], and the bits after those for ForwardFields.
type Fields uint16

const (
	hopConnection       Fields = 1                     // HopFields[0]
	FieldTE             Fields = 1 << 5                // HopFields[5]
	hopTransferEncoding Fields = 1 << 7                // HopFields[7]
	hopMask             Fields = 1<<len(HopFields) - 1 // all of HopFields
)

// The bits of ForwardFields.
const (
	FieldXForwardedFor Fields = 1 << (len(HopFields) + iota)
	FieldXForwardedHost
	FieldXRequestID
)

// IsHopField reports whether name (canonical) is one of HopFields.
func IsHopField(name string) bool {
	for _, f := range HopFields {
		if name == f {
			return true
		}
	}
	return false
}

// noted is HopFields then ForwardFields, in the order of their bits.
var noted = func() (n [len(HopFields) + len(ForwardFields)]string) {
	copy(n[:], HopFields[:])
	copy(n[len(HopFields):], ForwardFields[:])
	return n
}()

// Header is what RemoveHopByHop needs of fasthttp's request and response
// headers.
type Header interface {
	PeekAll(key string) [][]byte
	Del(key string)
	DelBytes(key []byte)
}

var (
	_ Header = (*fasthttp.RequestHeader)(nil)
	_ Header = (*fasthttp.ResponseHeader)(nil)
)

// RemoveHopByHop deletes the hop-by-hop fields of h (RFC 9110 section
// 7.6.1) that present holds (as CheckFields or ReadResponseHeader report
// them), and every field that Connection names. It works on request and
// response headers alike and allocates nothing; each field costs a lookup,
// so it looks only for those present.
//
// The names Connection lists are views into the header. Deleting with them
// is safe: DelBytes copies the name before it looks, and deleting moves
// header entries without touching the bytes of any value; nothing is added
// to the header until the loop ends.
func RemoveHopByHop(h Header, present Fields) {
	if present&hopConnection != 0 {
		for _, v := range h.PeekAll("Connection") {
			for len(v) > 0 {
				var tok []byte
				tok, v, _ = bytes.Cut(v, comma)
				// Host is never hop-by-hop: a client naming it must not
				// strip the request of its target host.
				if tok = bytes.TrimSpace(tok); len(tok) > 0 && !bytes.EqualFold(tok, nameHost) {
					h.DelBytes(tok)
				}
			}
		}
	}
	if present&hopMask == 0 {
		return
	}
	for i, k := range HopFields {
		if present&(1<<i) != 0 {
			h.Del(k)
		}
	}
}

var (
	nameContentLength = []byte("Content-Length")
	nameHost          = []byte("Host")
	comma             = []byte(",")

	errFraming    = errors.New("both Content-Length and Transfer-Encoding")
	errHeaderName = errors.New("invalid character in a header name")
	errObsFold    = errors.New("obsolete line folding in a header")
)

// CheckFields reports which of HopFields and ForwardFields a header block
// holds, and refuses one whose framing or syntax the next hop might read
// differently from fastlb (request smuggling, response
// splitting): both Content-Length and Transfer-Encoding, obsolete line
// folding, and field names that are empty or hold separators. fasthttp's
// parser already refuses duplicate or malformed Content-Length, unknown
// transfer codings and control characters in values; it accepts a message
// with both Content-Length and Transfer-Encoding by dropping Content-Length,
// and names holding separators. raw is the block as received, without the
// start line.
func CheckFields(raw []byte) (seen Fields, err error) {
	var sawLength bool
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
			return 0, errObsFold
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return 0, errHeaderName
		}
		name := line[:colon]
		for _, c := range name {
			if !isTokenChar(c) {
				return 0, errHeaderName
			}
		}
		seen |= fieldBit(name)
		if len(name) == len(nameContentLength) {
			sawLength = sawLength || bytes.EqualFold(name, nameContentLength)
		}
		if sawLength && seen&hopTransferEncoding != 0 {
			return 0, errFraming
		}
	}
	return seen, nil
}

// fieldBit returns the bit of name if it is one of HopFields or
// ForwardFields, in any case.
func fieldBit(name []byte) Fields {
	if len(name) >= len(notedByLength) {
		return 0
	}
	for _, i := range notedByLength[len(name)] {
		if equalFold(name, noted[i]) {
			return 1 << i
		}
	}
	return 0
}

// notedByLength holds, for each length, the indexes in noted of the names
// of that length: at most two.
var notedByLength = func() (t [len("Proxy-Authorization") + 1][]uint8) {
	for i, f := range noted {
		t[len(f)] = append(t[len(f)], uint8(i))
	}
	return t
}()

// equalFold reports whether b and s, of the same length, are equal under
// ASCII case folding.
func equalFold(b []byte, s string) bool {
	for i := range len(s) {
		if b[i]|0x20 != s[i]|0x20 {
			return false
		}
	}
	return true
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
