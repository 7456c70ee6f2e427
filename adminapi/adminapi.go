// Package adminapi serves fastlb's REST admin API (fasthttp/router): status,
// Prometheus metrics, backend management, the configuration in force,
// reload, the recent samples and the API's OpenAPI description, and the
// dashboard page that reads them. JSON in and out; errors are
// {"error": "..."} with a fitting status.
package adminapi

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/fasthttp/router"
	json "github.com/goccy/go-json"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/pprofhandler"

	"fastlb/cluster"
	"fastlb/config"
	"fastlb/internal/slogf"
	"fastlb/routing"
	"fastlb/stats"
	"fastlb/upstream"
)

// Runtime is what the admin API needs from the running process.
type Runtime interface {
	// Config is the configuration in force.
	Config() *config.Config
	// Pools are the pools in force: the default pool first, then the
	// others in the order of the configuration.
	Pools() []*upstream.Pool
	// Reload re-reads the configuration file and applies it, as SIGHUP does.
	Reload() (*ReloadResult, error)
	// Exclusive runs fn while no reload runs, and no other fn: a change of
	// the backends and its write-back to the file (admin_persist) happen
	// together, never with a reload reading the file between them.
	Exclusive(fn func())
	// Fleet is the fleet this instance belongs to, nil when none: the
	// backends are then changed in it, not here.
	Fleet() Fleet
}

// Fleet is where the backends live when instances share them (package
// cluster): a change is made there and answered once this instance has
// applied it.
type Fleet interface {
	Add(pool string, b config.Backend) (rev int64, err error)
	Update(pool, id string, weight *int, state *string) (rev int64, err error)
	Remove(pool, id string) (rev int64, err error)
	WaitApplied(rev int64, d time.Duration) bool
	Status() cluster.Status
}

// ReloadResult tells what a reload changed.
type ReloadResult struct {
	// Backends is what changed of the default pool's backends.
	Backends upstream.Diff `json:"backends"`
	// Pools is what changed of the other pools' backends, by pool: a pool
	// added lists all its backends as added, one removed as removed.
	Pools map[string]upstream.Diff `json:"pools"`
	// Applied names the settings whose new values are in force.
	Applied []string `json:"applied"`
	// RestartRequired names changed settings that take effect only after a
	// restart (listeners, buffer sizes); their old values stay in force.
	RestartRequired []string `json:"restart_required"`
}

// Options configure the admin API.
type Options struct {
	Runtime    Runtime
	ConfigPath string       // the file admin_persist writes back to
	Metrics    *metrics.Set // fastlb's own metrics; the pool's and Go's are added
	Version    string
	Started    time.Time
	Logger     *slog.Logger
	// Stats keeps the recent samples the dashboard draws; one that is
	// never run (no samples) when nil.
	Stats *stats.Recorder
}

// API is the admin API's handler. It is safe for concurrent use.
type API struct {
	opts    Options
	router  *router.Router
	handler fasthttp.RequestHandler
}

// New builds the admin API's routes.
func New(opts Options) *API {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Stats == nil {
		opts.Stats = stats.New(opts.Runtime.Pools)
	}
	a := &API{opts: opts}
	r := router.New()
	a.router = r
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleOPTIONS = false
	r.NotFound = func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, fasthttp.StatusNotFound, "no route for %s %s", ctx.Method(), ctx.Path())
	}
	r.MethodNotAllowed = func(ctx *fasthttp.RequestCtx) {
		writeError(ctx, fasthttp.StatusMethodNotAllowed, "method %s not allowed on %s (allowed: %s)",
			ctx.Method(), ctx.Path(), ctx.Response.Header.Peek("Allow"))
	}
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		a.opts.Logger.Error("admin API handler panicked", "method", string(ctx.Method()), "path", string(ctx.Path()), "panic", fmt.Sprint(v))
		writeError(ctx, fasthttp.StatusInternalServerError, "internal error")
	}
	r.GET("/healthz", func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("ok\n")
	})
	r.GET("/metrics", a.auth(a.metrics))
	r.GET("/", asset("ui/index.html", "text/html; charset=utf-8"))
	r.GET("/ui/app.js", asset("ui/app.js", "text/javascript; charset=utf-8"))
	r.GET("/ui/app.css", asset("ui/app.css", "text/css; charset=utf-8"))
	v1 := r.Group("/api/v1")
	v1.GET("/openapi.json", a.auth(a.openAPI))
	v1.GET("/stats", a.auth(a.stats))
	v1.GET("/status", a.auth(a.status))
	// The default pool's backends, and every pool's under its name.
	for _, prefix := range []string{"", "/pools/{pool}"} {
		v1.GET(prefix+"/backends", a.auth(a.listBackends))
		v1.POST(prefix+"/backends", a.auth(a.addBackend))
		v1.GET(prefix+"/backends/{id}", a.auth(a.getBackend))
		v1.PATCH(prefix+"/backends/{id}", a.auth(a.patchBackend))
		v1.DELETE(prefix+"/backends/{id}", a.auth(a.deleteBackend))
	}
	v1.GET("/pools", a.auth(a.listPools))
	v1.GET("/pools/{pool}", a.auth(a.getPool))
	v1.GET("/routes", a.auth(a.listRoutes))
	v1.GET("/cluster", a.auth(a.cluster))
	v1.GET("/config", a.auth(a.config))
	v1.POST("/reload", a.auth(a.reload))
	r.GET("/debug/pprof/{profile:*}", a.auth(pprofhandler.PprofHandler))
	a.handler = r.Handler
	return a
}

