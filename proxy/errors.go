package proxy

import (
	"errors"
	"net"

	"github.com/valyala/fasthttp"
)

// ErrorHandler answers requests fasthttp could not read: 431 for a header
// larger than max_header_bytes, 413 for a body larger than
// max_request_body, 408 for a client too slow to send its request, 400 for
// anything else; the connection is closed after the answer.
func ErrorHandler(ctx *fasthttp.RequestCtx, err error) {
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
