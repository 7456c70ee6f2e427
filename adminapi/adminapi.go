// Package adminapi serves fastlb's REST admin API (fasthttp/router): status,
// Prometheus metrics, backend management, the configuration in force, and
// reload. JSON in and out; errors are {"error": "..."} with a fitting status.
package adminapi

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
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
}

// API is the admin API's handler. It is safe for concurrent use.
type API struct {
	opts    Options
	handler fasthttp.RequestHandler
}

// New builds the admin API's routes.
func New(opts Options) *API {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	a := &API{opts: opts}
	r := router.New()
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
	v1 := r.Group("/api/v1")
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

// Backend is a backend as the admin API shows it.
type Backend struct {
	ID             string     `json:"id"`
	URL            string     `json:"url"`
	Weight         int        `json:"weight"`
	MaxConns       int        `json:"max_conns"`
	State          string     `json:"state"`
	Healthy        bool       `json:"healthy"`
	Drained        bool       `json:"drained"`
	ActiveRequests int64      `json:"active_requests"`
	RequestsTotal  uint64     `json:"requests_total"`
	FailuresTotal  uint64     `json:"failures_total"`
	LastCheck      *LastCheck `json:"last_check"`
	// EjectedUntil is when the backend's ejection by outlier detection
	// ends; null when it is not ejected.
	EjectedUntil *time.Time `json:"ejected_until"`
	// EffectiveWeight is the weight it is balanced with now: below its
	// weight while slow start ramps it up.
	EffectiveWeight float64 `json:"effective_weight"`
}

// LastCheck is a backend's latest health check.
type LastCheck struct {
	At        time.Time `json:"at"`
	OK        bool      `json:"ok"`
	LatencyMs float64   `json:"latency_ms"`
	Error     string    `json:"error,omitempty"`
}

func view(b *upstream.Backend) Backend {
	v := Backend{
		ID: b.ID, URL: b.URL, Weight: b.Weight(), MaxConns: b.MaxConns(), State: b.State().String(),
		Healthy: b.Healthy(), Drained: b.Drained(), ActiveRequests: max(b.Active(), 0),
		RequestsTotal: b.Requests(), FailuresTotal: b.Failures(),
	}
	if lc := b.LastCheck(); lc != nil {
		v.LastCheck = &LastCheck{At: lc.At.UTC(), OK: lc.OK, LatencyMs: float64(lc.Latency.Microseconds()) / 1000, Error: lc.Err}
	}
	if ejected, until := b.Ejected(); ejected {
		until = until.UTC()
		v.EjectedUntil = &until
	}
	v.EffectiveWeight = math.Round(b.EffectiveWeight()*1000) / 1000
	return v
}

func (a *API) listBackends(ctx *fasthttp.RequestCtx) {
	p := a.pool(ctx)
	if p == nil {
		return
	}
	all := p.Snapshot().All
	out := make([]Backend, len(all))
	for i, b := range all {
		out[i] = view(b)
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// backendID returns the {id} parameter, percent-decoded.
func backendID(ctx *fasthttp.RequestCtx) (string, bool) {
	raw, _ := ctx.UserValue("id").(string)
	id, err := url.PathUnescape(raw)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid backend id %q", raw)
		return "", false
	}
	return id, true
}

func (a *API) lookup(ctx *fasthttp.RequestCtx) *upstream.Backend {
	p := a.pool(ctx)
	if p == nil {
		return nil
	}
	id, ok := backendID(ctx)
	if !ok {
		return nil
	}
	b := p.Snapshot().Lookup(id)
	if b == nil {
		writeError(ctx, fasthttp.StatusNotFound, "no backend %q", id)
	}
	return b
}

func (a *API) getBackend(ctx *fasthttp.RequestCtx) {
	if b := a.lookup(ctx); b != nil {
		writeJSON(ctx, fasthttp.StatusOK, view(b))
	}
}

func (a *API) addBackend(ctx *fasthttp.RequestCtx) {
	c, err := config.ParseBackend(ctx.PostBody())
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "invalid backend: %s", oneLine(err))
		return
	}
	if f := a.opts.Runtime.Fleet(); f != nil {
		if p := a.pool(ctx); p != nil && a.fleetDone(ctx, f, p, c.ID)(f.Add(p.Name(), c)) {
			ctx.Response.Header.Set("Location", location(p, c.ID))
			if b := p.Snapshot().Lookup(c.ID); b != nil {
				writeJSON(ctx, fasthttp.StatusCreated, view(b))
			} else {
				writeJSON(ctx, fasthttp.StatusCreated, c) // applied and gone again already
			}
		}
		return
	}
	a.opts.Runtime.Exclusive(func() {
		p := a.pool(ctx)
		if p == nil {
			return
		}
		b, err := p.Add(c)
		switch {
		case errors.Is(err, upstream.ErrExists):
			writeError(ctx, fasthttp.StatusConflict, "%v", err)
			return
		case err != nil:
			writeError(ctx, fasthttp.StatusBadRequest, "invalid backend: %s", oneLine(err))
			return
		}
		if !a.persist(ctx, p) {
			return
		}
		ctx.Response.Header.Set("Location", location(p, b.ID))
		writeJSON(ctx, fasthttp.StatusCreated, view(b))
	})
}

