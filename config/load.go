package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	json "github.com/goccy/go-json"
)

// Load reads and validates the configuration file at path.
// A file that cannot be read is reported as a plain error; a file that does
// not validate as an *Error listing every problem.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read configuration: %w", err)
	}
	cfg, err := Parse(data)
	var ce *Error
	if errors.As(err, &ce) {
		ce.File = path
	}
	return cfg, err
}

// Parse decodes and validates a configuration held in memory.
func Parse(data []byte) (*Config, error) {
	d := &decoder{}
	cfg := Defaults()
	if err := syntaxCheck(data); err != nil {
		return nil, &Error{Problems: []Problem{{Msg: err.Error()}}}
	}
	top := d.object("", json.RawMessage(data))
	if top != nil {
		d.fill(cfg, top)
		d.resolvePools(cfg)
		d.resolveRouteLimits(cfg)
		d.decoded = len(d.problems)
		d.validate(cfg)
	}
	if len(d.problems) > 0 {
		return nil, &Error{Problems: d.problems}
	}
	return cfg, nil
}

// fill decodes the top-level members into c, each by its Key.
func (d *decoder) fill(c *Config, top []member) {
	fields := make([]field, len(Keys))
	for i, k := range Keys {
		fields[i] = field{k.Name, k.decode(d, c)}
	}
	d.apply("", top, fields)
}

func (d *decoder) healthCheck(path string, raw json.RawMessage, hc *HealthCheck) {
	d.apply(path, d.object(path, raw), []field{
		{"path", d.stringTo(&hc.Path)},
		{"expect_status", d.stringTo(&hc.ExpectStatus)},
		{"timeout", d.durationTo(&hc.Timeout)},
		{"rise", d.intTo(&hc.Rise)},
		{"fall", d.intTo(&hc.Fall)},
	})
}

func (d *decoder) stickyObject(path string, raw json.RawMessage, st *Sticky) {
	d.apply(path, d.object(path, raw), []field{
		{"mode", d.stringTo(&st.Mode)},
		{"cookie", d.stringTo(&st.Cookie)},
		{"cookie_insert", d.boolTo(&st.CookieInsert)},
		{"cookie_max_age", d.durationTo(&st.CookieMaxAge)},
		{"cookie_secret", d.stringTo(&st.CookieSecret)},
		{"header", d.stringTo(&st.Header)},
		{"balance_factor", d.floatTo(&st.BalanceFactor)},
		{"trusted_proxies", d.stringsTo(&st.TrustedProxies)},
	})
}

// tlsObject decodes "tls"; its presence turns the HTTPS listener on.
func (d *decoder) tlsObject(path string, raw json.RawMessage) *TLS {
	t := &TLS{Port: 8443, Bind: "0.0.0.0", MinVersion: "1.2", HTTP2: true}
	d.apply(path, d.object(path, raw), []field{
		{"port", d.intTo(&t.Port)},
		{"bind", d.stringTo(&t.Bind)},
		{"certificates", func(p string, raw json.RawMessage) { t.Certificates = d.certificates(p, raw) }},
		{"min_version", d.stringTo(&t.MinVersion)},
		{"redirect_http", d.boolTo(&t.RedirectHTTP)},
		{"http2", d.boolTo(&t.HTTP2)},
	})
	return t
}

// clusterObject decodes "cluster"; its presence makes the instance one of
// a fleet.
func (d *decoder) clusterObject(path string, raw json.RawMessage) *Cluster {
	c := &Cluster{Etcd: Etcd{Prefix: "/fastlb/", DialTimeout: 2 * time.Second}}
	d.apply(path, d.object(path, raw), []field{
		{"name", d.stringTo(&c.Name)},
		{"etcd", func(p string, raw json.RawMessage) {
			e := &c.Etcd
			d.apply(p, d.object(p, raw), []field{
				{"endpoints", d.stringsTo(&e.Endpoints)},
				{"prefix", d.stringTo(&e.Prefix)},
				{"dial_timeout", d.durationTo(&e.DialTimeout)},
				{"username", d.stringTo(&e.Username)},
				{"password_file", d.stringTo(&e.PasswordFile)},
				{"ca_file", d.stringTo(&e.CAFile)},
				{"cert_file", d.stringTo(&e.CertFile)},
				{"key_file", d.stringTo(&e.KeyFile)},
			})
		}},
		{"cache_file", d.stringTo(&c.CacheFile)},
	})
	return c
}

