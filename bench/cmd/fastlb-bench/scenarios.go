package main

// The scenarios, and the loads that are not the load generator's: idle
// connections and admin churn.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"fastlb/bench/loadgen"
)

// scenario is one kind of load, meant the same for every target.
type scenario struct {
	name     string
	quick    bool          // part of -quick
	backends int           // test backends, 2 by default
	latency  time.Duration // backend answer delay
	size     int           // backend body size
	load     loadgen.Config
	fastlb   string // extra fastlb configuration keys
	haproxy  string // HAProxy backend lines ("balance roundrobin" when empty)
	nginx    string // nginx upstream lines ("" for round-robin); "-" when nginx has no equivalent
	https    bool
	// h2 loads the target with h2load over HTTP/2 (TLS, ALPN h2): 10
	// connections of 10 concurrent streams each.
	h2    bool
	churn bool // backends added and removed during the run: fastlb's admin API, HAProxy's runtime API
	idle  int  // idle keep-alive connections to hold instead of load
	burst bool // the idle connections send their requests at once, not one after another
	// routes, when not 0, sends each of as many host names to one of
	// pools pools of the backends: fastlb's routes, HAProxy's map and
	// use_backend, nginx's server blocks.
	routes, pools int
}

// routeHosts are the host names of the routing scenarios, which the load
// generator sends in turn.
func routeHosts(n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("svc%d.example.com", i)
	}
	return hosts
}

func scenarios() []scenario {
	small := loadgen.Config{Conns: 64, KeepAlive: true}
	return []scenario{
		{name: "small-get", quick: true, load: small},
		// The same requests at fixed rates below saturation, where no
		// CPU of this machine is the limit: requests/s is the same for
		// every target, and CPU per request and latency tell them apart.
		{name: "small-get-6k-rps", load: loadgen.Config{Conns: 64, KeepAlive: true, Rate: 6000}},
		{name: "small-get-12k-rps", load: loadgen.Config{Conns: 64, KeepAlive: true, Rate: 12000}},
		{name: "64k-response", size: 64 << 10, load: small},
		{name: "16k-post", load: loadgen.Config{Conns: 64, KeepAlive: true, Method: "POST", BodySize: 16 << 10}},
		{name: "new-conn", quick: true, load: loadgen.Config{Conns: 16}},
		{name: "2000-conns-20ms", latency: 20 * time.Millisecond, load: loadgen.Config{Conns: 2000, KeepAlive: true}},
		// Each connection pauses 250 ms between requests: every request
		// wakes an idle connection (fastlb parks them after 100 ms).
		{name: "2000-paused-conns", load: loadgen.Config{Conns: 2000, KeepAlive: true, Rate: 8000}},
		// Bursts of 1, 2, 3 and 4 requests in turn, each connection
		// pausing about 600 ms between them: the price of parking
		// connections at once after long pauses (see quietWaits in
		// proxy) for clients whose pauses are not all long.
		{name: "2000-bursty-conns", load: loadgen.Config{Conns: 2000, KeepAlive: true, Rate: 8000, Bursts: []int{1, 2, 3, 4}}},
		{name: "100-backends", backends: 100, load: small},
		{name: "least-conn", load: small, fastlb: `"strategy": "least-conn"`, haproxy: "balance leastconn", nginx: "least_conn;"},
		{name: "random-two", load: small, fastlb: `"strategy": "random-two"`, haproxy: "balance random(2)", nginx: "random two least_conn;"},
		{name: "sticky-ip", load: small, fastlb: `"sticky": {"mode": "ip"}`, haproxy: "balance source\n    hash-type consistent", nginx: "hash $remote_addr consistent;"},
		{name: "sticky-cookie", load: loadgen.Config{Conns: 64, KeepAlive: true, CookieJar: true}, fastlb: `"sticky": {"mode": "cookie"}`,
			haproxy: "balance roundrobin\n    cookie fastlb insert indirect nocache", nginx: "-"},
		// small-get under a rate limit by client address set too high to
		// refuse anything: what the check costs. All requests come from
		// one address, so all take the same key (HAProxy: a stick table
		// and track-sc0; nginx's limit_req has no such high rate).
		{name: "small-get-rate-limit", load: small, fastlb: `"rate_limit": {"rate": 1000000000, "burst": 1000000000}`,
			haproxy: "balance roundrobin\n    stick-table type ip size 100k expire 30s store http_req_rate(1s)\n    http-request track-sc0 src\n    http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1000000000 }",
			nginx:   "-"},
		{name: "https", quick: true, https: true, load: small},
		{name: "h2", https: true, h2: true},
		{name: "admin-churn", load: small, churn: true, nginx: "-"},
		// 1,000 host names in turn: with no routes (every proxy's one
		// backend set), and with a route for each to one of 50 pools.
		{name: "routes-0", load: loadgen.Config{Conns: 64, KeepAlive: true, Hosts: routeHosts(1000)}},
		{name: "routes-1000", load: loadgen.Config{Conns: 64, KeepAlive: true, Hosts: routeHosts(1000)}, routes: 1000, pools: 50},
		{name: "idle-10k-conns", idle: 10000},
		// 5,000 connections that send their one request at once, so that
		// all are being served together, and then stay open idle: the
		// memory a burst leaves behind, 2 s after it.
		{name: "burst-5k-conns", idle: 5000, burst: true},
	}
}

