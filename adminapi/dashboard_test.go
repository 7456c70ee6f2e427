package adminapi

import (
	"regexp"
	"strings"
	"testing"
)

// The page and its files are served without the token, with a policy that
// lets them reach their own origin only; the data behind them needs it.
func TestDashboardFiles(t *testing.T) {
	h := startAdmin(t, `{"admin_token": "s3cret", "backends": []}`)
	for path, ctype := range map[string]string{
		"/":           "text/html; charset=utf-8",
		"/ui/app.js":  "text/javascript; charset=utf-8",
		"/ui/app.css": "text/css; charset=utf-8",
	} {
		code, body, hdr := h.call("GET", path, "")
		if code != 200 || hdr.Get("Content-Type") != ctype || len(body) < 500 {
			t.Errorf("GET %s without the token: %d %q, %d bytes", path, code, hdr.Get("Content-Type"), len(body))
		}
		csp := hdr.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") ||
			!strings.Contains(csp, "script-src 'self';") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
		if hdr.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", path)
		}
		// Nothing from elsewhere: the one absolute URL is SVG's namespace.
		for _, u := range regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s"')]*`).FindAllString(body, -1) {
			if u != "http://www.w3.org/2000/svg" {
				t.Errorf("GET %s refers to %s", path, u)
			}
		}
	}
	for _, path := range []string{"/api/v1/stats", "/api/v1/openapi.json"} {
		if code, _, _ := h.call("GET", path, ""); code != 401 {
			t.Errorf("GET %s without the token: %d", path, code)
		}
		if code, _, _ := h.call("GET", path, "", "Authorization", "Bearer s3cret"); code != 200 {
			t.Errorf("GET %s with the token: %d", path, code)
		}
	}
	for _, q := range []string{"since=-1", "since=1e9", "since=", "backends=none"} {
		if code, body, _ := h.call("GET", "/api/v1/stats?"+q, "", "Authorization", "Bearer s3cret"); code != 400 || !strings.Contains(body, `"error"`) {
			t.Errorf("GET /api/v1/stats?%s: %d %s", q, code, body)
		}
	}
}
