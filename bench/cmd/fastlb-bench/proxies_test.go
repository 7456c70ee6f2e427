package main

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"fastlb/testbackends"
)

// TestPeersForwardLikeFastlb checks that HAProxy and nginx, configured as
// make bench configures them, add the headers fastlb adds to every
// request, so that they do the same work per request.
func TestPeersForwardLikeFastlb(t *testing.T) {
	backend, err := testbackends.Start("127.0.0.1:0", testbackends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	_, port, _ := net.SplitHostPort(backend.Addr())

	for _, peer := range []string{"haproxy", "nginx"} {
		t.Run(peer, func(t *testing.T) {
			if !installed(peer) {
				t.Skip(peer + " is not installed (make bench-deps installs it)")
			}
			r := &runner{options: options{work: t.TempDir(), proxyCPU: -1}}
			defer r.stopAll()
			tg := r.startTarget(scenario{name: "headers"}, peer, []string{port})
			if tg.skipped != "" {
				t.Fatalf("%s did not start: %s", peer, tg.skipped)
			}

			got := echo(t, tg.addr, nil)
			for name, want := range map[string]string{
				"x-forwarded-for":   "127.0.0.1",
				"x-forwarded-proto": "http",
				"x-forwarded-host":  tg.addr,
			} {
				if v := strings.Join(got[name], ","); v != want {
					t.Errorf("%s: %q, want %q", name, v, want)
				}
			}
			if id := got["x-request-id"]; len(id) != 1 || id[0] == "" {
				t.Errorf("x-request-id: %q, want one generated id", id)
			}

			got = echo(t, tg.addr, map[string]string{"X-Request-Id": "client-id", "X-Forwarded-For": "203.0.113.9"})
			if id := strings.Join(got["x-request-id"], ","); id != "client-id" {
				t.Errorf("x-request-id sent by the client: forwarded as %q, want it kept", id)
			}
			// fastlb joins the addresses in one line, HAProxy adds a line:
			// the same list either way.
			if xff := strings.Join(got["x-forwarded-for"], ", "); xff != "203.0.113.9, 127.0.0.1" {
				t.Errorf("x-forwarded-for: %q, want the client's address appended", xff)
			}
		})
	}
}

// echo sends GET /echo with the given headers to addr and returns the
// headers the backend received, by lower-case name.
func echo(t *testing.T, addr string, headers map[string]string) map[string][]string {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Headers [][2]string `json:"headers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("echo answer: %v", err)
	}
	got := map[string][]string{}
	for _, h := range body.Headers {
		got[strings.ToLower(h[0])] = append(got[strings.ToLower(h[0])], h[1])
	}
	return got
}

// TestPeersAcceptRoutes checks that HAProxy and nginx take the routing
// scenario's configuration (a map and use_backend; server blocks) and
// answer for a routed host name and for any other.
func TestPeersAcceptRoutes(t *testing.T) {
	backend, err := testbackends.Start("127.0.0.1:0", testbackends.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	_, port, _ := net.SplitHostPort(backend.Addr())
	for _, peer := range []string{"haproxy", "nginx"} {
		t.Run(peer, func(t *testing.T) {
			if !installed(peer) {
				t.Skip(peer + " is not installed (make bench-deps installs it)")
			}
			r := &runner{options: options{work: t.TempDir(), proxyCPU: -1}}
			defer r.stopAll()
			tg := r.startTarget(scenario{name: "routes", routes: 6, pools: 3}, peer, []string{port})
			if tg.skipped != "" {
				t.Fatalf("%s did not start: %s", peer, tg.skipped)
			}
			for _, host := range []string{routeHosts(6)[4], "other.example.org"} {
				req, _ := http.NewRequest("GET", "http://"+tg.addr+"/", nil)
				req.Host = host
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("%s: %d", host, resp.StatusCode)
				}
			}
		})
	}
}
