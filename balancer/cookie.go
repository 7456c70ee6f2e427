package balancer

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"sync/atomic"

	"fastlb/upstream"
)

// Cookies maps the values of fastlb's sticky cookie to backends and back.
// A value is "v1." and the base64url of the first 12 bytes of
// HMAC-SHA256(secret, backend id): it names the backend without revealing
// its address, and cannot be forged without the secret. Update precomputes
// both directions for every backend of a snapshot, so a lookup is one map
// access; Lookup and Value take no lock and allocate nothing.
type Cookies struct {
	secret []byte
	table  atomic.Pointer[cookieTable]
}

type cookieTable struct {
	byValue map[string]*upstream.Backend
	value   map[*upstream.Backend]string
}

// NewCookies returns a cookie table keyed with secret.
func NewCookies(secret []byte) *Cookies {
	c := &Cookies{secret: secret}
	c.table.Store(&cookieTable{})
	return c
}

// Update implements the Pool's watcher: it maps every backend of s.
func (c *Cookies) Update(s *upstream.Snapshot) {
	old := c.table.Load()
	t := &cookieTable{
		byValue: make(map[string]*upstream.Backend, len(s.All)),
		value:   make(map[*upstream.Backend]string, len(s.All)),
	}
	for _, b := range s.All {
		v, ok := old.value[b]
		if !ok {
			v = CookieValue(c.secret, b.ID)
		}
		t.byValue[v] = b
		t.value[b] = v
	}
	c.table.Store(t)
}

// Lookup returns the backend a cookie value names, or nil for a value that
// names no current backend (garbage, forged, or a removed backend).
func (c *Cookies) Lookup(v []byte) *upstream.Backend {
	return c.table.Load().byValue[string(v)]
}

// Value is the cookie value that names b, or "" if b is not in the pool.
func (c *Cookies) Value(b *upstream.Backend) string {
	return c.table.Load().value[b]
}

// CookieValue computes the cookie value naming a backend id.
func CookieValue(secret []byte, id string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(id))
	return "v1." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)[:12])
}
