package config

// JSON walking: the decoder that reads a configuration object member by
// member, reports each problem at its JSON path, and decodes scalars.

import (
	"bytes"
	"errors"
	"fmt"
	"math"
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

	pools    []member          // the members of "pools", resolved once the top level is decoded
	poolKeys []map[string]bool // for each of Config.Pools, the keys it sets
	// routeLimits are the routes' rate_limit members, resolved like pools.
	routeLimits []later
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
