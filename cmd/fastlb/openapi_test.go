package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"fastlb/testbackends"
)

func init() {
	// The dashboard's files are text like any other.
	for _, ct := range []string{"text/html", "text/javascript", "text/css"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
	}
}

// apiDoc is the OpenAPI document a running fastlb serves, validated.
type apiDoc struct {
	doc    *openapi3.T
	router routers.Router
	admin  string // base URL
	token  string
}

func loadAPIDoc(t *testing.T, p *process, token string) *apiDoc {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.adminAddr+"/api/v1/openapi.json", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/v1/openapi.json: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	doc, err := openapi3.NewLoader().LoadFromData(body)
	if err != nil {
		t.Fatalf("the document does not load: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Errorf("openapi %q, want 3.1.x", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the document is not valid: %v", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &apiDoc{doc: doc, router: router, admin: "http://" + p.adminAddr, token: token}
}

// call sends a real request to the admin API, checks that the request and
// its answer (status included) are what the document says, and returns the
// answer.
func (d *apiDoc) call(t *testing.T, method, path, body string, withToken bool) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, d.admin+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if withToken {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	route, params, err := d.router.FindRoute(req)
	if err != nil {
		t.Errorf("%s %s: not in the document: %v", method, path, err)
		return resp.StatusCode, string(got)
	}
	opts := &openapi3filter.Options{IncludeResponseStatus: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if body != "" {
		req.Body = io.NopCloser(strings.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
	}
	// Requests the document calls invalid are sent on purpose below, to
	// check fastlb's answer to them; only well-formed ones must pass.
	reqErr := openapi3filter.ValidateRequest(context.Background(), in)
	if reqErr != nil && resp.StatusCode < 400 {
		t.Errorf("%s %s %s: accepted (%d) but the document calls it invalid: %v", method, path, body, resp.StatusCode, reqErr)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Body: io.NopCloser(bytes.NewReader(got)), Options: opts}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s %s: the answer %d %s is not what the document says: %v", method, path, resp.StatusCode, truncate(got), err)
	}
	return resp.StatusCode, string(got)
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// TestOpenAPIAnswers: every route of the admin API answers, for good and bad
// requests, as the document it serves says.
func TestOpenAPIAnswers(t *testing.T) {
	a, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "a"})
	defer a.Close()
	c, _ := testbackends.Start("127.0.0.1:0", testbackends.Options{Name: "c"})
	defer c.Close()
	const token = "openapi-token"
	p := startBinary(t, fmt.Sprintf(`, "admin_token": %q, "health_check_frequency": "100ms",
	  "pools": {"api": {"backends": [{"url": %q, "id": "c", "max_conns": 4}], "strategy": "least-conn", "sticky": {"mode": "ip"}},
	    "spare": {"backends": []}},
	  "routes": [{"name": "api", "host": "api.example", "path_prefix": "/v1/", "strip_prefix": true, "pool": "api",
	    "set_request_headers": {"X-Api": "1"}, "remove_request_headers": ["X-Debug"], "set_response_headers": {"X-Served-By": "fastlb"}},
	    {"path_prefix": "/static/", "pool": "default"}]`, token, c.URL()), a)
	d := loadAPIDoc(t, p, token)
	idA := strings.TrimPrefix(a.URL(), "http://")

	// Some traffic, so that every counter and sample has a value.
	for range 20 {
		get(t, "http://"+p.addr+"/")
	}
	// and until the samples hold it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var st struct {
			Pools []struct {
				Series struct{ RPS []float64 } `json:"series"`
			} `json:"pools"`
		}
		adminJSON(t, p, token, "/api/v1/stats", &st)
		if len(st.Pools) == 3 && slices.ContainsFunc(st.Pools[0].Series.RPS, func(v float64) bool { return v > 0 }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sample with requests: %+v", st)
		}
		get(t, "http://"+p.addr+"/")
		time.Sleep(100 * time.Millisecond)
	}

	type call struct {
		method, path, body string
		token              bool
		status             int
	}
	for _, tc := range []call{
		{"GET", "/healthz", "", false, 200},
		{"GET", "/", "", false, 200},
		{"GET", "/ui/app.js", "", false, 200},
		{"GET", "/ui/app.css", "", false, 200},
		{"GET", "/metrics", "", true, 200},
		{"GET", "/metrics", "", false, 401},
		{"GET", "/api/v1/status", "", true, 200},
		{"GET", "/api/v1/status", "", false, 401},
		{"GET", "/api/v1/stats", "", true, 200},
		{"GET", "/api/v1/stats?since=1", "", true, 200},
		{"GET", "/api/v1/stats?since=yesterday", "", true, 400},
		{"GET", "/api/v1/stats?backends=last", "", true, 200},
		{"GET", "/api/v1/stats?backends=some", "", true, 400},
		{"GET", "/api/v1/backends", "", true, 200},
		{"GET", "/api/v1/backends/" + idA, "", true, 200},
		{"GET", "/api/v1/backends/nope", "", true, 404},
		{"GET", "/api/v1/pools", "", true, 200},
		{"GET", "/api/v1/pools/api", "", true, 200},
		{"GET", "/api/v1/pools/nope", "", true, 404},
		{"GET", "/api/v1/pools/api/backends", "", true, 200},
		{"GET", "/api/v1/pools/nope/backends", "", true, 404},
		{"GET", "/api/v1/pools/api/backends/c", "", true, 200},
		{"GET", "/api/v1/routes", "", true, 200},
		{"GET", "/api/v1/config", "", true, 200},
		{"GET", "/api/v1/cluster", "", true, 404},
		{"GET", "/api/v1/openapi.json", "", true, 200},
		{"GET", "/debug/pprof/cmdline", "", true, 200},
		{"POST", "/api/v1/backends", `{"url": "http://127.0.0.1:9", "id": "x", "weight": 2}`, true, 201},
		{"POST", "/api/v1/backends", `{"url": "http://127.0.0.1:9", "id": "x"}`, true, 409},
		{"POST", "/api/v1/backends", `{"url": "ftp://127.0.0.1:9"}`, true, 400},
		{"POST", "/api/v1/backends", `[1]`, true, 400},
		{"POST", "/api/v1/backends", `{"url": "http://127.0.0.1:10"}`, false, 401},
		{"POST", "/api/v1/pools/api/backends", `{"url": "http://127.0.0.1:11", "id": "y", "state": "drain"}`, true, 201},
		{"POST", "/api/v1/pools/nope/backends", `{"url": "http://127.0.0.1:11"}`, true, 404},
		{"PATCH", "/api/v1/backends/x", `{"weight": 5, "state": "maint"}`, true, 200},
		{"PATCH", "/api/v1/backends/x", `{"weight": 5000}`, true, 400},
		{"PATCH", "/api/v1/backends/x", `{}`, true, 400},
		{"PATCH", "/api/v1/backends/nope", `{"weight": 1}`, true, 404},
		{"PATCH", "/api/v1/pools/api/backends/y", `{"state": "active"}`, true, 200},
		{"DELETE", "/api/v1/backends/x", "", true, 204},
		{"DELETE", "/api/v1/backends/x", "", true, 404},
		{"DELETE", "/api/v1/pools/api/backends/y", "", true, 204},
		{"POST", "/api/v1/reload", "", true, 200},
	} {
		if status, body := d.call(t, tc.method, tc.path, tc.body, tc.token); status != tc.status {
			t.Errorf("%s %s %s: %d %s, want %d", tc.method, tc.path, tc.body, status, truncate([]byte(body)), tc.status)
		}
	}

	// A reload the file refuses.
	orig, _ := os.ReadFile(p.cfgPath)
	os.WriteFile(p.cfgPath, []byte(`{"port": "eighty"}`), 0o600)
	if status, body := d.call(t, "POST", "/api/v1/reload", "", true); status != 400 {
		t.Errorf("reload of a bad file: %d %s", status, body)
	}
	os.WriteFile(p.cfgPath, orig, 0o600)
}
