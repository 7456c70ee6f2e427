package proxy

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// TestMalformedResponses: an answer a backend botched is a 502, never passed on.
func TestMalformedResponses(t *testing.T) {
	h := startHarness(t, `"retries": 0, "health_check": {"fall": 100}`, 1)
	for _, kind := range []string{"two-cl", "bad-cl", "bad-status", "ctl-in-value", "short-body",
		"cl-and-te", "obs-fold", "space-before-colon", "bad-name"} {
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

// TestBrokenStreams: a streamed body that breaks off reaches the client
// visibly broken, never as a complete answer: cut short when its start
// went out, or as a connection closed without an answer when it breaks off
// before fastlb's first write.
func TestBrokenStreams(t *testing.T) {
	h := startHarness(t, `"retries": 0, "health_check": {"fall": 100}`, 1)
	for _, kind := range []string{"short-stream", "bad-chunk"} {
		t.Run(kind, func(t *testing.T) {
			resp, err := h.client.Get("http://" + h.addr + "/malformed/" + kind)
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("%v; want an answer cut short or none", err)
				}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("read %q, %v; want the body cut short (unexpected EOF)", body, err)
			}
		})
	}
	if code, _ := h.get("/"); code != 200 {
		t.Errorf("after the broken streams: %d", code)
	}
}