func (a *API) patchBackend(ctx *fasthttp.RequestCtx) {
	id, ok := backendID(ctx)
	if !ok {
		return
	}
	weight, state, err := parsePatch(ctx.PostBody())
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, "%v", err)
		return
	}
	if f := a.opts.Runtime.Fleet(); f != nil {
		var st *string
		if state != nil {
			s := state.String()
			st = &s
		}
		if p := a.pool(ctx); p != nil && a.fleetDone(ctx, f, p, id)(f.Update(p.Name(), id, weight, st)) {
			if b := p.Snapshot().Lookup(id); b != nil {
				writeJSON(ctx, fasthttp.StatusOK, view(b))
			} else {
				writeError(ctx, fasthttp.StatusNotFound, "no backend %q (removed since)", id)
			}
		}
		return
	}
	a.opts.Runtime.Exclusive(func() {
		if p := a.pool(ctx); p != nil {
			a.patch(ctx, p, id, weight, state)
		}
	})
}

// patch changes a backend's weight and state and writes them back.
func (a *API) patch(ctx *fasthttp.RequestCtx, p *upstream.Pool, id string, weight *int, state *upstream.State) {
	var err error
	if p.Snapshot().Lookup(id) == nil {
		writeError(ctx, fasthttp.StatusNotFound, "no backend %q", id)
		return
	}
	var b *upstream.Backend
	if weight != nil {
		if b, err = p.SetWeight(id, *weight); err != nil {
			writeError(ctx, statusOf(err), "%v", err)
			return
		}
	}
	if state != nil {
		if b, err = p.SetState(id, *state); err != nil {
			writeError(ctx, statusOf(err), "%v", err)
			return
		}
	}
	if !a.persist(ctx, p) {
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, view(b))
}

// parsePatch decodes {"weight": n, "state": "..."}; at least one is required.
func parsePatch(body []byte) (*int, *upstream.State, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, nil, errors.New(`body must be a JSON object such as {"weight": 3} or {"state": "drain"}`)
	}
	var weight *int
	var state *upstream.State
	for k, raw := range fields {
		switch k {
		case "weight":
			var w int
			if err := json.Unmarshal(raw, &w); err != nil || bytes.ContainsAny(raw, ".eE\"") {
				return nil, nil, fmt.Errorf("weight: must be an integer 0..%d", config.MaxWeight)
			}
			if err := config.CheckWeight(w); err != nil {
				return nil, nil, fmt.Errorf("weight: %w", err)
			}
			weight = &w
		case "state":
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, nil, errors.New(`state: must be "active", "drain" or "maint"`)
			}
			if err := config.CheckState(s); err != nil {
				return nil, nil, fmt.Errorf("state: %w", err)
			}
			st, _ := upstream.ParseState(s)
			state = &st
		default:
			return nil, nil, fmt.Errorf(`%s: unknown key (only "weight" and "state" can change)`, k)
		}
	}
	if weight == nil && state == nil {
		return nil, nil, errors.New(`nothing to change: give "weight" and/or "state"`)
	}
	return weight, state, nil
}

