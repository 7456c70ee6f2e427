package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"fastlb/testbackends"
)

// Rate limits and connections per client change by reload, and show in the
// configuration view and the metrics.
func TestReloadEdge(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	p := startBinary(t, "", a)
	for range 10 {
		if code, _ := get(t, "http://"+p.addr+"/"); code != 200 {
			t.Fatalf("without limits: %d", code)
		}
	}
	orig, _ := os.ReadFile(p.cfgPath)
	next := strings.Replace(string(orig), `"backends": [`, `"rate_limit": {"rate": 5, "burst": 5}, "max_conns_per_client": 2, "backends": [`, 1)
	os.WriteFile(p.cfgPath, []byte(next), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, `msg="configuration reloaded"`)
	if !strings.Contains(p.Logs(), "rate_limit") || !strings.Contains(p.Logs(), "max_conns_per_client") {
		t.Errorf("the reload does not name what it applied:\n%s", p.Logs())
	}
	codes := map[int]int{}
	for range 10 {
		code, _ := get(t, "http://"+p.addr+"/")
		codes[code]++
	}
	if codes[429] < 4 || codes[200] < 5 {
		t.Errorf("after the reload: %v", codes)
	}
	if _, view := get(t, "http://"+p.adminAddr+"/api/v1/config"); !strings.Contains(view, `"rate": 5`) || !strings.Contains(view, `"max_conns_per_client": 2`) {
		t.Errorf("config view: %s", view)
	}
	if _, m := get(t, "http://"+p.adminAddr+"/metrics"); !strings.Contains(m, `fastlb_rate_limited_total{route=""}`) {
		t.Errorf("metrics lack the rate limit:\n%s", m)
	}

	// Two connections held open: a third is closed without an answer.
	// The client's kept connections go; the bucket refills meanwhile.
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(time.Second)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range 3 {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if i < 2 && (err != nil || resp.StatusCode != 200) {
			t.Fatalf("connection %d: %v", i, err)
		}
		if i == 2 && err == nil {
			t.Errorf("a third connection was served: %d", resp.StatusCode)
		}
	}
	if _, m := get(t, "http://"+p.adminAddr+"/metrics"); !strings.Contains(m, `fastlb_client_conns_refused_total{reason="max_conns_per_client"} 1`) {
		t.Errorf("refusal not counted")
	}
}
