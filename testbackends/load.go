package testbackends

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Load sends GET requests to one URL from several goroutines, as fast as
// they are answered, until Stop. Tests use it to check that something (a
// reload, an upgrade, backends dying) costs no request.
//
// Like wrk, and unlike Go's net/http client, it never sends a request
// again: a keep-alive connection that the server closes while a request
// is on its way counts as a failure, as a browser or another proxy might
// report it.
type Load struct {
	sent, failed atomic.Int64
	first        atomic.Value
	stop         chan struct{}
	wg           sync.WaitGroup
	client       *fasthttp.Client
}

// StartLoad starts clients goroutines sending GET url, each on a
// keep-alive connection of its own.
func StartLoad(url string, clients int) *Load {
	l := &Load{
		stop: make(chan struct{}),
		client: &fasthttp.Client{
			MaxConnsPerHost:           clients,
			MaxIdemponentCallAttempts: 1,
			RetryIfErr:                func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
			ReadTimeout:               10 * time.Second,
			WriteTimeout:              10 * time.Second,
			NoDefaultUserAgentHeader:  true,
			// Not fasthttp's default dialer, whose DNS cache cleaner
			// would outlive the load (tests count such goroutines).
			Dial: func(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) },
		},
	}
	for range clients {
		l.wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(url)
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				l.sent.Add(1)
				if err := l.get(req, resp); err != nil {
					l.failed.Add(1)
					l.first.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	return l
}

func (l *Load) get(req *fasthttp.Request, resp *fasthttp.Response) error {
	if err := l.client.Do(req, resp); err != nil {
		return err
	}
	if code := resp.StatusCode(); code != fasthttp.StatusOK {
		return fmt.Errorf("status %d: %q", code, resp.Body())
	}
	return nil
}

// Stop ends the load and returns how many requests were sent, how many
// failed, and the first failure.
func (l *Load) Stop() (sent, failed int64, first string) {
	close(l.stop)
	l.wg.Wait()
	l.client.CloseIdleConnections()
	if v := l.first.Load(); v != nil {
		first = v.(string)
	}
	return l.sent.Load(), l.failed.Load(), first
}