func (a *API) deleteBackend(ctx *fasthttp.RequestCtx) {
	id, ok := backendID(ctx)
	if !ok {
		return
	}
	if f := a.opts.Runtime.Fleet(); f != nil {
		if p := a.pool(ctx); p != nil && a.fleetDone(ctx, f, p, id)(f.Remove(p.Name(), id)) {
			ctx.SetStatusCode(fasthttp.StatusNoContent)
		}
		return
	}
	a.opts.Runtime.Exclusive(func() {
		p := a.pool(ctx)
		if p == nil {
			return
		}
		if err := p.Remove(id); err != nil {
			writeError(ctx, statusOf(err), "%v", err)
			return
		}
		if !a.persist(ctx, p) {
			return
		}
		ctx.SetStatusCode(fasthttp.StatusNoContent)
	})
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, upstream.ErrNotFound), errors.Is(err, cluster.ErrNotFound):
		return fasthttp.StatusNotFound
	case errors.Is(err, cluster.ErrExists), errors.Is(err, cluster.ErrConflict):
		return fasthttp.StatusConflict
	case errors.Is(err, cluster.ErrUnavailable):
		return fasthttp.StatusServiceUnavailable
	}
	return fasthttp.StatusBadRequest
}

// location is the admin API path of backend id of pool p.
func location(p *upstream.Pool, id string) string {
	if p.Name() == config.DefaultPool {
		return "/api/v1/backends/" + url.PathEscape(id)
	}
	return "/api/v1/pools/" + p.Name() + "/backends/" + url.PathEscape(id)
}

// fleetApplyWait bounds how long a change committed to the fleet's store
// waits to be in force here before it is answered.
const fleetApplyWait = 2 * time.Second

// fleetDone returns what answers a change made in the fleet's store: an
// error it was refused with (409, 404, 503), or, once etcd committed it,
// nothing until this instance applied it (then it reports true, for the
// caller to answer). 202 when it was not applied here in time: it is in
// etcd, and every instance applies it.
func (a *API) fleetDone(ctx *fasthttp.RequestCtx, f Fleet, p *upstream.Pool, id string) func(int64, error) bool {
	return func(rev int64, err error) bool {
		if errors.Is(err, cluster.ErrUnavailable) {
			writeError(ctx, fasthttp.StatusServiceUnavailable, "cluster store unavailable")
			return false
		}
		if err != nil {
			writeError(ctx, statusOf(err), "%v", err)
			return false
		}
		if !f.WaitApplied(rev, fleetApplyWait) {
			writeJSON(ctx, fasthttp.StatusAccepted, map[string]any{"committed_revision": rev, "pool": p.Name(), "id": id})
			return false
		}
		return true
	}
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

// persist writes p's current backends back to the configuration file when
// admin_persist is on. It reports whether the handler may go on; on failure
// it has answered 500 (the change is in force but not saved).
func (a *API) persist(ctx *fasthttp.RequestCtx, p *upstream.Pool) bool {
	if !a.opts.Runtime.Config().AdminPersist {
		return true
	}
	if err := config.SaveBackends(a.opts.ConfigPath, p.Name(), persistedBackends(p.Snapshot())); err != nil {
		a.opts.Logger.Error("admin API change applied but not saved", "file", a.opts.ConfigPath, "error", err)
		writeError(ctx, fasthttp.StatusInternalServerError, "the change is in force but could not be saved to %s: %v", a.opts.ConfigPath, err)
		return false
	}
	return true
}

// persistedBackends renders the backends as the configuration file holds
// them: a plain URL string when nothing but the URL differs from the
// defaults, else an object.
func persistedBackends(s *upstream.Snapshot) []any {
	out := make([]any, len(s.All))
	for i, b := range s.All {
		out[i] = persistedBackend(b)
	}
	return out
}

func persistedBackend(b *upstream.Backend) any {
	return config.ViewBackend(config.BackendView{URL: b.URL, Weight: b.Weight(), ID: b.ID, MaxConns: b.MaxConns(), State: b.State().String()}, b.Addr)
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