// Handler is the admin API's request handler.
func (a *API) Handler(ctx *fasthttp.RequestCtx) {
	if ctx.Request.IsBodyStream() && !readBody(ctx) {
		return
	}
	a.handler(ctx)
}

// readBody reads a streamed request body of at most maxBody bytes into the
// request, or answers 413. The server streams bodies so that it can read and
// drop a modest excess after the 413 instead of resetting the connection
// under a client that is still sending, which would lose the answer.
func readBody(ctx *fasthttp.RequestCtx) bool {
	req := &ctx.Request
	if req.Header.ContentLength() > maxBody {
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "cannot read the request: body larger than %d bytes", maxBody)
		return false
	}
	body, err := io.ReadAll(io.LimitReader(req.BodyStream(), maxBody+1))
	switch {
	case err != nil:
		ctx.SetConnectionClose()
		writeError(ctx, fasthttp.StatusBadRequest, "cannot read the request: %s", errorCause(err))
		return false
	case len(body) > maxBody:
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, "cannot read the request: body larger than %d bytes", maxBody)
		return false
	}
	req.SetBody(body)
	return true
}

// NewServer returns the admin API's fasthttp server.
func (a *API) NewServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:               a.Handler,
		ErrorHandler:          errorHandler,
		Name:                  "fastlb-admin",
		MaxRequestBodySize:    maxBody,
		StreamRequestBody:     true,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           60 * time.Second,
		CloseOnShutdown:       true,
		SecureErrorLogMessage: true,
		Logger:                slogf.Debug(a.opts.Logger),
	}
}

// maxBody bounds request bodies of the admin API.
const maxBody = 64 << 10

func errorHandler(ctx *fasthttp.RequestCtx, err error) {
	status := fasthttp.StatusBadRequest
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		status = fasthttp.StatusRequestEntityTooLarge
	}
	ctx.SetConnectionClose()
	writeError(ctx, status, "cannot read the request: %s", errorCause(err))
}

func errorCause(err error) string {
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		return fmt.Sprintf("body larger than %d bytes", maxBody)
	}
	return "malformed HTTP"
}

