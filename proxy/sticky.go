package proxy

import (
	"bytes"
	"net/netip"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"fastlb/balancer"
	"fastlb/config"
	"fastlb/upstream"
)

// Sticky configures session affinity. The zero value is off.
type Sticky struct {
	Mode         string        // config.StickyOff, StickyIP, StickyHeader or StickyCookie
	Header       string        // header mode: the header whose value is the key
	Cookie       string        // cookie mode: the cookie's name
	CookieInsert bool          // cookie mode: fastlb sets the cookie; else the application's is hashed
	CookieMaxAge time.Duration // Max-Age of an inserted cookie; 0 = a session cookie
	// Trusted are the peers whose X-Forwarded-For is believed in ip mode.
	Trusted []netip.Prefix
	// Hash maps keys to backends in the ip, header and application-cookie
	// modes; it must watch the proxy's pool.
	Hash *balancer.Hash
	// Cookies maps inserted cookie values to backends; it must watch the
	// proxy's pool.
	Cookies *balancer.Cookies
}

// sticky is Sticky with its names as bytes, ready for the request path.
type sticky struct {
	Sticky
	header, cookie []byte
	maxAge         int
}

func newSticky(s Sticky) *sticky {
	if s.Mode == "" {
		s.Mode = config.StickyOff
	}
	return &sticky{Sticky: s, header: []byte(s.Header), cookie: []byte(s.Cookie), maxAge: int(s.CookieMaxAge / time.Second)}
}

func (s *sticky) insertsCookie() bool { return s.Mode == config.StickyCookie && s.CookieInsert }

// stickyKey is what a request says about the backend it is sticky to.
type stickyKey struct {
	hash    uint64
	hasHash bool
	// cookie is the backend an inserted cookie names, nil when the request
	// carries no such cookie or one that names no current backend.
	cookie *upstream.Backend
	// owner is the backend a hashed key went to first; moved tells that
	// it was not the key's own (which was down, full or over its load).
	owner *upstream.Backend
	moved bool
}

// key reads a request's sticky key. It runs before fastlb rewrites the
// headers, and allocates nothing.
func (s *sticky) key(ctx *fasthttp.RequestCtx) stickyKey {
	h := &ctx.Request.Header
	switch s.Mode {
	case config.StickyIP:
		a := s.clientAddr(ctx).As16()
		return stickyKey{hash: balancer.HashKey(a[:]), hasHash: true}
	case config.StickyHeader:
		if v := h.PeekBytes(s.header); len(v) > 0 {
			return stickyKey{hash: balancer.HashKey(v), hasHash: true}
		}
	case config.StickyCookie:
		v := peekCookie(h, s.cookie)
		if len(v) == 0 {
			break
		}
		if s.CookieInsert {
			return stickyKey{cookie: s.Cookies.Lookup(v)}
		}
		return stickyKey{hash: balancer.HashKey(v), hasHash: true}
	}
	return stickyKey{}
}

// clientAddr is the TCP peer, or, when the peer is a trusted proxy, the
// rightmost address of X-Forwarded-For that is not a trusted proxy (the
// leftmost if all are). An element that is not an address ends the walk:
// the last address known good is used.
func (s *sticky) clientAddr(ctx *fasthttp.RequestCtx) netip.Addr {
	client, _ := netip.AddrFromSlice(ctx.RemoteIP())
	client = client.Unmap()
	if !s.trusted(client) {
		return client
	}
	lines := ctx.Request.Header.PeekAll("X-Forwarded-For")
	for i := len(lines) - 1; i >= 0; i-- {
		v := lines[i]
		for len(v) > 0 {
			var elem []byte
			if j := bytes.LastIndexByte(v, ','); j >= 0 {
				elem, v = v[j+1:], v[:j]
			} else {
				elem, v = v, nil
			}
			elem = bytes.TrimSpace(elem)
			if len(elem) == 0 {
				continue
			}
			a, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(elem), len(elem)))
			if err != nil {
				return client
			}
			client = a.Unmap()
			if !s.trusted(client) {
				return client
			}
		}
	}
	return client
}

func (s *sticky) trusted(a netip.Addr) bool {
	for _, p := range s.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

var (
	semicolon = []byte(";")
	equals    = []byte("=")
)

// peekCookie returns the value of the named cookie in the request's Cookie
// headers, without quotes, or nil. Unlike RequestHeader.Cookie it leaves the
// forwarded Cookie headers byte for byte as the client sent them. The value
// is valid until the handler returns.
func peekCookie(h *fasthttp.RequestHeader, name []byte) []byte {
	for _, line := range h.PeekAll("Cookie") {
		for len(line) > 0 {
			var pair []byte
			pair, line, _ = bytes.Cut(line, semicolon)
			pair = bytes.TrimSpace(pair)
			k, v, ok := bytes.Cut(pair, equals)
			if !ok || !bytes.Equal(bytes.TrimSpace(k), name) {
				continue
			}
			v = bytes.TrimSpace(v)
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v
		}
	}
	return nil
}

// setCookie adds fastlb's sticky cookie naming b to the response.
func (s *sticky) setCookie(ctx *fasthttp.RequestCtx, b *upstream.Backend) {
	v := s.Cookies.Value(b)
	if v == "" {
		return
	}
	c := fasthttp.AcquireCookie()
	c.SetKeyBytes(s.cookie)
	c.SetValue(v)
	c.SetPath("/")
	c.SetHTTPOnly(true)
	c.SetSameSite(fasthttp.CookieSameSiteLaxMode)
	c.SetSecure(ctx.IsTLS())
	if s.maxAge > 0 {
		c.SetMaxAge(s.maxAge)
	}
	ctx.Response.Header.SetCookie(c)
	fasthttp.ReleaseCookie(c)
}
