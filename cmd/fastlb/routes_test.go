package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"

	"fastlb/testbackends"
)

// getHost sends a GET with the given Host and returns the status and the
// answering backend's body.
func getHost(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A reload puts new pools and routes in force at once; pools that stay
// keep their backends' counters; a pool dropped stops taking requests.
func TestReloadPoolsAndRoutes(t *testing.T) {
	var bs []*testbackends.Server
	for _, name := range []string{"web", "api", "shop"} {
		s, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: name})
		defer s.Close()
		bs = append(bs, s)
	}
	web, api, shop := bs[0], bs[1], bs[2]
	p := startBinary(t, fmt.Sprintf(`, "pools": {"api": {"backends": [%q]}},
	  "routes": [{"host": "api.example.com", "pool": "api"}]`, api.URL()), web)
	if !strings.Contains(p.Logs(), `pools="api(1/1 healthy)" routes=1`) {
		t.Errorf("startup line does not name the pools:\n%s", p.Logs())
	}
	proxyURL := "http://" + p.addr + "/"
	for range 3 {
		if code, body := getHost(t, proxyURL, "api.example.com"); code != 200 || body != "backend api\n" {
			t.Fatalf("before reload: %d %q", code, body)
		}
	}
	if _, body := getHost(t, proxyURL, "shop.example.com"); body != "backend web\n" {
		t.Fatalf("no route: %q", body)
	}

	// The API pool moves under a wildcard; a shop pool appears.
	orig, _ := os.ReadFile(p.cfgPath)
	next := strings.Replace(string(orig), `"routes": [{"host": "api.example.com", "pool": "api"}]`,
		`"routes": [{"host": "*.example.com", "pool": "api"}, {"host": "shop.example.com", "pool": "shop"}]`, 1)
	next = strings.Replace(next, `"pools": {`, fmt.Sprintf(`"pools": {"shop": {"backends": [%q]}, `, shop.URL()), 1)
	os.WriteFile(p.cfgPath, []byte(next), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, `msg="configuration reloaded"`)
	waitLog(t, p, `msg="pool reloaded" pool=shop added=[`)
	for host, want := range map[string]string{"shop.example.com": "shop", "api.example.com": "api", "x.example.com": "api", "example.com": "web"} {
		if code, body := getHost(t, proxyURL, host); code != 200 || body != "backend "+want+"\n" {
			t.Errorf("%s after reload: %d %q, want %s", host, code, body, want)
		}
	}
	code, body := get(t, "http://"+p.adminAddr+"/api/v1/pools/api/backends/"+api.Addr())
	if code != 200 || !strings.Contains(body, `"requests_total": 5`) {
		t.Errorf("api's backend lost its counters over the reload: %d %s", code, body)
	}
	if _, metrics := get(t, "http://"+p.adminAddr+"/metrics"); !strings.Contains(metrics, fmt.Sprintf(`fastlb_requests_total{pool="shop",backend=%q,code="200"} 1`, shop.Addr())) {
		t.Errorf("no per-pool series:\n%s", metrics)
	}

	// The shop pool and its route go; an API reload says so.
	os.WriteFile(p.cfgPath, orig, 0o600)
	resp, err := http.Post("http://"+p.adminAddr+"/api/v1/reload", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(out), `"shop": {`) || !strings.Contains(string(out), `"routes"`) {
		t.Errorf("API reload: %d %s", resp.StatusCode, out)
	}
	if _, body := getHost(t, proxyURL, "shop.example.com"); body != "backend web\n" {
		t.Errorf("a dropped pool still takes requests: %q", body)
	}
	if code, _ := get(t, "http://"+p.adminAddr+"/api/v1/pools/shop"); code != 404 {
		t.Errorf("a dropped pool in the API: %d", code)
	}

	// A route to a pool that does not exist is refused, naming it.
	bad := strings.Replace(string(orig), `"pool": "api"}]`, `"pool": "apl"}]`, 1)
	os.WriteFile(p.cfgPath, []byte(bad), 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, `routes[0].pool: no pool \"apl\"`)
	if _, body := getHost(t, proxyURL, "api.example.com"); body != "backend api\n" {
		t.Errorf("after a refused reload: %q", body)
	}
}
