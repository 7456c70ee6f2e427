package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// seed is the original project's configuration file, byte for byte.
const seed = `{
"port": 8080,
"admin_port": 8081,
"strategy": "round-robin",
"health_check_frequency": "30s",
"backend_timeout": "10s",
"health_check_method": "tcp",
"backends": [
"http://localhost:8082",
"http://localhost:8083",
"http://localhost:8084"
]
}`

func TestSeedConfigMeansWhatItSays(t *testing.T) {
	c, err := Parse([]byte(seed))
	if err != nil {
		t.Fatalf("seed config refused: %v", err)
	}
	if c.Port != 8080 || c.AdminPort != 8081 || c.Strategy != StrategyRoundRobin ||
		c.HealthCheckFrequency != 30*time.Second || c.BackendTimeout != 10*time.Second ||
		c.HealthCheckMethod != CheckTCP {
		t.Errorf("seed values not kept: %+v", c)
	}
	if len(c.Backends) != 3 {
		t.Fatalf("want 3 backends, got %d", len(c.Backends))
	}
	for i, port := range []string{"8082", "8083", "8084"} {
		b := c.Backends[i]
		want := Backend{URL: "http://localhost:" + port, Weight: 1, ID: "localhost:" + port, State: StateActive,
			Scheme: "http", Host: "localhost", Addr: "localhost:" + port}
		if b != want {
			t.Errorf("backends[%d] = %+v, want %+v", i, b, want)
		}
	}
}

