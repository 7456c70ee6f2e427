package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	json "github.com/goccy/go-json"

	"fastlb/cluster/etcdtest"
	"fastlb/testbackends"
)

// browser is a headless Chromium tab that records what the page does
// beside what a test asks of it: every request it sends, and every
// script error.
type browser struct {
	ctx      context.Context
	mu       sync.Mutex
	requests []string
	errors   []string
}

// newBrowser starts Debian's chromium (chromedp finds it on PATH; as root
// it adds --no-sandbox). A missing browser fails the test: .ci/run
// installs it.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.WindowSize(1280, 1000))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{}
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(b.record))
	ctx, cancelTime := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	b.ctx = ctx
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("cannot start Chromium (Debian: apt-get install chromium; .ci/run installs it): %v", err)
	}
	return b
}

// record runs on chromedp's reader for every event of the tab: it only
// notes what it needs.
func (b *browser) record(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request.URL)
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		b.errors = append(b.errors, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, msg))
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value))
			}
			b.errors = append(b.errors, "console.error: "+strings.Join(args, " "))
		}
	case *log.EventEntryAdded:
		// The browser logs every 4xx answer to fetch. The 401s that ask
		// for the token, the 400 of a refused weight and the 404 that
		// says fastlb is not in a fleet are the page at work.
		e := ev.Entry
		if e.Level == log.EntryLevelError && !strings.Contains(e.Text, "status of 401") && !strings.Contains(e.Text, "status of 400") &&
			!(strings.Contains(e.Text, "status of 404") && strings.HasSuffix(e.URL, "/api/v1/cluster")) {
			b.errors = append(b.errors, "log: "+e.Text+" "+e.URL)
		}
	}
}

func (b *browser) run(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		t.Fatalf("%s: %v\nscript errors: %v", what, err, b.scriptErrors())
	}
}

// wait polls a JavaScript expression until it is true.
func (b *browser) wait(t *testing.T, what, expr string, d time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		t.Fatalf("%s: %v\nscript errors: %v", what, err, b.scriptErrors())
	}
}

// eval returns the value of a JavaScript expression.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func (b *browser) scriptErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// checkOrigin fails for any request the page sent beyond origin.
func (b *browser) checkOrigin(t *testing.T, origin string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.requests) == 0 {
		t.Error("no request recorded")
	}
	for _, u := range b.requests {
		if !strings.HasPrefix(u, origin+"/") && !strings.HasPrefix(u, "data:") {
			t.Errorf("the page requested %s, outside %s", u, origin)
		}
	}
}

// adminJSON GETs path from the admin API with the token and decodes it.
func adminJSON(t *testing.T, p *process, token, path string, out any) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.adminAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