// idleConns opens sc.idle keep-alive connections, each making one request,
// and reports the proxy's RSS growth per connection once they are idle:
// 1 s after the last answer, or 2 s after a burst. Without a burst each
// connection sends its request once the one before it was answered; with
// one, all are open before any sends, all send before any answer is read,
// so that the proxy serves them all at once. The proxy first serves a few
// requests on connections it then closes, so that what it sets up once,
// the code it pages in and its first buffers, is not counted against the
// connections.
func (r *runner) idleConns(sc scenario, pid int, addr string) Result {
	warm := make([]byte, 4096)
	for range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		for range 25 {
			if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")); err != nil {
				break
			}
			if _, err := c.Read(warm); err != nil {
				break
			}
		}
		c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	before := memKiB(pid, "VmRSS")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	buf := make([]byte, 4096)
	errors := 0
	answer := func(c net.Conn) {
		if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			errors++
		}
	}
	for range sc.idle {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			errors++
			continue
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if sc.burst {
			continue
		}
		if _, err := c.Write(req); err != nil {
			errors++
			continue
		}
		answer(c)
	}
	settle := time.Second
	if sc.burst {
		sent := conns[:0:0]
		for _, c := range conns {
			if _, err := c.Write(req); err != nil {
				errors++
				continue
			}
			sent = append(sent, c)
		}
		for _, c := range sent {
			answer(c)
		}
		settle = 2 * time.Second
	}
	time.Sleep(settle)
	after := memKiB(pid, "VmRSS")
	return Result{Requests: int64(len(conns)), Errors: int64(errors), PeakRSSMiB: memKiB(pid, "VmHWM") / 1024,
		KiBPerConn: (after - before) / float64(max(len(conns), 1))}
}

// churn adds, re-weights, drains and removes a backend through the admin
// API of the fastlb on port until stop is closed, and returns how many changes it made.
func churn(port int, ports []string, stop <-chan struct{}) int {
	admin := fmt.Sprintf("http://127.0.0.1:%d/api/v1/backends", port)
	n := 0
	do := func(method, url, body string) {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			n++
		}
	}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return n
		default:
		}
		do("POST", admin, fmt.Sprintf(`{"url": "http://127.0.0.1:%s", "id": "churn"}`, ports[i%len(ports)]))
		do("PATCH", admin+"/churn", `{"weight": 3}`)
		do("PATCH", admin+"/churn", `{"state": "drain"}`)
		do("DELETE", admin+"/churn", "")
		time.Sleep(10 * time.Millisecond)
	}
}

// churnHAProxy makes the same changes as churn through HAProxy's runtime
// API until stop is closed, and returns how many commands it sent: six a
// turn to fastlb's four calls, since HAProxy creates a server in
// maintenance and deletes one only in maintenance and once its idle
// connections have closed. Each server purges them after 10 ms; a deletion
// refused is tried again on the next turn.
func churnHAProxy(socket string, ports []string, stop <-chan struct{}) int {
	n := 0
	do := func(cmd string) string {
		c, err := net.Dial("unix", socket)
		if err != nil {
			return ""
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, cmd+"\n"); err != nil {
			return ""
		}
		out, err := io.ReadAll(c)
		if err != nil {
			return ""
		}
		n++
		return string(out)
	}
	var removing []string
	for i := 0; ; i++ {
		select {
		case <-stop:
			return n
		default:
		}
		srv := fmt.Sprintf("be/churn%d", i)
		do(fmt.Sprintf("add server %s 127.0.0.1:%s pool-purge-delay 10ms", srv, ports[i%len(ports)]))
		do("enable server " + srv)
		do("set server " + srv + " weight 3")
		do("set server " + srv + " state drain")
		do("set server " + srv + " state maint")
		removing = append(removing, srv)
		left := removing[:0]
		for _, s := range removing {
			if !strings.Contains(do("del server "+s), "deleted") {
				left = append(left, s)
			}
		}
		removing = left
		time.Sleep(10 * time.Millisecond)
	}
}
