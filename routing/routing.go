// Package routing decides which route a request takes (SPEC section 7): the
// route with the most specific host (an exact name, then the longest
// wildcard, then none) among those whose path prefix matches, then the
// longest path prefix. The order of the routes does not matter.
//
// A Table is built once per configuration and never changes: Match takes no
// lock and allocates nothing, and its cost grows with the length of the
// host and path and the number of distinct wildcard lengths, not with the
// number of routes.
package routing

import (
	"bytes"
	"cmp"
	"slices"
	"strings"

	"fastlb/config"
)

// Table finds the route of a request. It is safe for concurrent use.
type Table struct {
	exact map[string]*prefixes // by lower-case host name
	// wild holds the wildcard routes by the length of their suffix
	// (".example.com" for "*.example.com"), longest first.
	wild   []wildcards
	anyone *prefixes // routes without a host; nil when there are none
}

type wildcards struct {
	n     int                  // length of every suffix in m
	bySfx map[string]*prefixes // by suffix, leading dot included
}

// New builds the table of routes, which must have been validated (config
// checks them: hosts in lower case, no two with the same host and prefix).
// Match returns indexes into routes.
func New(routes []config.Route) *Table {
	t := &Table{exact: map[string]*prefixes{}}
	byLen := map[int]map[string]*prefixes{}
	for i := range routes {
		r := &routes[i]
		var ps *prefixes
		switch {
		case r.Host == "":
			if t.anyone == nil {
				t.anyone = newPrefixes()
			}
			ps = t.anyone
		case strings.HasPrefix(r.Host, "*."):
			sfx := r.Host[1:]
			m := byLen[len(sfx)]
			if m == nil {
				m = map[string]*prefixes{}
				byLen[len(sfx)] = m
			}
			if ps = m[sfx]; ps == nil {
				ps = newPrefixes()
				m[sfx] = ps
			}
		default:
			if ps = t.exact[r.Host]; ps == nil {
				ps = newPrefixes()
				t.exact[r.Host] = ps
			}
		}
		ps.insert(r.PathPrefix, int32(i))
	}
	for n, m := range byLen {
		t.wild = append(t.wild, wildcards{n: n, bySfx: m})
	}
	slices.SortFunc(t.wild, func(a, b wildcards) int { return cmp.Compare(b.n, a.n) })
	return t
}

// maxHost bounds the host names Match compares: a DNS name has at most 253
// characters, and a longer Host matches only the routes without a host.
const maxHost = 255

// Match returns the index of the route for a request to host (as the
// request gives it: any case, with or without a port) and path (the raw
// path, without the query), or -1 when none matches.
func (t *Table) Match(host, path []byte) int {
	if t == nil {
		return -1
	}
	var buf [maxHost]byte
	h, ok := normalHost(buf[:0], host)
	if ok && len(h) > 0 {
		if ps := t.exact[string(h)]; ps != nil {
			if i := ps.longest(path); i >= 0 {
				return i
			}
		}
		for _, w := range t.wild {
			if len(h) <= w.n {
				continue
			}
			if ps := w.bySfx[string(h[len(h)-w.n:])]; ps != nil {
				if i := ps.longest(path); i >= 0 {
					return i
				}
			}
		}
	}
	if t.anyone != nil {
		return t.anyone.longest(path)
	}
	return -1
}

// normalHost appends host to dst in lower case, without its port and a
// trailing dot. It reports false when the host does not fit in maxHost.
func normalHost(dst, host []byte) ([]byte, bool) {
	if len(host) > 0 && host[0] == '[' {
		if i := bytes.IndexByte(host, ']'); i >= 0 {
			host = host[:i+1]
		}
	} else if i := bytes.IndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	host = bytes.TrimSuffix(host, dot)
	if len(host) > cap(dst)-len(dst) {
		return dst, false
	}
	for _, c := range host {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst, true
}

var (
	dot       = []byte(".")
	slash     = []byte("/")
	schemeSep = []byte("://")
	http      = []byte("http")
	https     = []byte("https")
)

// Target returns what a request is routed by: its host (the authority of
// an absolute-form target, else the Host header) and its path (the
// target's path without the query; "/" for an absolute-form target without
// one), and where the path starts in uri (0 for the usual origin form).
// An asterisk-form or authority-form target gives a path that no prefix
// matches.
func Target(uri, hostHeader []byte) (host, path []byte, pathStart int) {
	host = hostHeader
	if len(uri) > 0 && uri[0] != '/' {
		if i := bytes.Index(uri, schemeSep); i > 0 && isScheme(uri[:i]) {
			start := i + len(schemeSep)
			end := start
			for end < len(uri) && uri[end] != '/' && uri[end] != '?' && uri[end] != '#' {
				end++
			}
			host = uri[start:end]
			if at := bytes.LastIndexByte(host, '@'); at >= 0 {
				host = host[at+1:]
			}
			pathStart = end
		}
	}
	path = uri[pathStart:]
	if q := bytes.IndexAny(path, "?#"); q >= 0 {
		path = path[:q]
	}
	if pathStart > 0 && len(path) == 0 {
		path = slash
	}
	return host, path, pathStart
}

// isScheme reports whether s is "http" or "https", in any case.
func isScheme(s []byte) bool {
	return bytes.EqualFold(s, http) || bytes.EqualFold(s, https)
}

// Order returns the indexes of routes in the order Match considers them:
// exact hosts, then wildcards (longest first), then routes without a host;
// within a host, the longest prefix first. Hosts of a class are in
// alphabetical order, so the order does not depend on the file's.
func Order(routes []config.Route) []int {
	idx := make([]int, len(routes))
	for i := range idx {
		idx[i] = i
	}
	class := func(r *config.Route) int {
		switch {
		case r.Host == "":
			return 2
		case strings.HasPrefix(r.Host, "*."):
			return 1
		}
		return 0
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		ra, rb := &routes[a], &routes[b]
		longer := 0
		if class(ra) == 1 {
			longer = cmp.Compare(len(rb.Host), len(ra.Host))
		}
		return cmp.Or(
			cmp.Compare(class(ra), class(rb)),
			longer,
			strings.Compare(ra.Host, rb.Host),
			cmp.Compare(len(rb.PathPrefix), len(ra.PathPrefix)),
			strings.Compare(ra.PathPrefix, rb.PathPrefix),
		)
	})
	return idx
}
