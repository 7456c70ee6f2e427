package config

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
)

// everyKey sets every key of the file to a value other than its default.
const everyKey = `{
  "port": 9080, "bind": "127.0.0.1", "admin_port": 9081, "admin_bind": "127.0.0.2",
  "admin_token": "tok-0123456789", "admin_token_file": "", "admin_persist": true,
  "strategy": "least-conn",
  "backend_timeout": "11s", "connect_timeout": "3s",
  "client_read_timeout": "31s", "client_idle_timeout": "121s", "park_idle_after": "0s",
  "shutdown_timeout": "32s", "queue_timeout": "2s",
  "retries": 3, "max_client_conns": 1000,
  "max_header_bytes": "8KiB", "max_request_body": "1MiB",
  "health_check_frequency": "5s", "health_check_method": "http",
  "health_check": {"path": "/ready", "expect_status": "200,204", "timeout": "1s", "rise": 3, "fall": 4},
  "sticky": {"mode": "cookie", "cookie": "lb", "cookie_insert": false, "cookie_max_age": "1h",
             "cookie_secret": "0123456789abcdefXYZ", "header": "X-User", "balance_factor": 1.25,
             "trusted_proxies": ["10.0.0.0/8"]},
  "tls": {"port": 9443, "bind": "127.0.0.1", "certificates": [{"cert_file": "/c.pem", "key_file": "/k.pem"}],
          "min_version": "1.3", "redirect_http": true, "http2": false},
  "backend_tls": {"ca_file": "/ca.pem", "insecure_skip_verify": true},
  "outlier": {"consecutive_5xx": 7, "consecutive_gateway_errors": 0, "interval": "20s", "base_ejection_time": "1m",
              "max_ejection_percent": 34},
  "slow_start": "6s",
  "log_level": "debug", "access_log": "stderr",
  "proxy_protocol": {"accept": true, "trusted": ["10.0.0.0/8", "2001:db8::/32"], "timeout": "5s"},
  "rate_limit": {"key": "header:x-user", "rate": 2.5, "burst": 10, "max_keys": 5000},
  "max_conns_per_client": 20, "send_proxy_protocol": "v2",
  "cluster": {"name": "lb-1", "cache_file": "/var/lib/fastlb/cache.json",
              "etcd": {"endpoints": ["http://10.0.0.5:2379", "https://10.0.0.6:2379"], "prefix": "/lb/", "dial_timeout": "5s",
                       "username": "", "password_file": "", "ca_file": "", "cert_file": "", "key_file": ""}},
  "backends": ["http://a:1", {"url": "http://b:2", "weight": 3, "id": "big", "max_conns": 5, "state": "drain"}],
  "pools": {"api": {"strategy": "random-two", "backends": ["http://c:3"], "health_check": {"path": "/up"},
                    "sticky": {"mode": "header", "header": "X-U"}}},
  "routes": [
    {"name": "api", "host": "API.example.com", "path_prefix": "/v1/", "pool": "api", "strip_prefix": true,
     "set_request_headers": {"x-b": "1", "X-A": "2"}, "remove_request_headers": ["x-debug"],
     "set_response_headers": {"Strict-Transport-Security": "max-age=1"}, "rate_limit": {"key": "ip", "rate": 100}},
    {"host": "*.shop.example", "pool": "default"}
  ]
}`

// TestViewRoundTrip: the configuration view holds every key of Keys, and
// decoding it gives the same configuration, so no key can be decoded and
// left out of the view, or shown other than it is in force.
func TestViewRoundTrip(t *testing.T) {
	want, err := Parse([]byte(everyKey))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	json.Unmarshal([]byte(everyKey), &top)
	view := View(want)
	for key := range top {
		if _, ok := view[key]; !ok {
			t.Errorf("the view lacks %q", key)
		}
	}
	if len(view) != len(Keys) {
		t.Errorf("the view has %d keys, Keys %d", len(view), len(Keys))
	}
	if view["admin_token"] != Redacted || view["sticky"].(map[string]any)["cookie_secret"] != Redacted {
		t.Errorf("secrets not redacted: %v, %v", view["admin_token"], view["sticky"])
	}
	// The secrets back in place of their redaction, the view decodes to
	// what was in force.
	view["admin_token"] = want.AdminToken
	view["sticky"].(map[string]any)["cookie_secret"] = want.Sticky.CookieSecret
	view["pools"].(map[string]any)["api"].(map[string]any)["sticky"].(map[string]any)["cookie_secret"] = want.Sticky.CookieSecret
	data, err := json.Marshal(view)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatalf("the view does not decode: %v\n%s", err, data)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the view decodes to\n%+v\nwant\n%+v", got, want)
	}

	// Without tls, the view says null, and that is not a key to decode.
	plain, _ := Parse([]byte(`{"backends": []}`))
	if v := View(plain); v["tls"] != nil || v["backend_tls"] == nil {
		t.Errorf("tls %v, backend_tls %v", v["tls"], v["backend_tls"])
	}
}

// TestKeysSameAndKeep: each key's Same sees a change of its own value and
// no other, and Keep puts the old value back.
func TestKeysSameAndKeep(t *testing.T) {
	changed, _ := Parse([]byte(everyKey))
	changed.AdminTokenFile = "/token" // a file -check would read
	for _, k := range Keys {
		base := Defaults()
		base.Backends = []Backend{}
		if !k.Same(base, base) {
			t.Errorf("%s: a configuration differs from itself", k.Name)
		}
		next := Defaults()
		next.Backends = []Backend{}
		k.Keep(next, changed)
		if k.Same(base, next) {
			t.Errorf("%s: Same misses a change of its value", k.Name)
		}
		for _, other := range Keys {
			if other.Name != k.Name && !other.Same(base, next) {
				t.Errorf("%s: changing it changes %s too", k.Name, other.Name)
			}
		}
		k.Keep(next, base)
		if !k.Same(base, next) {
			t.Errorf("%s: Keep did not put the value back", k.Name)
		}
	}
}

// Every key of the file is in the README's configuration table, where an
// operator looks for it.
func TestEveryKeyDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys {
		if !strings.Contains(string(readme), "| `"+k.Name+"` |") && !strings.Contains(string(readme), "| `"+k.Name+".") {
			t.Errorf("key %q is not in the README's configuration table", k.Name)
		}
	}
}