// waitBackend waits until the API shows backend id of pool with cond.
func waitBackend(t *testing.T, p *process, token, pool, id, what string, cond func(map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var b map[string]any
		adminJSON(t, p, token, "/api/v1/pools/"+pool+"/backends/"+url.PathEscape(id), &b)
		if cond(b) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %s/%s: not %s: %v", pool, id, what, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDashboard drives the admin page in a real browser: the token prompt,
// two pools with live numbers and charts, the controls, errors shown,
// nothing fetched from elsewhere, no script error, a phone's width.
func TestDashboard(t *testing.T) {
	var bs []*testbackends.Server
	for _, name := range []string{"a", "b", "c"} {
		s, err := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		bs = append(bs, s)
	}
	const token = "dashboard-token"
	p := startBinary(t, fmt.Sprintf(`, "admin_token": %q, "health_check_frequency": "200ms",
	  "pools": {"api": {"backends": [{"url": %q, "id": "c"}], "strategy": "least-conn"}},
	  "routes": [{"host": "api.example", "pool": "api"}]`, token, bs[2].URL()), bs[0], bs[1])
	// The default pool's backends are known by their address.
	idA, idB := strings.TrimPrefix(bs[0].URL(), "http://"), strings.TrimPrefix(bs[1].URL(), "http://")
	row := func(id string) string { return fmt.Sprintf(`tr[data-backend-id=%q]`, id) }

	// Load on both pools while the page is open.
	stop := make(chan struct{})
	var load sync.WaitGroup
	for _, host := range []string{"www.example", "api.example"} {
		load.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+p.addr+"/", nil)
				req.Host = host
				if resp, err := http.DefaultClient.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				time.Sleep(3 * time.Millisecond)
			}
		})
	}
	defer func() { close(stop); load.Wait() }()

	br := newBrowser(t)
	origin := "http://" + p.adminAddr
	br.run(t, "open the page", chromedp.Navigate(origin+"/"))

	// The token: asked for, a wrong one refused, the right one kept.
	br.run(t, "token prompt", chromedp.WaitVisible(chromedp.CSS(`input[data-action="token"]`)))
	br.run(t, "wrong token", chromedp.SendKeys(chromedp.CSS(`input[data-action="token"]`), "wrong\r"))
	br.wait(t, "the wrong token refused", `document.getElementById('token-label').textContent.includes('refused') &&
		!document.getElementById('token-form').hidden`, 5*time.Second)
	br.run(t, "right token", chromedp.SendKeys(chromedp.CSS(`input[data-action="token"]`), token+"\r"))
	br.wait(t, "the backends of two pools", `document.querySelectorAll('tr[data-backend-id][data-pool="default"]').length === 2 &&
		document.querySelectorAll('tr[data-backend-id="c"][data-pool="api"]').length === 1`, 10*time.Second)
	stored := eval[string](t, br, `sessionStorage.getItem('fastlb.token')`)
	if stored != token {
		t.Errorf("sessionStorage holds %q, want the token", stored)
	}

	// Live numbers, and charts that move.
	liveRPS := func(pool string) string {
		return fmt.Sprintf(`[...document.querySelectorAll('tr[data-pool=%q] td[data-label="Req/s"]')].some(td => Number(td.textContent) > 0)`, pool)
	}
	br.wait(t, "requests/s of the default pool", liveRPS("default"), 10*time.Second)
	br.wait(t, "requests/s of the api pool", liveRPS("api"), 10*time.Second)
	br.wait(t, "p99 of a", fmt.Sprintf(`Number(document.querySelector('%s td[data-label="p99 ms"]').textContent) > 0`, row(idA)), 5*time.Second)
	points := func(chart, pool string) string {
		return eval[string](t, br, fmt.Sprintf(`[...document.querySelectorAll('svg[data-chart=%q][data-pool=%q] polyline')].map(l => l.getAttribute('points')).join('|')`, chart, pool))
	}
	rps0, lat0 := points("rps", "api"), points("latency", "default")
	if strings.Count(rps0, ",") < 1 || strings.Count(lat0, ",") < 2 {
		t.Errorf("charts hold no line: rps %q latency %q", rps0, lat0)
	}
	br.wait(t, "the charts change", fmt.Sprintf(`[...document.querySelectorAll('svg[data-chart="rps"][data-pool="api"] polyline')].map(l => l.getAttribute('points')).join('|') !== %q &&
		[...document.querySelectorAll('svg[data-chart="latency"][data-pool="default"] polyline')].map(l => l.getAttribute('points')).join('|') !== %q`, rps0, lat0), 8*time.Second)

	// Drain a, checked through the API; its button shows the state.
	br.run(t, "click drain", chromedp.Click(chromedp.CSS(row(idA)+` button[data-action="drain"]`)))
	waitBackend(t, p, token, "default", idA, "draining", func(b map[string]any) bool { return b["state"] == "drain" })
	br.wait(t, "drain shown", fmt.Sprintf(`document.querySelector('%s button[data-action="drain"]').getAttribute('aria-pressed') === 'true'`, row(idA)), 5*time.Second)

	// Maintenance and back for c, in the other pool.
	br.run(t, "click maint", chromedp.Click(chromedp.CSS(`tr[data-backend-id="c"] button[data-action="maint"]`)))
	waitBackend(t, p, token, "api", "c", "in maintenance", func(b map[string]any) bool { return b["state"] == "maint" })
	br.run(t, "click activate", chromedp.Click(chromedp.CSS(`tr[data-backend-id="c"] button[data-action="activate"]`)))
	waitBackend(t, p, token, "api", "c", "active", func(b map[string]any) bool { return b["state"] == "active" })

	// A weight, entered.
	weight := row(idB) + ` input[data-action="weight"]`
	br.run(t, "enter a weight", chromedp.SetValue(chromedp.CSS(weight), ""), chromedp.SendKeys(chromedp.CSS(weight), "7\r"))
	waitBackend(t, p, token, "default", idB, "weight 7", func(b map[string]any) bool { return b["weight"] == float64(7) })

	// An error from the API is shown with its message.
	br.run(t, "enter a weight out of range", chromedp.SetValue(chromedp.CSS(weight), ""), chromedp.SendKeys(chromedp.CSS(weight), "5000\r"))
	br.wait(t, "the API's error shown", `!document.getElementById('error').hidden &&
		document.getElementById('error-text').textContent.includes('weight') &&
		document.getElementById('error-text').textContent.includes('400')`, 5*time.Second)
	waitBackend(t, p, token, "default", idB, "still weight 7", func(b map[string]any) bool { return b["weight"] == float64(7) })
	br.run(t, "dismiss", chromedp.Click(chromedp.CSS(`#error-close`)))
	br.run(t, "activate a", chromedp.Click(chromedp.CSS(row(idA)+` button[data-action="activate"]`)))
	waitBackend(t, p, token, "default", idA, "active", func(b map[string]any) bool { return b["state"] == "active" })

	if dir := os.Getenv("FASTLB_SCREENSHOTS"); dir != "" {
		br.wait(t, "a quiet page", `document.getElementById('error').hidden && document.getElementById('notice').hidden`, 6*time.Second)
		png, err := chromedp.Run(br.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "dashboard-desktop.png"), png, 0o644)
	}

	// A phone's width: no horizontal scrolling.
	br.run(t, "phone width", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	br.wait(t, "laid out at 390 px", `window.innerWidth === 390`, 5*time.Second)
	overflow := eval[[]string](t, br, `[document.documentElement.scrollWidth, window.innerWidth, ...[...document.querySelectorAll('body *')]
		.filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5).map(e => e.tagName + '.' + e.className)].map(String)`)
	if overflow[0] != "390" || len(overflow) > 2 {
		t.Errorf("at 390 px: scroll width %s, elements past the right edge: %v", overflow[0], overflow[2:])
	}
	if dir := os.Getenv("FASTLB_SCREENSHOTS"); dir != "" {
		png, err := chromedp.Run(br.ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "dashboard-phone.png"), png, 0o644)
	}

	if errs := br.scriptErrors(); len(errs) > 0 {
		t.Errorf("script errors: %v", errs)
	}
	br.checkOrigin(t, origin)
}

