package proxy

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAccessLog(t *testing.T) {
	h := startHarness(t, "", 1)
	h.do("GET", "/echo?q=%22x%22", "", "X-Request-Id", "req-\"7\"")
	h.raw("GET /a\"b\\c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	h.backends[0].Close()
	h.do("POST", "/", "body")
	h.accessLog.flush()
	lines := strings.Split(strings.TrimSpace(h.access.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, got:\n%s", h.access)
	}
	type entry struct {
		Time       string   `json:"time"`
		Client     string   `json:"client"`
		Method     string   `json:"method"`
		URI        string   `json:"uri"`
		Status     int      `json:"status"`
		Backend    *string  `json:"backend"`
		DurationMs *float64 `json:"duration_ms"`
		Bytes      int      `json:"bytes"`
		RequestID  string   `json:"request_id"`
	}
	var es []entry
	for _, l := range lines {
		var e entry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("not JSON: %s: %v", l, err)
		}
		es = append(es, e)
	}
	if e := es[0]; e.Method != "GET" || e.URI != "/echo?q=%22x%22" || e.Status != 200 || e.Backend == nil || *e.Backend != "a" ||
		e.Client != "127.0.0.1" || e.Bytes == 0 || e.RequestID != `req-"7"` || e.DurationMs == nil || !strings.HasSuffix(e.Time, "Z") {
		t.Errorf("first line: %+v", e)
	}
	if e := es[1]; e.URI != `/a"b\c` || len(e.RequestID) != 33 {
		t.Errorf("second line: %+v", e)
	}
	if e := es[2]; e.Method != "POST" || e.Status != 502 || e.Backend == nil || *e.Backend != "a" {
		t.Errorf("failed request's line: %+v", e)
	}
}

func TestAppendJSONString(t *testing.T) {
	tests := map[string]string{
		"plain":                  `"plain"`,
		`q"b\`:                   `"q\"b\\"`,
		"ctl\x01\x7f\n":          `"ctl\u0001\u007f\u000a"`,
		"bad\xffutf8":            `"bad\ufffdutf8"`,
		"é✓":                     `"é✓"`,
		strings.Repeat("x", 600): `"` + strings.Repeat("x", 512) + `..."`,
	}
	for in, want := range tests {
		got := string(appendJSONString(nil, []byte(in)))
		if got != want {
			t.Errorf("appendJSONString(%q) = %s, want %s", in, got, want)
		}
		var s string
		if err := json.Unmarshal([]byte(got), &s); err != nil {
			t.Errorf("%s is not a JSON string: %v", got, err)
		}
	}
}
