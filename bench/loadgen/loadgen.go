// Package loadgen is fastlb's load generator, on the fasthttp client. It runs
// closed loop (each connection sends its next request as soon as the last
// one is answered) or open loop (requests at a fixed rate, each latency
// measured from the moment the request was due, so that a stall delays the
// measurement of every request scheduled behind it instead of hiding it:
// no coordinated omission). Latencies go into HDR histograms.
package loadgen

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
)

// Config describes one run.
type Config struct {
	Addr  string // host:port to connect to
	HTTPS bool   // TLS, without verifying the certificate
	Path  string // request target, "/" by default
	Host  string // Host header; Addr by default
	// Hosts, when set, are the Host headers of the requests in turn, each
	// connection starting at its own place (Host is then not used).
	Hosts     []string
	Method    string        // "GET" by default
	BodySize  int           // request body of that many bytes
	Conns     int           // concurrent connections (and, closed loop, requests in flight)
	Duration  time.Duration // how long to measure, after Warmup
	Rate      int           // requests per second in total; 0 = closed loop
	KeepAlive bool          // reuse connections; false sends Connection: close
	Headers   [][2]string   // extra request headers
	// CookieJar, when set, sends back the cookies the answers set, one jar
	// per connection (what sticky-cookie scenarios need).
	CookieJar bool
	// Bursts, open loop, has each connection send its requests in bursts
	// of these sizes in turn, each request of a burst as soon as the last
	// is answered, pausing between bursts (a browser's pattern); nil sends
	// one request at a time. Bursts start on schedule, at the rate that
	// makes Rate requests per second on average.
	Bursts []int
	// Warmup is how long to send before measuring: the answers to requests
	// due in it are neither counted nor timed (their errors are), so that
	// connecting and a cold start do not count in a short run.
	Warmup time.Duration
	// Measuring, if set, is called once as the measurement starts (when
	// the warm-up ends), from a goroutine of its own.
	Measuring func()
}

// Result is what a run measured.
type Result struct {
	Requests  int64         // answered with a 2xx or 3xx, of the requests due after the warm-up
	Errors    int64         // failed, or answered 4xx/5xx, warm-up included
	Elapsed   time.Duration // from the end of the warm-up to the last answer
	Histogram *hdrhistogram.Histogram
	FirstErr  string
}

// RPS is the rate of good answers.
func (r *Result) RPS() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// Percentile is a latency percentile (0..100).
func (r *Result) Percentile(p float64) time.Duration {
	return time.Duration(r.Histogram.ValueAtQuantile(p)) * time.Microsecond
}

// newHistogram records 1 µs to 60 s with 3 significant digits.
func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

