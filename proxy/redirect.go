package proxy

import (
	"net"
	"strconv"

	"github.com/valyala/fasthttp"
)

// Redirect returns the handler of a plain listener under redirect_http: it
// answers every request with 308 to the same host, path and query on HTTPS
// at tlsPort (the port left out when it is 443).
func Redirect(tlsPort int) fasthttp.RequestHandler {
	port := ":" + strconv.Itoa(tlsPort)
	if tlsPort == 443 {
		port = ""
	}
	return func(ctx *fasthttp.RequestCtx) {
		host := string(ctx.Request.Header.Host())
		if host == "" {
			writeError(ctx, fasthttp.StatusBadRequest)
			return
		}
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
			if len(h) > 0 && h[0] != '[' && net.ParseIP(h) != nil && net.ParseIP(h).To4() == nil {
				host = "[" + h + "]"
			}
		}
		target := ctx.Request.Header.RequestURI()
		if len(target) == 0 || target[0] != '/' {
			target = ctx.Request.URI().RequestURI() // absolute form: keep its path and query
		}
		ctx.Response.Header.Set("Location", "https://"+host+port+string(target))
		ctx.Response.Header.SetContentType("text/plain; charset=utf-8")
		ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
		ctx.SetBodyString("308 Permanent Redirect to HTTPS\n")
	}
}
