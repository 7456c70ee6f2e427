package adminapi

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/url"
	"time"

	json "github.com/goccy/go-json"
	"github.com/valyala/fasthttp"

	"fastlb/cluster"
	"fastlb/config"
	"fastlb/upstream"
)

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
