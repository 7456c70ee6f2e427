package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	json "github.com/goccy/go-json"
)

// Problem is one thing wrong with a configuration, at a JSON path.
type Problem struct {
	Path string // JSON path such as "backends[2].url"; empty for the whole file
	Msg  string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// Error lists every problem found in a configuration, in file order.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

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
		d.decoded = len(d.problems)
		d.validate(cfg)
	}
	if len(d.problems) > 0 {
		return nil, &Error{Problems: d.problems}
	}
	return cfg, nil
}

// syntaxCheck reports the first JSON syntax error with its line and column.
func syntaxCheck(data []byte) error {
	// JSON text is UTF-8 (RFC 8259, section 8.1). Checked first because
	// the JSON library's stream decoder panics on some invalid sequences
	// in long strings where its Unmarshal accepts them.
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, size := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			off += size
		}
		line, col := position(data, off)
		return fmt.Errorf("invalid JSON at line %d, column %d: not UTF-8", line, col)
	}
	var v any
	err := json.Unmarshal(data, &v)
	if err == nil {
		return nil
	}
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		return fmt.Errorf("invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	line, col := position(data, min(int(se.Offset), len(data)))
	return fmt.Errorf("invalid JSON at line %d, column %d: %s", line, col, strings.TrimPrefix(se.Error(), "json: "))
}

// position is the line and column, both from 1, of byte offset off.
func position(data []byte, off int) (line, col int) {
	return 1 + bytes.Count(data[:off], []byte("\n")), off - bytes.LastIndexByte(data[:off], '\n')
}

// decoder collects problems while it walks the decoded JSON.
type decoder struct {
	problems []Problem
	decoded  int // problems found while decoding; validation does not repeat them
}

func (d *decoder) fail(path, format string, args ...any) {
	// A value that failed to decode kept its default; validating that
	// default would only repeat the problem under the same path.
	for _, p := range d.problems[:d.decoded] {
		if p.Path == path || strings.HasPrefix(path, p.Path+".") {
			return
		}
	}
	d.problems = append(d.problems, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// field is one known key of a JSON object and how to decode it.
type field struct {
	key    string
	decode func(path string, raw json.RawMessage)
}

// object decodes raw as a JSON object, keeping its keys in file order.
func (d *decoder) object(path string, raw json.RawMessage) []member {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		if path == "" {
			d.fail(path, "the configuration must be a JSON object: %s", describe(raw))
		} else {
			d.fail(path, "must be an object")
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		d.fail(path, "invalid JSON: %v", err)
		return nil
	}
	var members []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			d.fail(path, "invalid JSON: %v", err)
			return nil
		}
		key, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			d.fail(join(path, key), "invalid JSON: %v", err)
			return nil
		}
		members = append(members, member{key: key, value: value})
	}
	if _, err := dec.Token(); err != nil {
		d.fail(path, "invalid JSON: %v", err)
		return nil
	}
	// Anything after the object is an error too: a pasted second object
	// must not be silently ignored.
	if _, err := dec.Token(); err == nil {
		d.fail(path, "invalid JSON: unexpected data after the object")
		return nil
	}
	return members
}

type member struct {
	key   string
	value json.RawMessage
}

