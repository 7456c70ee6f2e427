package proxy

import (
	"strings"
	"testing"
)

// TestMalformedResponses: an answer a backend botched is a 502, never passed on.
func TestMalformedResponses(t *testing.T) {
	h := startHarness(t, `"retries": 0, "health_check": {"fall": 100}`, 1)
	for _, kind := range []string{"two-cl", "bad-cl", "bad-status", "ctl-in-value", "short-body"} {
		t.Run(kind, func(t *testing.T) {
			out := h.raw("GET /malformed/" + kind + " HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
			if !strings.HasPrefix(out, "HTTP/1.1 502") {
				t.Errorf("got %q, want 502", firstLine(out))
			}
			if strings.Contains(out, "hello") {
				t.Errorf("the malformed body reached the client:\n%s", out)
			}
		})
	}
}
