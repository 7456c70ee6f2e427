package testbackends

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Load sends GET requests to one URL from several goroutines, as fast as
// they are answered, until Stop. Tests use it to check that something (a
// reload, an upgrade, backends dying) costs no request.
type Load struct {
	sent, failed atomic.Int64
	first        atomic.Value
	stop         chan struct{}
	wg           sync.WaitGroup
	client       *http.Client
}

// StartLoad starts clients goroutines sending GET url.
func StartLoad(url string, clients int) *Load {
	l := &Load{
		stop:   make(chan struct{}),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}, Timeout: 10 * time.Second},
	}
	for range clients {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				l.sent.Add(1)
				if err := l.get(url); err != nil {
					l.failed.Add(1)
					l.first.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	return l
}

func (l *Load) get(url string) error {
	resp, err := l.client.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
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