// apply decodes each member with its field, reporting unknown and repeated keys.
func (d *decoder) apply(path string, members []member, fields []field) {
	seen := make(map[string]bool, len(members))
	for _, m := range members {
		p := join(path, m.key)
		if seen[m.key] {
			d.fail(p, "key appears more than once")
			continue
		}
		seen[m.key] = true
		i := slices.IndexFunc(fields, func(f field) bool { return f.key == m.key })
		if i < 0 {
			d.fail(p, "unknown key%s", suggest(m.key, fields))
			continue
		}
		if isNull(m.value) {
			d.fail(p, "must not be null")
			continue
		}
		fields[i].decode(p, m.value)
	}
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
	t := &TLS{Port: 8443, Bind: "0.0.0.0", MinVersion: "1.2"}
	d.apply(path, d.object(path, raw), []field{
		{"port", d.intTo(&t.Port)},
		{"bind", d.stringTo(&t.Bind)},
		{"certificates", func(p string, raw json.RawMessage) { t.Certificates = d.certificates(p, raw) }},
		{"min_version", d.stringTo(&t.MinVersion)},
		{"redirect_http", d.boolTo(&t.RedirectHTTP)},
	})
	return t
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

func (d *decoder) intTo(dst *int) func(string, json.RawMessage) {
	return func(path string, raw json.RawMessage) {
		n, ok := number(raw)
		if !ok {
			d.fail(path, "must be an integer, not %s", describe(raw))
			return
		}
		v, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil || v > math.MaxInt32 || v < math.MinInt32 {
			d.fail(path, "must be an integer, not %s", n)
			return
		}
		*dst = int(v)
	}
}

func (d *decoder) stringTo(dst *string) func(string, json.RawMessage) {
	return func(path string, raw json.RawMessage) {
		if err := json.Unmarshal(raw, dst); err != nil {
			d.fail(path, "must be a string, not %s", describe(raw))
		}
	}
}

func (d *decoder) boolTo(dst *bool) func(string, json.RawMessage) {
	return func(path string, raw json.RawMessage) {
		if err := json.Unmarshal(raw, dst); err != nil {
			d.fail(path, "must be true or false, not %s", describe(raw))
		}
	}
}

func (d *decoder) floatTo(dst *float64) func(string, json.RawMessage) {
	return func(path string, raw json.RawMessage) {
		n, ok := number(raw)
		if !ok {
			d.fail(path, "must be a number, not %s", describe(raw))
			return
		}
		v, err := n.Float64()
		if err != nil {
			d.fail(path, "must be a number, not %s", n)
			return
		}
		*dst = v
	}
}

func (d *decoder) stringsTo(dst *[]string) func(string, json.RawMessage) {
	return func(path string, raw json.RawMessage) {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			d.fail(path, "must be an array of strings, not %s", describe(raw))
			return
		}
		out := make([]string, len(items))
		for i, item := range items {
			d.stringTo(&out[i])(fmt.Sprintf("%s[%d]", path, i), item)
		}
		*dst = out
	}
}

func (d *decoder) durationTo(dst *time.Duration) func(string, json.RawMessage) {
	return func(path string, raw json.RawMessage) {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			d.fail(path, "must be a duration string such as \"30s\", not %s", describe(raw))
			return
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			d.fail(path, "invalid duration %q (use Go syntax such as \"250ms\", \"30s\", \"1m\")", s)
			return
		}
		if v < 0 {
			d.fail(path, "must not be negative")
			return
		}
		*dst = v
	}
}

// sizeTo decodes a size: an integer of bytes or a string such as "64KiB".
func (d *decoder) sizeTo(dst *int) func(string, json.RawMessage) {
	return func(path string, raw json.RawMessage) {
		if n, ok := number(raw); ok {
			v, err := strconv.ParseInt(n.String(), 10, 64)
			if err != nil || v < 0 || v > math.MaxInt32 {
				d.fail(path, "must be a size in bytes between 0 and %d, not %s", math.MaxInt32, n)
				return
			}
			*dst = int(v)
			return
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			d.fail(path, "must be a size such as 16384 or \"16KiB\", not %s", describe(raw))
			return
		}
		v, err := ParseSize(s)
		if err != nil {
			d.fail(path, "%v", err)
			return
		}
		*dst = v
	}
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// ParseSize parses "512", "512B", "64KiB", "16MiB", "1GiB" (powers of 1024)
// or "64KB", "16MB", "1GB" (powers of 1000).
func ParseSize(s string) (int, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid size %q (use bytes, or a number with KiB, MiB, GiB, KB, MB or GB)", s)
	}
	if v > math.MaxInt32/mult {
		return 0, fmt.Errorf("size %q is too large (at most %d bytes)", s, math.MaxInt32)
	}
	return int(v * mult), nil
}

// number decodes raw as a JSON number; a quoted number is not one.
func number(raw json.RawMessage) (json.Number, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return "", false
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", false
	}
	return n, true
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// describe names the JSON type of raw for error messages.
func describe(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		if len(raw) > 20 {
			raw = raw[:20]
		}
		return string(raw)
	}
}