// auth requires "Authorization: Bearer TOKEN" when a token is configured.
// The comparison takes the same time whatever the token sent.
func (a *API) auth(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		token := a.opts.Runtime.Config().AdminToken
		if token != "" {
			got, ok := bytes.CutPrefix(ctx.Request.Header.Peek("Authorization"), []byte("Bearer "))
			want := sha256.Sum256([]byte(token))
			have := sha256.Sum256(bytes.TrimSpace(got))
			if !ok || subtle.ConstantTimeCompare(want[:], have[:]) != 1 {
				ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="fastlb"`)
				writeError(ctx, fasthttp.StatusUnauthorized, "missing or wrong bearer token")
				return
			}
		}
		next(ctx)
	}
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, "cannot encode the answer: %v", err)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(body, '\n'))
}

func writeError(ctx *fasthttp.RequestCtx, status int, format string, args ...any) {
	body, _ := json.Marshal(map[string]string{"error": fmt.Sprintf(format, args...)})
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(body, '\n'))
}

func (a *API) metrics(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/plain; version=0.0.4; charset=utf-8")
	w := ctx.Response.BodyWriter()
	if a.opts.Metrics != nil {
		a.opts.Metrics.WritePrometheus(w)
	}
	upstream.WriteMetrics(w, a.opts.Runtime.Pools())
	metrics.WriteProcessMetrics(w)
}

// Status is the answer of GET /api/v1/status.
type Status struct {
	Version        string    `json:"version"`
	PID            int       `json:"pid"`
	StartedAt      time.Time `json:"started_at"`
	UptimeSeconds  float64   `json:"uptime_seconds"`
	Strategy       string    `json:"strategy"`
	StickyMode     string    `json:"sticky_mode"`
	Pools          int       `json:"pools"`
	Routes         int       `json:"routes"`
	Backends       int       `json:"backends"`
	Healthy        int       `json:"healthy"`
	Eligible       int       `json:"eligible"`
	ActiveRequests int64     `json:"active_requests"`
	RequestsTotal  uint64    `json:"requests_total"`
}

// status counts the backends of every pool; strategy and sticky mode are
// the default pool's.
func (a *API) status(ctx *fasthttp.RequestCtx) {
	cfg := a.opts.Runtime.Config()
	pools := a.opts.Runtime.Pools()
	s := Status{
		Version:       a.opts.Version,
		PID:           os.Getpid(),
		StartedAt:     a.opts.Started.UTC(),
		UptimeSeconds: time.Since(a.opts.Started).Round(time.Millisecond).Seconds(),
		Strategy:      cfg.Strategy,
		StickyMode:    cfg.Sticky.Mode,
		Pools:         len(pools),
		Routes:        len(cfg.Routes),
	}
	for _, p := range pools {
		snap := p.Snapshot()
		s.Backends += len(snap.All)
		s.Eligible += len(snap.Eligible)
		for _, b := range snap.All {
			if b.Healthy() {
				s.Healthy++
			}
			s.ActiveRequests += b.Active()
			s.RequestsTotal += b.Requests()
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, s)
}

// pool returns the pool a request's path names ({pool}; the default pool
// when it names none), or answers 404 and returns nil.
func (a *API) pool(ctx *fasthttp.RequestCtx) *upstream.Pool {
	name := config.DefaultPool
	if raw, ok := ctx.UserValue("pool").(string); ok {
		name = raw
	}
	for _, p := range a.opts.Runtime.Pools() {
		if p.Name() == name {
			return p
		}
	}
	writeError(ctx, fasthttp.StatusNotFound, "no pool %q", name)
	return nil
}

// Pool is a pool as the admin API shows it.
type Pool struct {
	Name       string    `json:"name"`
	Strategy   string    `json:"strategy"`
	StickyMode string    `json:"sticky_mode"`
	Healthy    int       `json:"healthy"`  // backends up
	Eligible   int       `json:"eligible"` // backends that may take new requests
	Backends   []Backend `json:"backends"`
}

func (a *API) viewPool(p *upstream.Pool) Pool {
	v := Pool{Name: p.Name()}
	if pc := a.opts.Runtime.Config().PoolNamed(p.Name()); pc != nil {
		v.Strategy, v.StickyMode = pc.Strategy, pc.Sticky.Mode
	}
	snap := p.Snapshot()
	v.Eligible = len(snap.Eligible)
	v.Backends = make([]Backend, len(snap.All))
	for i, b := range snap.All {
		v.Backends[i] = view(b)
		if b.Healthy() {
			v.Healthy++
		}
	}
	return v
}

func (a *API) listPools(ctx *fasthttp.RequestCtx) {
	pools := a.opts.Runtime.Pools()
	out := make([]Pool, len(pools))
	for i, p := range pools {
		out[i] = a.viewPool(p)
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func (a *API) getPool(ctx *fasthttp.RequestCtx) {
	if p := a.pool(ctx); p != nil {
		writeJSON(ctx, fasthttp.StatusOK, a.viewPool(p))
	}
}

// Route is a route as the admin API shows it.
type Route struct {
	// Label names the route in metrics and the access log: its name, or
	// its index in the file.
	Label string `json:"label"`
	config.RouteView
}

// listRoutes answers the routes in the order they are matched.
func (a *API) listRoutes(ctx *fasthttp.RequestCtx) {
	routes := a.opts.Runtime.Config().Routes
	out := make([]Route, 0, len(routes))
	for _, i := range routing.Order(routes) {
		out = append(out, Route{Label: routes[i].Label(), RouteView: config.ViewRoute(&routes[i])})
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func (a *API) cluster(ctx *fasthttp.RequestCtx) {
	f := a.opts.Runtime.Fleet()
	if f == nil {
		writeError(ctx, fasthttp.StatusNotFound, `not in a fleet: the configuration has no "cluster"`)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, f.Status())
}

func (a *API) config(ctx *fasthttp.RequestCtx) {
	writeJSON(ctx, fasthttp.StatusOK, Render(a.opts.Runtime.Config(), a.opts.Runtime.Pools()))
}

func (a *API) reload(ctx *fasthttp.RequestCtx) {
	res, err := a.opts.Runtime.Reload()
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "reload refused, the configuration in force is unchanged: %s", oneLine(err))
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, res)
}

// oneLine joins a multi-line error (one line per config problem) with "; ".
func oneLine(err error) string {
	return string(bytes.ReplaceAll([]byte(err.Error()), []byte("\n"), []byte("; ")))
}

// Render is the configuration in force as GET /api/v1/config shows it:
// every key of the file (config.View: durations as strings, secrets
// redacted), with each pool's current backends.
func Render(c *config.Config, pools []*upstream.Pool) map[string]any {
	m := config.View(c)
	named, _ := m["pools"].(map[string]any)
	for _, p := range pools {
		backends := persistedBackends(p.Snapshot())
		if p.Name() == config.DefaultPool {
			m["backends"] = backends
		} else if v, ok := named[p.Name()].(map[string]any); ok {
			v["backends"] = backends
		}
	}
	return m
}