// TestDashboardFleet: in a fleet the page lists the members, and the API
// describes them as its document says.
func TestDashboardFleet(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	etcd := etcdtest.Start(t)
	var procs []*process
	for _, name := range []string{"lb-1", "lb-2"} {
		procs = append(procs, startBinary(t, fmt.Sprintf(`, "cluster": {"name": %q, "cache_file": %q, "etcd": {"endpoints": [%q]}}`,
			name, filepath.Join(t.TempDir(), "cache.json"), etcd.URL), a))
	}
	d := loadAPIDoc(t, procs[1], "")
	if status, body := d.call(t, "GET", "/api/v1/cluster", "", false); status != 200 {
		t.Errorf("GET /api/v1/cluster: %d %s", status, body)
	}
	br := newBrowser(t)
	origin := "http://" + procs[1].adminAddr
	br.run(t, "open the page", chromedp.Navigate(origin+"/"))
	br.wait(t, "both members listed", `!document.getElementById('cluster').hidden &&
		document.querySelectorAll('tr[data-member="lb-1"]').length === 1 && document.querySelectorAll('tr[data-member="lb-2"]').length === 1 &&
		document.getElementById('cluster-self').textContent.includes('lb-2')`, 15*time.Second)
	if errs := br.scriptErrors(); len(errs) > 0 {
		t.Errorf("script errors: %v", errs)
	}
	br.checkOrigin(t, origin)
}