// suggest names a known key close to an unknown one, to catch typos.
func suggest(key string, fields []field) string {
	best, bestDist := "", 3
	for _, f := range fields {
		if dist := editDistance(strings.ToLower(key), f.key); dist < bestDist {
			best, bestDist = f.key, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) validate(c *Config) {
	d.port("port", c.Port)
	d.port("admin_port", c.AdminPort)
	d.bindAddr("bind", c.Bind)
	d.bindAddr("admin_bind", c.AdminBind)
	if c.Port == c.AdminPort {
		d.fail("admin_port", "must differ from port (%d)", c.Port)
	}
	d.adminToken(c)
	if c.AccessLog == "" {
		d.fail("access_log", `must be "off", "stderr" or a file path`)
	}
	switch c.Strategy {
	case StrategyRoundRobin, StrategyLeastConn, StrategyRandomTwo:
	default:
		d.fail("strategy", "unknown strategy %q (use %q, %q or %q)", c.Strategy,
			StrategyRoundRobin, StrategyLeastConn, StrategyRandomTwo)
	}
	d.positive("backend_timeout", c.BackendTimeout)
	d.positive("connect_timeout", c.ConnectTimeout)
	d.positive("client_read_timeout", c.ClientReadTimeout)
	d.positive("client_idle_timeout", c.ClientIdleTimeout)
	d.positive("health_check_frequency", c.HealthCheckFrequency)
	d.positive("health_check.timeout", c.HealthCheck.Timeout)
	if c.Retries < 0 || c.Retries > MaxRetries {
		d.fail("retries", "must be 0..%d, not %d", MaxRetries, c.Retries)
	}
	if c.MaxClientConns < 1 || c.MaxClientConns > 10_000_000 {
		d.fail("max_client_conns", "must be 1..10000000, not %d", c.MaxClientConns)
	}
	if c.MaxHeaderBytes < 1<<10 || c.MaxHeaderBytes > 1<<20 {
		d.fail("max_header_bytes", "must be between 1KiB and 1MiB, not %d bytes", c.MaxHeaderBytes)
	}
	if c.MaxRequestBody < 1 {
		d.fail("max_request_body", "must be at least 1 byte")
	}
	switch c.HealthCheckMethod {
	case CheckTCP, CheckHTTP:
	default:
		d.fail("health_check_method", "unknown method %q (use %q or %q)", c.HealthCheckMethod, CheckTCP, CheckHTTP)
	}
	hc := &c.HealthCheck
	if !strings.HasPrefix(hc.Path, "/") || strings.ContainsAny(hc.Path, " \t\r\n") {
		d.fail("health_check.path", "must be a request path starting with \"/\", not %q", hc.Path)
	}
	if r, err := parseStatusRanges(hc.ExpectStatus); err != nil {
		d.fail("health_check.expect_status", "%v", err)
	} else {
		hc.Expect = r
	}
	if hc.Rise < 1 || hc.Rise > 100 {
		d.fail("health_check.rise", "must be 1..100, not %d", hc.Rise)
	}
	if hc.Fall < 1 || hc.Fall > 100 {
		d.fail("health_check.fall", "must be 1..100, not %d", hc.Fall)
	}
	d.sticky(&c.Sticky)
	d.tls(c)
	o := &c.Outlier
	if o.Consecutive5xx < 0 || o.Consecutive5xx > 1000 {
		d.fail("outlier.consecutive_5xx", "must be 0 (off) to 1000, not %d", o.Consecutive5xx)
	}
	if o.ConsecutiveGatewayErrors < 0 || o.ConsecutiveGatewayErrors > 1000 {
		d.fail("outlier.consecutive_gateway_errors", "must be 0 (off) to 1000, not %d", o.ConsecutiveGatewayErrors)
	}
	d.positive("outlier.interval", o.Interval)
	d.positive("outlier.base_ejection_time", o.BaseEjectionTime)
	if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
		d.fail("outlier.max_ejection_percent", "must be 0..100, not %d", o.MaxEjectionPercent)
	}

	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		d.fail("log_level", "unknown level %q (use debug, info, warn or error)", c.LogLevel)
	}
	ids := make(map[string]int, len(c.Backends))
	for i := range c.Backends {
		b := &c.Backends[i]
		p := fmt.Sprintf("backends[%d]", i)
		if !d.checkBackend(p, b) {
			continue
		}
		if j, dup := ids[b.ID]; dup {
			d.fail(p+".id", "duplicate id %q (also backends[%d]; give each backend its own \"id\")", b.ID, j)
		} else {
			ids[b.ID] = i
		}
	}
}

