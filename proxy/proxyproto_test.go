package proxy

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"fastlb/config"
	"fastlb/testbackends"
	"fastlb/tlsconf"
)

// A client's address comes in with a PROXY protocol header from the
// balancer in front, and goes out in one to backends that parse them (v1
// and v2, plain and TLS); their HTTP health checks pass with LOCAL/UNKNOWN
// headers; and no backend connection carries two clients' requests.
func TestProxyProtocolThrough(t *testing.T) {
	pair := selfSignedPair(t)
	var urls []string
	var backends []*testbackends.Server
	for _, o := range []testbackends.Options{{Name: "v1"}, {Name: "v2"}, {Name: "v2tls", TLS: &pair}} {
		o.ProxyProtocol = true
		s, err := testbackends.Start("127.0.0.1:0", o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		backends = append(backends, s)
		urls = append(urls, s.URL())
	}
	h := &harness{t: t, logs: &syncBuffer{}, access: &syncBuffer{}, backends: backends}
	js := `{"port": 1, "admin_port": 2, "backends": [],
	  "proxy_protocol": {"accept": true, "trusted": ["127.0.0.0/8"]},
	  "backend_tls": {"insecure_skip_verify": true},
	  "health_check_method": "http", "health_check": {"path": "/health", "rise": 1, "fall": 1},
	  "pools": {"v1": {"send_proxy_protocol": "v1", "backends": ["` + urls[0] + `"]},
	            "v2": {"send_proxy_protocol": "v2", "backends": ["` + urls[1] + `"]},
	            "tls": {"send_proxy_protocol": "v2", "backends": ["` + urls[2] + `"]}},
	  "routes": [{"path_prefix": "/v1/", "pool": "v1", "strip_prefix": true},
	             {"path_prefix": "/v2/", "pool": "v2", "strip_prefix": true},
	             {"path_prefix": "/tls/", "pool": "tls", "strip_prefix": true}]}`
	cfg, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	h.start(cfg)
	for name, up := range h.pools {
		for _, b := range up.Snapshot().All {
			if !b.Healthy() {
				t.Errorf("pool %s: the HTTP health check of a PROXY protocol backend failed: %+v", name, b.LastCheck())
			}
		}
	}
	for _, prefix := range []string{"/v1/", "/v2/", "/tls/"} {
		for i, client := range []string{"203.0.113.7:4000", "[2001:db8::7]:4001"} {
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			hdr := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(client)), c.LocalAddr())
			hdr.WriteTo(c)
			// Two requests on the client's connection: each reaches the
			// backend on a connection naming this client.
			for range 2 {
				c.Write([]byte("GET " + prefix + "echo HTTP/1.1\r\nHost: h\r\n\r\n"))
				var e testbackends.Echo
				body := readBody(t, c)
				if err := json.Unmarshal([]byte(body), &e); err != nil {
					t.Fatalf("%s: %q: %v", prefix, body, err)
				}
				ip := netip.MustParseAddrPort(client).Addr().String()
				if seen, err := netip.ParseAddrPort(e.Client); err != nil || seen.Addr().Unmap().String() != ip {
					t.Errorf("%s client %d: the backend saw %q, want %s", prefix, i, e.Client, ip)
				}
				var xff string
				for _, kv := range e.Headers {
					if kv[0] == "X-Forwarded-For" {
						xff = kv[1]
					}
				}
				if xff != ip {
					t.Errorf("%s: X-Forwarded-For %q, want %s", prefix, xff, ip)
				}
			}
			c.Close()
		}
	}
}

// readBody reads one HTTP/1.1 answer with a Content-Length from c and
// returns its body.
func readBody(t *testing.T, c net.Conn) string {
	t.Helper()
	var buf []byte
	tmp := make([]byte, 4096)
	for {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if head, body, ok := strings.Cut(string(buf), "\r\n\r\n"); ok {
			var cl int
			for _, line := range strings.Split(head, "\r\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
					cl, _ = strconv.Atoi(strings.TrimSpace(v))
				}
			}
			if len(body) >= cl {
				return body[:cl]
			}
		}
		if err != nil {
			t.Fatalf("reading the answer: %v (%q)", err, buf)
		}
	}
}

// selfSignedPair is a certificate for 127.0.0.1 from a CA of its own.
func selfSignedPair(t *testing.T) tls.Certificate {
	t.Helper()
	ca, err := tlsconf.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.Issue([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}
