package proxy

import (
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/valyala/fasthttp"

	"fastlb/config"
	"fastlb/ratelimit"
)

// limit is a rate limit as the request path applies it.
type limit struct {
	lim     *ratelimit.Limiter
	header  []byte           // the key's header; nil: the client's address
	limited *metrics.Counter // fastlb_rate_limited_total{route}
}

// limitKey names a limiter that a reload keeps: the same route label and
// the same settings keep their buckets.
type limitKey struct {
	route string
	cfg   config.RateLimit
}

// limits are the limiters in force, so that a reload keeps those whose
// settings it does not change.
type limits struct {
	mu    sync.Mutex
	byKey map[limitKey]*limit
}

// get returns the limit rl sets for the route labelled route ("" for the
// top level's), nil when it is off: the one in force when there is one,
// else a new one. It notes it in kept. l.mu is held.
func (l *limits) get(kept map[limitKey]*limit, set *metrics.Set, route string, rl *config.RateLimit) *limit {
	if !rl.On() {
		return nil
	}
	k := limitKey{route: route, cfg: *rl}
	if lm := kept[k]; lm != nil {
		return lm
	}
	lm := l.byKey[k]
	if lm == nil {
		lm = &limit{lim: ratelimit.New(rl.Rate, rl.Bucket(), rl.MaxKeys),
			limited: set.GetOrCreateCounter(fmt.Sprintf("fastlb_rate_limited_total{route=%q}", route))}
		if rl.Header != "" {
			lm.header = []byte(rl.Header)
		}
	}
	kept[k] = lm
	return lm
}

// Key kinds: the same bytes as an address and as a header value are two
// keys.
const (
	keyAddr   = 'a'
	keyHeader = 'h'
)

var (
	headerRetryAfter = []byte("Retry-After")
	rateLimitedBody  = `{"error": "rate limited"}` + "\n"
)

// allow takes a token for the request at now, or answers it 429 with
// Retry-After and reports false. The key is the header's value, or the
// client's address when the header is absent or the limit is by address.
func (lm *limit) allow(ctx *fasthttp.RequestCtx, now time.Time) bool {
	var key uint64
	if lm.header != nil {
		if v := ctx.Request.Header.PeekBytes(lm.header); len(v) > 0 {
			key = ratelimit.Key(keyHeader, v)
		}
	}
	if key == 0 {
		a, _ := netip.AddrFromSlice(ctx.RemoteIP())
		b := a.Unmap().As16()
		key = ratelimit.Key(keyAddr, b[:])
	}
	ok, wait := lm.lim.Allow(key, now)
	if ok {
		return true
	}
	lm.limited.Inc()
	resp := &ctx.Response
	resp.SetStatusCode(fasthttp.StatusTooManyRequests)
	var buf [20]byte
	resp.Header.SetCanonical(headerRetryAfter, strconv.AppendInt(buf[:0], int64(ratelimit.RetryAfter(wait)), 10))
	resp.Header.SetContentType("application/json")
	resp.SetBodyString(rateLimitedBody)
	return false
}