// checkBackend validates b and fills its derived fields; it reports whether
// b's URL and id are good.
func (d *decoder) checkBackend(path string, b *Backend) bool {
	resolved := b.resolve()
	if resolved != nil {
		d.fail(join(path, "url"), "%v", resolved)
	}
	if b.Weight < 0 || b.Weight > MaxWeight {
		d.fail(join(path, "weight"), "must be 0..%d, not %d", MaxWeight, b.Weight)
	}
	if b.MaxConns < 0 {
		d.fail(join(path, "max_conns"), "must be 0 (unlimited) or more, not %d", b.MaxConns)
	}
	if err := checkState(&b.State); err != nil {
		d.fail(join(path, "state"), "%v", err)
	}
	if resolved != nil {
		return false
	}
	if err := CheckID(b.ID); err != nil {
		d.fail(join(path, "id"), "%v", err)
		return false
	}
	return true
}

func (d *decoder) sticky(st *Sticky) {
	switch st.Mode {
	case StickyOff, StickyIP, StickyCookie:
	case StickyHeader:
		if st.Header == "" {
			d.fail("sticky.header", `must name a header when sticky.mode is "header"`)
		}
	default:
		d.fail("sticky.mode", "unknown mode %q (use %q, %q, %q or %q)", st.Mode, StickyOff, StickyIP, StickyHeader, StickyCookie)
	}
	if st.Header != "" && !isToken(st.Header) {
		d.fail("sticky.header", "%q is not a valid header name", st.Header)
	}
	if !isToken(st.Cookie) {
		d.fail("sticky.cookie", "%q is not a valid cookie name", st.Cookie)
	}
	if st.CookieSecret != "" && len(st.CookieSecret) < 16 {
		d.fail("sticky.cookie_secret", "must be at least 16 characters (or empty for a random one at each start)")
	}
	if st.BalanceFactor != 0 && (st.BalanceFactor < 1 || st.BalanceFactor > 100) {
		d.fail("sticky.balance_factor", "must be 0 (off) or between 1 and 100, such as 1.25; not %g", st.BalanceFactor)
	}
	st.Trusted = nil
	for i, s := range st.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				d.fail(fmt.Sprintf("sticky.trusted_proxies[%d]", i), "%q is not a CIDR such as \"10.0.0.0/8\" or an IP address", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		st.Trusted = append(st.Trusted, p.Masked())
	}
}

// tls checks the "tls" object's own values; the certificate files are read
// and paired by package tlsconf, which -check and startup also run.
func (d *decoder) tls(c *Config) {
	t := c.TLS
	if t == nil {
		return
	}
	d.port("tls.port", t.Port)
	d.bindAddr("tls.bind", t.Bind)
	if t.Port == c.Port || t.Port == c.AdminPort {
		d.fail("tls.port", "must differ from port and admin_port (%d)", t.Port)
	}
	switch t.MinVersion {
	case "1.2", "1.3":
	default:
		d.fail("tls.min_version", `must be "1.2" or "1.3", not %q`, t.MinVersion)
	}
	if len(t.Certificates) == 0 {
		d.fail("tls.certificates", "needs at least one certificate to serve HTTPS")
	}
	for i, cert := range t.Certificates {
		p := fmt.Sprintf("tls.certificates[%d]", i)
		if cert.CertFile == "" {
			d.fail(p+".cert_file", "is required")
		}
		if cert.KeyFile == "" {
			d.fail(p+".key_file", "is required")
		}
	}
}

// isToken reports whether s is a non-empty RFC 9110 token, as header and
// cookie names must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// adminToken reads admin_token_file and refuses an admin API open beyond
// loopback without a token.
func (d *decoder) adminToken(c *Config) {
	if c.AdminToken != "" && c.AdminTokenFile != "" {
		d.fail("admin_token_file", "set admin_token or admin_token_file, not both")
		return
	}
	if c.AdminTokenFile != "" {
		data, err := os.ReadFile(c.AdminTokenFile)
		if err != nil {
			d.fail("admin_token_file", "cannot read: %v", errors.Unwrap(err))
			return
		}
		c.AdminToken = strings.TrimSpace(string(data))
		if c.AdminToken == "" {
			d.fail("admin_token_file", "%s is empty", c.AdminTokenFile)
			return
		}
	}
	if strings.ContainsAny(c.AdminToken, " \t\r\n") {
		d.fail("admin_token", "must not contain white space")
	}
	if ip, err := netip.ParseAddr(c.AdminBind); err == nil && !ip.IsLoopback() && c.AdminToken == "" {
		d.fail("admin_bind", "%s is not a loopback address: set admin_token or admin_token_file so the admin API is not open to the network", c.AdminBind)
	}
}

func (d *decoder) port(path string, p int) {
	if p < 1 || p > 65535 {
		d.fail(path, "must be 1..65535, not %d", p)
	}
}

