package proxy

import (
	"crypto/rand"
	"net/netip"

	"github.com/valyala/fasthttp"

	"fastlb/internal/header"
)

var (
	headerXFF       = []byte("X-Forwarded-For")
	headerXFP       = []byte("X-Forwarded-Proto")
	headerXFH       = []byte("X-Forwarded-Host")
	headerRequestID = []byte("X-Request-Id")
	headerTE        = []byte("Te")
	trailers        = []byte("trailers")
	commaSpace      = []byte(", ")
	protoHTTP       = []byte("http")
	protoHTTPS      = []byte("https")
	hexDigits       = "0123456789abcdef"
)

// setForwarded adds the client's address to X-Forwarded-For and sets
// X-Forwarded-Proto and X-Forwarded-Host. Several X-Forwarded-For lines are
// joined into one list, as RFC 9110 section 5.3 allows. seen is what
// header.CheckFields noted of the request's fields: one it did not note
// is not there, and is not looked for.
func setForwarded(ctx *fasthttp.RequestCtx, seen header.Fields) {
	h := &ctx.Request.Header
	var buf [256]byte
	b := buf[:0]
	var lines [][]byte
	if seen&header.FieldXForwardedFor != 0 {
		lines = h.PeekAll("X-Forwarded-For")
	}
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
	} else if seen&header.FieldXForwardedHost != 0 {
		h.DelBytes(headerXFH)
	}
}

// idPrefix is the start of the request ids of one process: 8 random bytes
// in hex and a dash.
type idPrefix [17]byte

func newIDPrefix() (p idPrefix) {
	var r [8]byte
	rand.Read(r[:])
	for i, c := range r {
		p[2*i], p[2*i+1] = hexDigits[c>>4], hexDigits[c&15]
	}
	p[16] = '-'
	return p
}

// setRequestID adds an X-Request-Id, the process's prefix and then the
// next sequence number in 16 hex digits, unless the request has one (seen
// as in setForwarded).
func (p *Proxy) setRequestID(h *fasthttp.RequestHeader, seen header.Fields) {
	if seen&header.FieldXRequestID != 0 && len(h.PeekBytes(headerRequestID)) > 0 {
		return
	}
	var id [len(idPrefix{}) + 16]byte
	copy(id[:], p.idPrefix[:])
	n := p.idSeq.Add(1)
	for i := len(id) - 1; i >= len(p.idPrefix); i-- {
		id[i] = hexDigits[n&15]
		n >>= 4
	}
	h.SetCanonical(headerRequestID, id[:])
}
