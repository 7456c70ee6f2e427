package upstream

import (
	"bytes"
	"errors"
)

var (
	nameContentLength    = []byte("Content-Length")
	nameTransferEncoding = []byte("Transfer-Encoding")

	errFraming    = errors.New("both Content-Length and Transfer-Encoding")
	errHeaderName = errors.New("invalid character in a header name")
	errObsFold    = errors.New("obsolete line folding in a header")
)

// CheckFields refuses a header block whose framing or syntax the next hop
// might read differently from fastlb (request smuggling, response
// splitting): both Content-Length and Transfer-Encoding, obsolete line
// folding, and field names that are empty or hold separators. fasthttp's
// parser already refuses duplicate or malformed Content-Length, unknown
// transfer codings and control characters in values; it accepts a message
// with both Content-Length and Transfer-Encoding by dropping Content-Length,
// and names holding separators. raw is the block as received, without the
// start line.
func CheckFields(raw []byte) error {
	var sawLength, sawCoding bool
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
		switch len(name) {
		case len(nameContentLength):
			sawLength = sawLength || bytes.EqualFold(name, nameContentLength)
		case len(nameTransferEncoding):
			sawCoding = sawCoding || bytes.EqualFold(name, nameTransferEncoding)
		}
		if sawLength && sawCoding {
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