func TestShippedConfigLoads(t *testing.T) {
	c, err := Load(filepath.Join("..", "config.json"))
	if err != nil {
		t.Fatalf("shipped config.json: %v", err)
	}
	if c.Port != 8080 || len(c.Backends) != 3 {
		t.Errorf("shipped config.json is not the original: %+v", c)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	if c.Bind != "0.0.0.0" || c.AdminBind != "127.0.0.1" || c.ConnectTimeout != 2*time.Second ||
		c.ClientReadTimeout != 30*time.Second || c.ClientIdleTimeout != 120*time.Second ||
		c.ShutdownTimeout != 30*time.Second || c.QueueTimeout != time.Second || c.Retries != 2 || c.MaxHeaderBytes != 16384 ||
		c.MaxRequestBody != 64<<20 || c.HealthCheck.Path != "/" || c.HealthCheck.Rise != 2 ||
		c.HealthCheck.Fall != 3 || c.HealthCheck.Timeout != 2*time.Second || c.LogLevel != "info" {
		t.Errorf("defaults differ from the SPEC: %+v", c)
	}
	if c.HealthCheck.ExpectStatus != d.HealthCheck.ExpectStatus || !c.HealthCheck.StatusOK(399) || c.HealthCheck.StatusOK(400) {
		t.Errorf("expect_status default wrong: %+v", c.HealthCheck)
	}
	// outlier absent or {} takes the SPEC's defaults; slow start is off.
	want := Outlier{Consecutive5xx: 5, ConsecutiveGatewayErrors: 3, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 50}
	empty, err := Parse([]byte(`{"outlier": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Outlier != want || empty.Outlier != want || c.SlowStart != 0 {
		t.Errorf("outlier defaults %+v and %+v, slow_start %v; want %+v and 0", c.Outlier, empty.Outlier, c.SlowStart, want)
	}
}

func TestFullConfig(t *testing.T) {
	c, err := Parse([]byte(`{
		"port": 9000, "bind": "::", "admin_port": 9001, "admin_bind": "127.0.0.2",
		"strategy": "least-conn", "backend_timeout": "1m", "connect_timeout": "250ms",
		"client_read_timeout": "5s", "client_idle_timeout": "10s", "shutdown_timeout": "0s",
		"queue_timeout": "250ms", "retries": 0, "max_header_bytes": "32KiB", "max_request_body": 1000000,
		"health_check_frequency": "5s", "health_check_method": "http",
		"health_check": {"path": "/health?full=1", "expect_status": "200, 204, 300-302", "timeout": "1s", "rise": 1, "fall": 1},
		"log_level": "debug",
		"backends": [
			{"url": "https://api.internal", "weight": 0, "id": "api", "max_conns": 10, "state": "drain"},
			{"url": "http://[::1]:8082/", "weight": 1000},
			"http://10.0.0.1"
		]}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxHeaderBytes != 32<<10 || c.MaxRequestBody != 1000000 || c.ShutdownTimeout != 0 || c.Retries != 0 ||
		c.QueueTimeout != 250*time.Millisecond {
		t.Errorf("values not kept: %+v", c)
	}
	hc := c.HealthCheck
	for code, want := range map[int]bool{200: true, 201: false, 204: true, 301: true, 303: false} {
		if hc.StatusOK(code) != want {
			t.Errorf("StatusOK(%d) = %v, want %v", code, !want, want)
		}
	}
	want := []Backend{
		{URL: "https://api.internal", Weight: 0, ID: "api", MaxConns: 10, State: StateDrain, Scheme: "https", Host: "api.internal", Addr: "api.internal:443"},
		{URL: "http://[::1]:8082/", Weight: 1000, ID: "[::1]:8082", State: StateActive, Scheme: "http", Host: "::1", Addr: "[::1]:8082"},
		{URL: "http://10.0.0.1", Weight: 1, ID: "10.0.0.1:80", State: StateActive, Scheme: "http", Host: "10.0.0.1", Addr: "10.0.0.1:80"},
	}
	for i := range want {
		if c.Backends[i] != want[i] {
			t.Errorf("backends[%d] = %+v, want %+v", i, c.Backends[i], want[i])
		}
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "512": 512, "512B": 512, "64KiB": 64 << 10, "16MiB": 16 << 20,
		"1GiB": 1 << 30, "64KB": 64000, "2 MB": 2000000, "1GB": 1000000000} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "KiB", "-1", "1.5MiB", "10TiB", "4GiB", "12 parsecs"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// TestErrors feeds one bad value at a time and checks the message names its
// JSON path and the problem.
func TestErrors(t *testing.T) {
	tests := []struct {
		name, json string
		want       []string // each problem line, in order
	}{
		{"not an object", `[1,2]`, []string{"the configuration must be a JSON object: an array"}},
		{"empty file", ``, []string{"invalid JSON"}},
		{"syntax with position", "{\n  \"port\": 8080,\n}", []string{"invalid JSON at line 3, column 1"}},
		{"trailing data", `{} {}`, []string{"invalid JSON"}},
		{"not UTF-8", "{\n  \"port\": 8080,\n  \"x\xdb\xdb\": 1}", []string{"invalid JSON at line 3, column 5: not UTF-8"}},
		{"not UTF-8 in a long key", "{\"0" + strings.Repeat("\xdb", 2000) + "\": []}", []string{"invalid JSON at line 1, column 4: not UTF-8"}},
		{"unknown key with suggestion", `{"prot": 1}`, []string{`prot: unknown key (did you mean "port"?)`}},
		{"unknown key", `{"frobnicate": true}`, []string{"frobnicate: unknown key"}},
		{"repeated key", `{"port": 1, "port": 2}`, []string{"port: key appears more than once"}},
		{"null", `{"strategy": null}`, []string{"strategy: must not be null"}},
		{"port type", `{"port": "8080"}`, []string{"port: must be an integer, not a string"}},
		{"port float", `{"port": 80.5}`, []string{"port: must be an integer, not 80.5"}},
		{"port range", `{"port": 0}`, []string{"port: must be 1..65535, not 0"}},
		{"port huge", `{"port": 99999999999}`, []string{"port: must be an integer"}},
		{"admin_port range", `{"admin_port": 70000}`, []string{"admin_port: must be 1..65535, not 70000"}},
		{"same ports", `{"port": 9000, "admin_port": 9000}`, []string{"admin_port: must differ from port (9000)"}},
		{"bind", `{"bind": "localhost"}`, []string{`bind: must be an IP address`}},
		{"admin_bind", `{"admin_bind": "1.2.3"}`, []string{`admin_bind: must be an IP address`}},
		{"strategy", `{"strategy": "fastest"}`, []string{`strategy: unknown strategy "fastest"`}},
		{"duration type", `{"backend_timeout": 10}`, []string{`backend_timeout: must be a duration string such as "30s", not 10`}},
		{"duration syntax", `{"backend_timeout": "10"}`, []string{`backend_timeout: invalid duration "10"`}},
		{"duration negative", `{"connect_timeout": "-1s"}`, []string{"connect_timeout: must not be negative"}},
		{"queue negative", `{"queue_timeout": "-5ms"}`, []string{"queue_timeout: must not be negative"}},
		{"queue not a duration", `{"queue_timeout": 1}`, []string{"queue_timeout: must be a duration string"}},
		{"duration zero", `{"client_read_timeout": "0s"}`, []string{"client_read_timeout: must be greater than 0"}},
		{"idle zero", `{"client_idle_timeout": "0s"}`, []string{"client_idle_timeout: must be greater than 0"}},
		{"park negative", `{"park_idle_after": "-100ms"}`, []string{"park_idle_after: must not be negative"}},
		{"park not a duration", `{"park_idle_after": 100}`, []string{`park_idle_after: must be a duration string such as "30s", not 100`}},
		{"frequency zero", `{"health_check_frequency": "0s"}`, []string{"health_check_frequency: must be greater than 0"}},
		{"shutdown type", `{"shutdown_timeout": true}`, []string{"shutdown_timeout: must be a duration string"}},
		{"retries", `{"retries": 11}`, []string{"retries: must be 0..10, not 11"}},
		{"retries negative", `{"retries": -1}`, []string{"retries: must be 0..10, not -1"}},
		{"max_client_conns negative", `{"max_client_conns": -1}`, []string{"max_client_conns: must be 0..10000000, not -1"}},
		{"max_client_conns type", `{"max_client_conns": "many"}`, []string{"max_client_conns: must be an integer, not a string"}},
		{"header size unit", `{"max_header_bytes": "16 furlongs"}`, []string{`max_header_bytes: invalid size "16 furlongs"`}},
		{"header size small", `{"max_header_bytes": 100}`, []string{"max_header_bytes: must be between 1KiB and 1MiB, not 100 bytes"}},
		{"header size type", `{"max_header_bytes": [1]}`, []string{"max_header_bytes: must be a size such as 16384"}},
		{"body size zero", `{"max_request_body": 0}`, []string{"max_request_body: must be at least 1 byte"}},
		{"body size negative", `{"max_request_body": -5}`, []string{"max_request_body: must be a size in bytes"}},
		{"check method", `{"health_check_method": "icmp"}`, []string{`health_check_method: unknown method "icmp"`}},
		{"health_check type", `{"health_check": "yes"}`, []string{"health_check: must be an object"}},
		{"health_check unknown", `{"health_check": {"interval": "1s"}}`, []string{"health_check.interval: unknown key"}},
		{"health path", `{"health_check": {"path": "health"}}`, []string{`health_check.path: must be a request path starting with "/"`}},
		{"expect_status", `{"health_check": {"expect_status": "2xx"}}`, []string{`health_check.expect_status: invalid status list "2xx"`}},
		{"expect_status order", `{"health_check": {"expect_status": "399-200"}}`, []string{`health_check.expect_status: invalid status list`}},
		{"health timeout", `{"health_check": {"timeout": "0s"}}`, []string{"health_check.timeout: must be greater than 0"}},
		{"rise", `{"health_check": {"rise": 0}}`, []string{"health_check.rise: must be 1..100, not 0"}},
		{"fall", `{"health_check": {"fall": 101}}`, []string{"health_check.fall: must be 1..100, not 101"}},
		{"log_level", `{"log_level": "verbose"}`, []string{`log_level: unknown level "verbose"`}},
		{"public admin without token", `{"admin_bind": "0.0.0.0"}`, []string{"admin_bind: 0.0.0.0 is not a loopback address: set admin_token"}},
		{"both tokens", `{"admin_token": "x", "admin_token_file": "/etc/hostname"}`, []string{"admin_token_file: set admin_token or admin_token_file, not both"}},
		{"token file missing", `{"admin_token_file": "/nonexistent/token"}`, []string{"admin_token_file: cannot read: no such file or directory"}},
		{"token with space", `{"admin_token": "a b"}`, []string{"admin_token: must not contain white space"}},
		{"persist type", `{"admin_persist": "yes"}`, []string{"admin_persist: must be true or false, not a string"}},
		{"access_log empty", `{"access_log": ""}`, []string{`access_log: must be "off", "stderr" or a file path`}},
		{"sticky type", `{"sticky": "ip"}`, []string{"sticky: must be an object"}},
		{"sticky mode", `{"sticky": {"mode": "session"}}`, []string{`sticky.mode: unknown mode "session"`}},
		{"sticky header missing", `{"sticky": {"mode": "header"}}`, []string{`sticky.header: must name a header when sticky.mode is "header"`}},
		{"sticky header name", `{"sticky": {"mode": "header", "header": "X User"}}`, []string{`sticky.header: "X User" is not a valid header name`}},
		{"sticky cookie name", `{"sticky": {"mode": "cookie", "cookie": "a;b"}}`, []string{`sticky.cookie: "a;b" is not a valid cookie name`}},
		{"sticky cookie empty", `{"sticky": {"cookie": ""}}`, []string{`sticky.cookie: "" is not a valid cookie name`}},
		{"sticky insert type", `{"sticky": {"cookie_insert": 1}}`, []string{"sticky.cookie_insert: must be true or false, not 1"}},
		{"sticky max age", `{"sticky": {"cookie_max_age": "-1h"}}`, []string{"sticky.cookie_max_age: must not be negative"}},
		{"sticky secret short", `{"sticky": {"cookie_secret": "short"}}`, []string{"sticky.cookie_secret: must be at least 16 characters"}},
		{"balance factor low", `{"sticky": {"balance_factor": 0.5}}`, []string{"sticky.balance_factor: must be 0 (off) or between 1 and 100, such as 1.25; not 0.5"}},
		{"balance factor type", `{"sticky": {"balance_factor": "1.25"}}`, []string{"sticky.balance_factor: must be a number, not a string"}},
		{"trusted type", `{"sticky": {"trusted_proxies": "10.0.0.0/8"}}`, []string{"sticky.trusted_proxies: must be an array of strings"}},
		{"trusted item", `{"sticky": {"trusted_proxies": ["10.0.0.0/8", "10.1/16"]}}`, []string{`sticky.trusted_proxies[1]: "10.1/16" is not a CIDR`}},
		{"trusted item type", `{"sticky": {"trusted_proxies": [10]}}`, []string{`sticky.trusted_proxies[0]: must be a string, not 10`}},
		{"sticky unknown", `{"sticky": {"mode": "ip", "hash": "maglev"}}`, []string{"sticky.hash: unknown key"}},
		{"tls without certificates", `{"tls": {"port": 8443}}`, []string{"tls.certificates: needs at least one certificate"}},
		{"tls port", `{"tls": {"port": 8080, "certificates": [{"cert_file": "a", "key_file": "b"}]}}`, []string{"tls.port: must differ from port and admin_port (8080)"}},
		{"tls bind", `{"tls": {"bind": "x", "certificates": [{"cert_file": "a", "key_file": "b"}]}}`, []string{`tls.bind: must be an IP address`}},
		{"tls version", `{"tls": {"min_version": "1.1", "certificates": [{"cert_file": "a", "key_file": "b"}]}}`, []string{`tls.min_version: must be "1.2" or "1.3", not "1.1"`}},
		{"tls cert missing key", `{"tls": {"certificates": [{"cert_file": "a"}]}}`, []string{"tls.certificates[0].key_file: is required"}},
		{"tls certificates type", `{"tls": {"certificates": {"cert_file": "a"}}}`, []string{"tls.certificates: must be an array"}},
		{"tls cert unknown key", `{"tls": {"certificates": [{"cert": "a", "key_file": "b"}]}}`, []string{`tls.certificates[0].cert: unknown key`, "tls.certificates[0].cert_file: is required"}},
		{"tls redirect type", `{"tls": {"redirect_http": "yes", "certificates": [{"cert_file": "a", "key_file": "b"}]}}`, []string{"tls.redirect_http: must be true or false"}},
		{"backend_tls unknown", `{"backend_tls": {"verify": false}}`, []string{"backend_tls.verify: unknown key"}},
		{"backend_tls type", `{"backend_tls": {"insecure_skip_verify": "yes"}}`, []string{"backend_tls.insecure_skip_verify: must be true or false"}},
		{"backends type", `{"backends": "http://a:1"}`, []string{"backends: must be an array of URLs or backend objects"}},
		{"backend item type", `{"backends": [42]}`, []string{`backends[0]: must be a URL string or an object with "url"`}},
		{"backend scheme", `{"backends": ["ftp://a:1"]}`, []string{`backends[0].url: scheme of "ftp://a:1" must be http, https, h2c`}},
		{"backend no scheme", `{"backends": ["localhost:8082"]}`, []string{`backends[0].url: "localhost:8082" has no scheme: write it as http://host:port`}},
		{"backend path", `{"backends": ["http://a:1/api"]}`, []string{`backends[0].url: "http://a:1/api" must not have a path, query or fragment`}},
		{"backend query", `{"backends": ["http://a:1?x=1"]}`, []string{`backends[0].url: "http://a:1?x=1" must not have a path, query or fragment`}},
		{"backend user", `{"backends": ["http://u:p@a:1"]}`, []string{`backends[0].url: "http://u:p@a:1" must not carry user information`}},
		{"backend no host", `{"backends": ["http://:80"]}`, []string{`backends[0].url: "http://:80" has no host`}},
		{"backend bad port", `{"backends": ["http://a:99999"]}`, []string{`backends[0].url: port of "http://a:99999" must be 1..65535`}},
		{"backend empty port", `{"backends": ["http://a:"]}`, []string{`backends[0].url: "http://a:" has an empty port`}},
		{"backend garbage url", `{"backends": ["http://a b:1"]}`, []string{`backends[0].url: invalid URL "http://a b:1"`}},
		{"backend url missing", `{"backends": [{"weight": 2}]}`, []string{"backends[0].url: is required"}},
		{"backend url type", `{"backends": [{"url": 5}]}`, []string{"backends[0].url: must be a string, not 5"}},
		{"backend unknown key", `{"backends": [{"url": "http://a:1", "wieght": 2}]}`, []string{`backends[0].wieght: unknown key (did you mean "weight"?)`}},
		{"weight range", `{"backends": [{"url": "http://a:1", "weight": 1001}]}`, []string{"backends[0].weight: must be 0..1000, not 1001"}},
		{"weight negative", `{"backends": [{"url": "http://a:1", "weight": -1}]}`, []string{"backends[0].weight: must be 0..1000, not -1"}},
		{"weight type", `{"backends": [{"url": "http://a:1", "weight": "3"}]}`, []string{"backends[0].weight: must be an integer, not a string"}},
		{"state", `{"backends": [{"url": "http://a:1", "state": "paused"}]}`, []string{`backends[0].state: unknown state "paused"`}},
		{"max_conns", `{"backends": [{"url": "http://a:1", "max_conns": -1}]}`, []string{"backends[0].max_conns: must be 0 (unlimited) or more, not -1"}},
		{"id chars", `{"backends": [{"url": "http://a:1", "id": "a/b"}]}`, []string{`backends[0].id: "a/b" may hold only letters, digits and ".-_:[]"`}},
		{"id too long", `{"backends": [{"url": "http://a:1", "id": "` + strings.Repeat("x", 129) + `"}]}`, []string{"backends[0].id: must be 1 to 128 characters"}},
		{"duplicate id", `{"backends": ["http://a:1", "http://a:1"]}`, []string{`backends[1].id: duplicate id "a:1" (also backends[0]`}},
		{"duplicate explicit id", `{"backends": [{"url": "http://a:1", "id": "x"}, {"url": "http://b:1", "id": "x"}]}`, []string{`backends[1].id: duplicate id "x" (also backends[0]`}},
		{"several problems at once", `{"port": 0, "strategy": "x", "backends": ["ftp://a", {"url": "http://b:1", "weight": 5000}]}`, []string{
			"port: must be 1..65535", "strategy: unknown strategy", "backends[0].url: scheme", "backends[1].weight: must be 0..1000"}},
		{"outlier not an object", `{"outlier": 5}`, []string{"outlier: must be an object"}},
		{"outlier unknown key", `{"outlier": {"consecutive_500": 5}}`, []string{`outlier.consecutive_500: unknown key (did you mean "consecutive_5xx"?)`}},
		{"outlier ranges", `{"outlier": {"consecutive_5xx": -1, "consecutive_gateway_errors": 1001, "interval": "0s", "base_ejection_time": "0s", "max_ejection_percent": 101}}`, []string{
			"outlier.consecutive_5xx: must be 0 (off) to 1000, not -1", "outlier.consecutive_gateway_errors: must be 0 (off) to 1000, not 1001",
			"outlier.interval: must be greater than 0", "outlier.base_ejection_time: must be greater than 0", "outlier.max_ejection_percent: must be 0..100, not 101"}},
		{"slow_start negative", `{"slow_start": "-6s"}`, []string{"slow_start: must not be negative"}},
		{"slow_start type", `{"slow_start": 6}`, []string{`slow_start: must be a duration string`}},
		{"decode problem not repeated", `{"backends": [{"weight": 2000}]}`, []string{"backends[0].url: is required", "backends[0].weight: must be 0..1000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.json))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *Error, got config %+v, err %v", c, err)
			}
			if c != nil {
				t.Errorf("got a config along with the error")
			}
			if len(ce.Problems) != len(tt.want) {
				t.Fatalf("want %d problems, got %d:\n%v", len(tt.want), len(ce.Problems), err)
			}
			for i, w := range tt.want {
				if got := ce.Problems[i].String(); !strings.HasPrefix(got, w) {
					t.Errorf("problem %d = %q, want prefix %q", i, got, w)
				}
			}
		})
	}
}

func TestSticky(t *testing.T) {
	c, err := Parse([]byte(`{"sticky": {"mode": "ip", "balance_factor": 1.25, "trusted_proxies": ["10.0.0.0/8", "192.168.1.7", "fd00::/8"],
		"cookie_max_age": "1h", "cookie_secret": "0123456789abcdef"}}`))
	if err != nil {
		t.Fatal(err)
	}
	st := c.Sticky
	if st.Mode != StickyIP || st.BalanceFactor != 1.25 || st.CookieMaxAge != time.Hour || st.Cookie != "fastlb" || !st.CookieInsert {
		t.Errorf("sticky = %+v", st)
	}
	want := []string{"10.0.0.0/8", "192.168.1.7/32", "fd00::/8"}
	if len(st.Trusted) != 3 {
		t.Fatalf("trusted = %v", st.Trusted)
	}
	for i, w := range want {
		if st.Trusted[i].String() != w {
			t.Errorf("trusted[%d] = %s, want %s", i, st.Trusted[i], w)
		}
	}
	if d, _ := Parse([]byte(`{}`)); d.Sticky.Mode != StickyOff {
		t.Errorf("default sticky mode %q", d.Sticky.Mode)
	}
}

func TestAdminToken(t *testing.T) {
	c, err := Parse([]byte(`{"admin_bind": "0.0.0.0", "admin_token": "s3cret"}`))
	if err != nil || c.AdminToken != "s3cret" {
		t.Fatalf("token in file: %v %+v", err, c)
	}
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Parse([]byte(`{"admin_bind": "::", "admin_token_file": "` + p + `"}`))
	if err != nil || c.AdminToken != "from-file" {
		t.Fatalf("token file: %v %+v", err, c)
	}
	if err := os.WriteFile(p, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse([]byte(`{"admin_token_file": "` + p + `"}`)); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty token file: %v", err)
	}
	if c, err := Parse([]byte(`{"admin_bind": "127.0.0.5"}`)); err != nil || c.AdminToken != "" {
		t.Errorf("loopback without token refused: %v", err)
	}
}

func TestLoadFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); err == nil ||
		!strings.Contains(err.Error(), "cannot read configuration") {
		t.Errorf("missing file: %v", err)
	}
	p := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(p, []byte(`{"port": -1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	var ce *Error
	if !errors.As(err, &ce) || ce.File != p {
		t.Errorf("Load(bad) = %v, want *Error naming the file", err)
	}
}

func TestResolveBackend(t *testing.T) {
	b := Backend{URL: "http://127.0.0.1:9000", Weight: 4}
	if err := ResolveBackend(&b); err != nil || b.ID != "127.0.0.1:9000" || b.Addr != "127.0.0.1:9000" {
		t.Errorf("ResolveBackend = %+v, %v", b, err)
	}
	for _, bad := range []Backend{
		{URL: "nope"}, {URL: "http://a:1", Weight: -2}, {URL: "http://a:1", MaxConns: -1}, {URL: "http://a:1", ID: "x y"},
	} {
		if err := ResolveBackend(&bad); err == nil {
			t.Errorf("ResolveBackend(%+v) accepted", bad)
		}
	}
}

func TestParseBackend(t *testing.T) {
	b, err := ParseBackend([]byte(`{"url": "http://10.0.0.9:81", "weight": 7, "state": "maint"}`))
	if err != nil || b.ID != "10.0.0.9:81" || b.Weight != 7 || b.State != StateMaint || b.Addr != "10.0.0.9:81" {
		t.Fatalf("ParseBackend = %+v, %v", b, err)
	}
	for in, want := range map[string]string{
		`[]`:                                   "must be a JSON object",
		`{"url": 1}`:                           "url: must be a string, not 1",
		`{"weight": 2}`:                        "url: is required",
		`{"url": "http://a:1", "x": 1}`:        "x: unknown key",
		`{"url": "http://a:1", "weight": 1e9}`: "weight: must be an integer",
		`{"url": "http://a:1", "id": "a b"}`:   `id: "a b" may hold only`,
		`{"url": "http://a:1",}`:               "invalid JSON at line 1",
		``:                                     "must be a JSON object",
	} {
		if _, err := ParseBackend([]byte(in)); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ParseBackend(%s) = %v, want %q", in, err, want)
		}
	}
}

// ReplaceValue changes the bytes of one value and no other.
func TestReplaceValue(t *testing.T) {
	in := `{"port": 9000,
	"backends": ["http://a:1"],
	"pools": {
	  "api": {"strategy": "least-conn",
	          "backends": [
	            "http://x:1"
	          ]},
	  "web": {"retries": 1}
	},
	"log_level":   "debug"}
`
	cases := []struct {
		path  []string
		value string
		want  string
	}{
		{[]string{"backends"}, `["http://b:2"]`, strings.Replace(in, `["http://a:1"]`, `["http://b:2"]`, 1)},
		{[]string{"pools", "api", "backends"}, "[\n  \"http://y:2\"\n]",
			strings.Replace(in, "[\n\t            \"http://x:1\"\n\t          ]", "[\n\t            \"http://y:2\"\n\t          ]", 1)},
		{[]string{"pools", "web", "backends"}, `[]`, strings.Replace(in, `{"retries": 1}`, `{"retries": 1, "backends": []}`, 1)},
		{[]string{"access_log"}, `"stderr"`, strings.Replace(in, `"log_level":   "debug"}`, "\"log_level\":   \"debug\",\n\t\"access_log\": \"stderr\"}", 1)},
	}
	for _, tc := range cases {
		out, err := ReplaceValue([]byte(in), tc.path, []byte(tc.value))
		if err != nil {
			t.Fatalf("%v: %v", tc.path, err)
		}
		if string(out) != tc.want {
			t.Errorf("%v: got\n%s\nwant\n%s", tc.path, out, tc.want)
		}
		if _, err := Parse(out); err != nil {
			t.Errorf("%v: the result does not parse: %v", tc.path, err)
		}
	}
	out, err := ReplaceValue([]byte(`{}`), []string{"backends"}, []byte(`[]`))
	if err != nil || string(out) != `{"backends": []}` {
		t.Errorf("empty object: %q, %v", out, err)
	}
	for _, bad := range []struct {
		in   string
		path []string
	}{
		{`{"a": }`, []string{"backends"}},
		{`[]`, []string{"backends"}},
		{`{"port": 1}`, []string{"pools", "api", "backends"}},
		{`{"pools": []}`, []string{"pools", "api", "backends"}},
	} {
		if out, err := ReplaceValue([]byte(bad.in), bad.path, []byte(`[]`)); err == nil {
			t.Errorf("%s %v: accepted, gave %s", bad.in, bad.path, out)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(seed))
	f.Add([]byte(`{"backends": [{"url": "http://a:1", "weight": 3}], "health_check": {"expect_status": "200,204"}}`))
	f.Add([]byte(`{"max_header_bytes": "16KiB", "retries": 10}`))
	f.Add([]byte(`{"pools": {"api": {"backends": ["http://a:1"], "sticky": {"mode": "ip"}}},
	  "routes": [{"host": "*.a.example", "path_prefix": "/v1/", "pool": "api", "strip_prefix": true,
	              "set_request_headers": {"X-A": "1"}, "remove_request_headers": ["X-B"]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse must return exactly one of config and error: %v %v", c, err)
		}
		if c != nil {
			for _, p := range c.AllPools() {
				for _, b := range p.Backends {
					if b.Addr == "" || b.ID == "" || b.Weight < 0 || b.Weight > MaxWeight {
						t.Fatalf("accepted an unresolved backend: %+v", b)
					}
				}
			}
			for _, r := range c.Routes {
				if c.PoolNamed(r.Pool) == nil || r.Host == "" && r.PathPrefix == "" {
					t.Fatalf("accepted a route to nowhere: %+v", r)
				}
			}
			View(c)
		}
	})
}

func FuzzParseBackend(f *testing.F) {
	f.Add([]byte(`{"url": "http://10.0.0.9:81", "weight": 7, "id": "web9", "max_conns": 3, "state": "drain"}`))
	f.Add([]byte(`{"url": "https://[::1]"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBackend(data)
		if err != nil {
			return
		}
		if b.Addr == "" || CheckID(b.ID) != nil || b.Weight < 0 || b.Weight > MaxWeight || b.MaxConns < 0 {
			t.Fatalf("accepted an invalid backend: %+v", b)
		}
	})
}
