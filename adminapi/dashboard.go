package adminapi

import (
	"embed"
	"strconv"

	json "github.com/goccy/go-json"
	"github.com/valyala/fasthttp"
)

// ui holds the dashboard: one page, its script and its style sheet,
// served from the binary.
//
//go:embed ui/index.html ui/app.js ui/app.css
var ui embed.FS

// openAPI is the description of every admin route (GET /api/v1/openapi.json).
//
//go:embed openapi.json
var openAPI []byte

// pageCSP lets the page load its own script and style sheet and call its
// own origin, nothing else: no inline script, no frame, no other host.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// asset answers one embedded file. The page and its files are served
// without the token: they hold no data, and the page asks for the token
// before it reads any.
func asset(name, contentType string) fasthttp.RequestHandler {
	body, err := ui.ReadFile(name)
	if err != nil {
		panic(err) // embedded above
	}
	return func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Response.Header
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		ctx.SetContentType(contentType)
		ctx.SetBody(body)
	}
}

func (a *API) openAPI(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	ctx.SetBody(openAPI)
}

// stats answers the recent samples of every pool and backend; with
// ?since=UNIX_SECOND only the samples taken after it, with ?backends=last
// only each backend's newest.
func (a *API) stats(ctx *fasthttp.RequestCtx) {
	var since int64
	args := ctx.QueryArgs()
	if raw := args.Peek("since"); raw != nil {
		v, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || v < 0 {
			writeError(ctx, fasthttp.StatusBadRequest, "since: must be a Unix time in seconds, got %q", raw)
			return
		}
		since = v
	}
	last := false
	switch raw := args.Peek("backends"); string(raw) {
	case "", "all":
	case "last":
		last = true
	default:
		writeError(ctx, fasthttp.StatusBadRequest, `backends: must be "all" or "last", got %q`, raw)
		return
	}
	body, err := json.Marshal(a.opts.Stats.Stats(since, last)) // unindented: it is the largest answer
	if err != nil {
		writeError(ctx, fasthttp.StatusInternalServerError, "cannot encode the answer: %v", err)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(append(body, '\n'))
}
