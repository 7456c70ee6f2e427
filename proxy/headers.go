package proxy

import (
	"net/netip"

	"github.com/valyala/fasthttp"
)

var (
	headerXFF       = []byte("X-Forwarded-For")
	headerXFP       = []byte("X-Forwarded-Proto")
	headerXFH       = []byte("X-Forwarded-Host")
	headerRequestID = []byte("X-Request-Id")
	commaSpace      = []byte(", ")
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
