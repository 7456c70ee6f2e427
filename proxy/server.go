package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/valyala/fasthttp"

	"fastlb/config"
	"fastlb/upstream"
)

// NewServer returns the client-facing fasthttp server for handler, with the
// settings a proxy needs: byte-exact forwarding (no multipart parsing, no
// default Server or Content-Type header), the configured limits and timeouts,
// and 431 / 413 / 408 / 400 answers for requests it cannot read.
func NewServer(handler fasthttp.RequestHandler, cfg *config.Config, logger *slog.Logger) *Server {
	s := &Server{maxConns: int64(cfg.MaxClientConns), logger: logger}
	s.fs = &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			handler(ctx)
			if s.draining.Load() && !ctx.Hijacked() {
				ctx.SetConnectionClose()
			}
		},
		ErrorHandler:                 errorHandler,
		ReadBufferSize:               cfg.MaxHeaderBytes,
		WriteBufferSize:              16 << 10,
		MaxRequestBodySize:           cfg.MaxRequestBody,
		StreamRequestBody:            true, // see takeBody
		Concurrency:                  cfg.MaxClientConns,
		ReadTimeout:                  cfg.ClientReadTimeout,
		WriteTimeout:                 cfg.ClientReadTimeout,
		IdleTimeout:                  cfg.ClientIdleTimeout,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		// No TCPKeepalive: fasthttp sets it only on connections with a
		// SetKeepAlive method, which clientConn and the TLS listener's
		// sockets have not. Client connections have the probes their
		// listening socket gives them (cmd/fastlb's listenConfig).
		// ReduceMemoryUsage is left off: with request bodies streamed,
		// fasthttp keeps an idle connection's read buffer anyway, and
		// releasing the write buffer costs a pool round trip per request.
		// Idle connections give both back when they park (see parkAfter).
		SecureErrorLogMessage: true,
		Logger:                debugLogger{logger},
		ConnState:             s.connState,
	}
	s.slack = upstream.Slack(cfg.ClientReadTimeout)
	s.workers.serve, s.workers.maxIdle, s.workers.idleFor = s.serveParked, maxIdleWorkers, workerIdleTime
	return s
}

// errorHandler answers requests fasthttp could not parse.
func errorHandler(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	status := fasthttp.StatusBadRequest
	switch {
	case errors.As(err, &small):
		status = fasthttp.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status = fasthttp.StatusRequestEntityTooLarge
	case errors.As(err, &netErr) && netErr.Timeout():
		status = fasthttp.StatusRequestTimeout
	}
	ctx.SetConnectionClose()
	writeError(ctx, status)
}

// debugLogger sends fasthttp's own messages (mostly about connections that
// sent something unparseable) to the debug level.
type debugLogger struct{ l *slog.Logger }

func (d debugLogger) Printf(format string, args ...any) {
	if d.l.Enabled(context.Background(), slog.LevelDebug) {
		d.l.Debug(fmt.Sprintf(format, args...))
	}
}
