package adminapi

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"fastlb/config"
)

const poolsConfig = `{
  "port": 9100,
  "admin_persist": true,
  "backends": ["http://127.0.0.1:9001"],
  "pools": {
    "api": {
      "strategy": "least-conn",
      "sticky": {"mode": "header", "header": "X-User"},
      "backends": [
        "http://127.0.0.1:9101"
      ]
    },
    "shop": {"backends": []}
  },
  "routes": [
    {"path_prefix": "/static/", "pool": "shop"},
    {"host": "*.example.com", "pool": "shop"},
    {"name": "api", "host": "api.example.com", "path_prefix": "/v1/", "pool": "api", "strip_prefix": true},
    {"host": "api.example.com", "pool": "api"}
  ],
  "log_level": "warn"
}
`

func TestPoolsAndRoutes(t *testing.T) {
	h := startAdmin(t, poolsConfig)
	code, body, _ := h.call("GET", "/api/v1/pools", "")
	var pools []Pool
	if err := json.Unmarshal([]byte(body), &pools); code != 200 || err != nil {
		t.Fatalf("%d %s %v", code, body, err)
	}
	var names []string
	for _, p := range pools {
		names = append(names, p.Name+":"+p.Strategy+":"+p.StickyMode)
	}
	if strings.Join(names, " ") != "default:round-robin:off api:least-conn:header shop:round-robin:off" ||
		len(pools[1].Backends) != 1 || pools[1].Backends[0].ID != "127.0.0.1:9101" {
		t.Errorf("pools %+v", pools)
	}
	if code, body, _ := h.call("GET", "/api/v1/pools/api", ""); code != 200 || !strings.Contains(body, `"name": "api"`) {
		t.Errorf("one pool: %d %s", code, body)
	}
	for _, path := range []string{"/api/v1/pools/nope", "/api/v1/pools/nope/backends", "/api/v1/pools/nope/backends/x"} {
		if code, body, _ := h.call("GET", path, ""); code != 404 || !strings.Contains(body, `no pool \"nope\"`) {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	if code, body, _ := h.call("POST", "/api/v1/pools/nope/backends", `{"url": "http://127.0.0.1:9"}`); code != 404 {
		t.Errorf("POST to an unknown pool: %d %s", code, body)
	}

	// The routes in the order they are matched.
	code, body, _ = h.call("GET", "/api/v1/routes", "")
	var routes []Route
	if err := json.Unmarshal([]byte(body), &routes); code != 200 || err != nil {
		t.Fatalf("%d %s %v", code, body, err)
	}
	var order []string
	for _, r := range routes {
		order = append(order, r.Label+"="+r.Host+r.PathPrefix)
	}
	if strings.Join(order, " ") != "api=api.example.com/v1/ 3=api.example.com 1=*.example.com 0=/static/" {
		t.Errorf("routes %v", order)
	}
}

// Backend changes in a pool go to that pool and are written into its place
// in the file, every other byte as it was.
func TestPersistPool(t *testing.T) {
	h := startAdmin(t, poolsConfig)
	code, body, hdr := h.call("POST", "/api/v1/pools/api/backends", `{"url": "http://127.0.0.1:9102", "id": "api2"}`)
	if code != 201 || hdr.Get("Location") != "/api/v1/pools/api/backends/api2" {
		t.Fatalf("%d %s %v", code, body, hdr)
	}
	if code, body, _ := h.call("PATCH", "/api/v1/pools/api/backends/api2", `{"weight": 5}`); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if code, _, _ := h.call("GET", "/api/v1/backends/api2", ""); code != 404 {
		t.Errorf("a pool's backend shows in the default pool: %d", code)
	}
	if code, body, _ := h.call("POST", "/api/v1/pools/shop/backends", `{"url": "http://127.0.0.1:9201"}`); code != 201 {
		t.Fatalf("%d %s", code, body)
	}
	data, err := os.ReadFile(h.rt.path)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(poolsConfig, `      "backends": [
        "http://127.0.0.1:9101"
      ]`, `      "backends": [
        "http://127.0.0.1:9101",
        {
          "url": "http://127.0.0.1:9102",
          "weight": 5,
          "id": "api2"
        }
      ]`, 1)
	want = strings.Replace(want, `"shop": {"backends": []}`, `"shop": {"backends": [
      "http://127.0.0.1:9201"
    ]}`, 1)
	if string(data) != want {
		t.Errorf("file after the changes:\n%s\nwant\n%s", data, want)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.PoolNamed("api").Backends) != 2 || len(cfg.Backends) != 1 {
		t.Errorf("parsed back: %+v", cfg.Pools)
	}
	// GET /api/v1/config shows each pool's backends in force.
	_, view, _ := h.call("GET", "/api/v1/config", "")
	if !strings.Contains(view, `"id": "api2"`) || !strings.Contains(view, `"http://127.0.0.1:9201"`) {
		t.Errorf("config view: %s", view)
	}
}