func (d *decoder) bindAddr(path, s string) {
	if _, err := netip.ParseAddr(s); err != nil {
		d.fail(path, "must be an IP address such as \"0.0.0.0\", \"127.0.0.1\" or \"::\", not %q", s)
	}
}

func (d *decoder) positive(path string, v time.Duration) {
	if v <= 0 {
		d.fail(path, "must be greater than 0")
	}
}

// CheckID reports whether id can name a backend: it appears in admin API
// paths, so it is limited to letters, digits and ".-_:[]" (the brackets for
// the default id of an IPv6 backend).
func CheckID(id string) error {
	if id == "" || len(id) > 128 {
		return errors.New("must be 1 to 128 characters")
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune(".-_:[]", r)
		if !ok {
			return fmt.Errorf("%q may hold only letters, digits and \".-_:[]\"", id)
		}
	}
	return nil
}

// resolve parses and checks the backend's URL, filling Scheme, Host, Addr
// and, when empty, ID.
func (b *Backend) resolve() error {
	u, err := url.Parse(b.URL)
	if err == nil && (u.Opaque != "" || u.Host == "" && u.Scheme == "") {
		return fmt.Errorf("%q has no scheme: write it as http://host:port", b.URL)
	}
	if err != nil {
		return fmt.Errorf("invalid URL %q (want http://host:port or https://host:port)", b.URL)
	}
	switch u.Scheme {
	case "http", "https":
	default:
		return fmt.Errorf("scheme of %q must be http or https", b.URL)
	}
	if u.User != nil {
		return fmt.Errorf("%q must not carry user information", b.URL)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return fmt.Errorf("%q must not have a path, query or fragment: fastlb forwards the client's", b.URL)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("%q has no host", b.URL)
	}
	port := u.Port()
	if port == "" {
		if strings.HasSuffix(u.Host, ":") {
			return fmt.Errorf("%q has an empty port", b.URL)
		}
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port of %q must be 1..65535", b.URL)
	}
	b.Scheme, b.Host, b.Addr = u.Scheme, host, net.JoinHostPort(host, port)
	if b.ID == "" {
		b.ID = b.Addr
	}
	return nil
}

// ResolveBackend checks a backend built in code the way Load checks the
// file's backends, and fills its derived fields.
func ResolveBackend(b *Backend) error {
	d := &decoder{}
	d.checkBackend("", b)
	if len(d.problems) > 0 {
		return &Error{Problems: d.problems}
	}
	return nil
}

// checkState accepts a backend state, "" meaning active.
func checkState(s *string) error {
	switch *s {
	case "":
		*s = StateActive
	case StateActive, StateDrain, StateMaint:
	default:
		return fmt.Errorf("unknown state %q (use %q, %q or %q)", *s, StateActive, StateDrain, StateMaint)
	}
	return nil
}

func parseStatusRanges(s string) ([]StatusRange, error) {
	bad := fmt.Errorf("invalid status list %q (use codes and ranges such as \"200-399\" or \"200,204\")", s)
	var out []StatusRange
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b, err2 := strconv.Atoi(strings.TrimSpace(hi))
		if err1 != nil || err2 != nil || a < 100 || b > 599 || a > b {
			return nil, bad
		}
		out = append(out, StatusRange{a, b})
	}
	return out, nil
}

// ReplaceKey returns the JSON object data with the value of key replaced by
// value (added at the end when absent). Every other member keeps its place
// and its text as written, so an operator's file keeps its other settings.
func ReplaceKey(data []byte, key string, value []byte) ([]byte, error) {
	if err := syntaxCheck(data); err != nil {
		return nil, err
	}
	d := &decoder{}
	members := d.object("", data)
	if len(d.problems) > 0 {
		return nil, &Error{Problems: d.problems}
	}
	var out bytes.Buffer
	out.WriteString("{\n")
	replaced := false
	write := func(k string, v []byte, last bool) {
		kb, _ := json.Marshal(k)
		out.WriteString("  ")
		out.Write(kb)
		out.WriteString(": ")
		out.Write(v)
		if !last {
			out.WriteByte(',')
		}
		out.WriteByte('\n')
	}
	for i, m := range members {
		v := bytes.TrimSpace(m.value)
		if m.key == key {
			v, replaced = value, true
		}
		write(m.key, v, i == len(members)-1 && replaced)
	}
	if !replaced {
		write(key, value, true)
	}
	out.WriteString("}\n")
	return out.Bytes(), nil
}