// Run sends load as cfg says and returns what it measured.
func Run(cfg Config) (*Result, error) {
	if cfg.Conns < 1 {
		return nil, errors.New("loadgen: Conns must be at least 1")
	}
	perCycle := 0 // requests in one cycle of the bursts
	for _, n := range cfg.Bursts {
		if n < 1 {
			return nil, fmt.Errorf("loadgen: burst of %d requests", n)
		}
		perCycle += n
	}
	if len(cfg.Bursts) > 0 && cfg.Rate <= 0 {
		return nil, errors.New("loadgen: Bursts need a Rate")
	}
	if perCycle == 0 {
		cfg.Bursts, perCycle = []int{1}, 1
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Method == "" {
		cfg.Method = fasthttp.MethodGet
	}
	if cfg.Host == "" {
		cfg.Host = cfg.Addr
	}
	// Each worker has a client, so a connection of its own: in open loop
	// every connection then waits Conns/Rate between requests, where a
	// shared pool would keep a few connections busy and the rest idle.
	newClient := func() *fasthttp.HostClient {
		return &fasthttp.HostClient{
			Addr:                      cfg.Addr,
			IsTLS:                     cfg.HTTPS,
			TLSConfig:                 &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a load generator against local test certificates
			MaxConns:                  1,
			MaxConnWaitTimeout:        time.Minute,
			ReadTimeout:               time.Minute,
			WriteTimeout:              time.Minute,
			MaxIdemponentCallAttempts: 1,
			DisablePathNormalizing:    true,
			ReadBufferSize:            64 << 10,
		}
	}
	body := make([]byte, cfg.BodySize)
	for i := range body {
		body[i] = 'x'
	}
	scheme := "http://"
	if cfg.HTTPS {
		scheme = "https://"
	}
	hosts := cfg.Hosts
	if len(hosts) == 0 {
		hosts = []string{cfg.Host}
	}
	urls := make([]string, len(hosts))
	for i, h := range hosts {
		urls[i] = scheme + h + cfg.Path
	}

	var (
		mu       sync.Mutex
		total    = newHistogram()
		ok, bad  atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	start := time.Now()
	measured := start.Add(cfg.Warmup) // requests due from then on count
	end := measured.Add(cfg.Duration)
	if cfg.Measuring != nil {
		wg.Go(func() {
			time.Sleep(time.Until(measured))
			cfg.Measuring()
		})
	}
	// Open loop, a connection starts a burst every interval on average:
	// len(Bursts) of them every perCycle*Conns/Rate.
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Second * time.Duration(cfg.Conns*perCycle) / time.Duration(cfg.Rate*len(cfg.Bursts))
	}
	for w := range cfg.Conns {
		wg.Go(func() {
			client := newClient()
			defer client.CloseIdleConnections()
			h := newHistogram()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			var jar []*fasthttp.Cookie
			// Open loop: worker w owns the slots w, w+Conns, ... of a
			// schedule of one burst every interval/Conns, and starts at
			// its own place in the cycle of sizes.
			next := start.Add(time.Duration(w) * interval / time.Duration(cfg.Conns))
			burst, left := w%len(cfg.Bursts), 0 // the next burst's place; requests left of this one
			host := w * len(hosts) / cfg.Conns  // the next request's place in hosts
		send:
			for {
				var due time.Time // latency is measured from it
				now := time.Now()
				switch {
				case cfg.Rate <= 0:
					if now.After(end) {
						break send
					}
					due = now
				case left > 0: // sent as soon as the last of its burst is answered
					due = now
					left--
				default:
					if next.After(end) {
						break send
					}
					if wait := next.Sub(now); wait > 0 {
						time.Sleep(wait)
					}
					due, left = next, cfg.Bursts[burst]-1
					burst = (burst + 1) % len(cfg.Bursts)
					next = next.Add(interval)
				}
				req.Reset()
				req.SetRequestURI(urls[host])
				req.Header.SetMethod(cfg.Method)
				req.Header.SetHost(hosts[host])
				host = (host + 1) % len(hosts)
				for _, kv := range cfg.Headers {
					req.Header.Set(kv[0], kv[1])
				}
				for _, c := range jar {
					req.Header.SetCookieBytesKV(c.Key(), c.Value())
				}
				if len(body) > 0 {
					req.SetBodyRaw(body)
				}
				if !cfg.KeepAlive {
					req.SetConnectionClose()
				}
				err := client.Do(req, resp)
				lat := time.Since(due)
				switch {
				case err != nil:
					bad.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case resp.StatusCode() >= 400:
					bad.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d", resp.StatusCode()))
				default:
					if cfg.CookieJar {
						jar = keepCookies(jar, resp)
					}
					if !due.Before(measured) {
						ok.Add(1)
						h.RecordValue(max(lat.Microseconds(), 1)) //nolint:errcheck // values above 60 s are clipped
					}
				}
			}
			mu.Lock()
			total.Merge(h)
			mu.Unlock()
		})
	}
	wg.Wait()
	r := &Result{Requests: ok.Load(), Errors: bad.Load(), Elapsed: time.Since(measured), Histogram: total}
	if v := firstErr.Load(); v != nil {
		r.FirstErr = v.(string)
	}
	return r, nil
}

// keepCookies adds the cookies an answer sets to jar, replacing same names.
func keepCookies(jar []*fasthttp.Cookie, resp *fasthttp.Response) []*fasthttp.Cookie {
	for k, v := range resp.Header.Cookies() {
		c := &fasthttp.Cookie{}
		if err := c.ParseBytes(v); err != nil {
			continue
		}
		replaced := false
		for i, old := range jar {
			if string(old.Key()) == string(k) {
				jar[i], replaced = c, true
			}
		}
		if !replaced {
			jar = append(jar, c)
		}
	}
	return jar
}