func (d *decoder) proxyProtocolObject(path string, raw json.RawMessage, p *ProxyProtocol) {
	d.apply(path, d.object(path, raw), []field{
		{"accept", d.boolTo(&p.Accept)},
		{"trusted", d.stringsTo(&p.Trusted)},
		{"timeout", d.durationTo(&p.Timeout)},
	})
}

func (d *decoder) rateLimitObject(path string, raw json.RawMessage, r *RateLimit) {
	d.apply(path, d.object(path, raw), []field{
		{"key", d.stringTo(&r.Key)},
		{"rate", d.floatTo(&r.Rate)},
		{"burst", d.intTo(&r.Burst)},
		{"max_keys", d.intTo(&r.MaxKeys)},
	})
}

func (d *decoder) outlier(path string, raw json.RawMessage, o *Outlier) {
	d.apply(path, d.object(path, raw), []field{
		{"consecutive_5xx", d.intTo(&o.Consecutive5xx)},
		{"consecutive_gateway_errors", d.intTo(&o.ConsecutiveGatewayErrors)},
		{"interval", d.durationTo(&o.Interval)},
		{"base_ejection_time", d.durationTo(&o.BaseEjectionTime)},
		{"max_ejection_percent", d.intTo(&o.MaxEjectionPercent)},
	})
}

func (d *decoder) backendTLS(path string, raw json.RawMessage, b *BackendTLS) {
	d.apply(path, d.object(path, raw), []field{
		{"ca_file", d.stringTo(&b.CAFile)},
		{"insecure_skip_verify", d.boolTo(&b.InsecureSkipVerify)},
	})
}

func (d *decoder) backends(path string, raw json.RawMessage) []Backend {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		d.fail(path, "must be an array of URLs or backend objects")
		return nil
	}
	out := make([]Backend, len(items))
	for i, item := range items {
		p := fmt.Sprintf("%s[%d]", path, i)
		b := &out[i]
		b.Weight = 1
		item = bytes.TrimSpace(item)
		switch {
		case len(item) > 0 && item[0] == '"':
			d.stringTo(&b.URL)(p, item)
		case len(item) > 0 && item[0] == '{':
			d.backendObject(p, item, b)
		default:
			d.fail(p, "must be a URL string or an object with \"url\"")
		}
	}
	return out
}

func (d *decoder) certificates(path string, raw json.RawMessage) []Certificate {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		d.fail(path, `must be an array of {"cert_file": ..., "key_file": ...}`)
		return nil
	}
	out := make([]Certificate, len(items))
	for i, item := range items {
		p := fmt.Sprintf("%s[%d]", path, i)
		c := &out[i]
		d.apply(p, d.object(p, item), []field{
			{"cert_file", d.stringTo(&c.CertFile)},
			{"key_file", d.stringTo(&c.KeyFile)},
		})
	}
	return out
}

// backendObject decodes a backend object into b.
func (d *decoder) backendObject(path string, raw json.RawMessage, b *Backend) {
	urlSet := false
	d.apply(path, d.object(path, raw), []field{
		{"url", func(p string, raw json.RawMessage) { urlSet = true; d.stringTo(&b.URL)(p, raw) }},
		{"weight", d.intTo(&b.Weight)},
		{"id", d.stringTo(&b.ID)},
		{"max_conns", d.intTo(&b.MaxConns)},
		{"state", d.stringTo(&b.State)},
	})
	if !urlSet {
		d.fail(join(path, "url"), "is required")
	}
}

// ParseBackend decodes and checks one backend object, such as the admin API
// receives: {"url": ..., "weight": ..., "id": ..., "max_conns": ..., "state": ...}.
// Problems are reported as an *Error with paths relative to the object.
func ParseBackend(data []byte) (Backend, error) {
	b := Backend{Weight: 1}
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		return b, &Error{Problems: []Problem{{Msg: "must be a JSON object such as {\"url\": \"http://host:port\"}"}}}
	}
	if err := syntaxCheck(data); err != nil {
		return b, &Error{Problems: []Problem{{Msg: err.Error()}}}
	}
	d := &decoder{}
	d.backendObject("", data, &b)
	d.decoded = len(d.problems)
	d.checkBackend("", &b)
	if len(d.problems) > 0 {
		return b, &Error{Problems: d.problems}
	}
	return b, nil
}
