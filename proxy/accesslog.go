package proxy

import (
	"io"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// AccessLog writes one JSON object a line per request. The request path only
// formats its line on the stack and copies it into a buffer under a short
// lock; a background goroutine writes the buffer out every FlushInterval or
// when it passes flushSize. When the output cannot keep up and the buffer
// reaches maxPending, further lines are dropped and counted.
type AccessLog struct {
	mu      sync.Mutex
	pending []byte
	out     io.Writer

	spare   []byte // the buffer being written out, reused for the next swap
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	dropped atomic.Uint64
}

const (
	flushInterval = time.Second
	flushSize     = 64 << 10
	maxPending    = 8 << 20
)

// NewAccessLog starts an access log writing to out.
func NewAccessLog(out io.Writer) *AccessLog {
	l := &AccessLog{
		out:     out,
		pending: make([]byte, 0, flushSize*2),
		spare:   make([]byte, 0, flushSize*2),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go l.run()
	return l
}

// Dropped counts the lines dropped because the output fell behind.
func (l *AccessLog) Dropped() uint64 { return l.dropped.Load() }

// SetOutput flushes what is pending to the old output and sends later lines
// to out (a reopened file after log rotation, say).
func (l *AccessLog) SetOutput(out io.Writer) {
	l.flush()
	l.mu.Lock()
	l.out = out
	l.mu.Unlock()
}

// Close writes out what is pending and stops the background writer.
func (l *AccessLog) Close() {
	close(l.stop)
	<-l.done
}

func (l *AccessLog) run() {
	defer close(l.done)
	t := time.NewTicker(flushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			l.flush()
			return
		case <-t.C:
		case <-l.wake:
		}
		l.flush()
	}
}

// flush swaps the buffers under the lock and writes outside it.
func (l *AccessLog) flush() {
	l.mu.Lock()
	buf := l.pending
	l.pending = l.spare[:0]
	out := l.out
	l.mu.Unlock()
	if len(buf) > 0 {
		out.Write(buf) //nolint:errcheck // nowhere better to report it
	}
	l.mu.Lock()
	l.spare = buf[:0]
	l.mu.Unlock()
}

func (l *AccessLog) write(line []byte) {
	l.mu.Lock()
	if len(l.pending)+len(line) > maxPending {
		l.mu.Unlock()
		l.dropped.Add(1)
		return
	}
	l.pending = append(l.pending, line...)
	full := len(l.pending) >= flushSize
	l.mu.Unlock()
	if full {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// Log records one finished request and where it went. It allocates nothing.
func (l *AccessLog) Log(ctx *fasthttp.RequestCtx, out *served, start, end time.Time) {
	b := out.backend
	var buf [2048]byte
	line := buf[:0]
	line = append(line, `{"time":"`...)
	line = end.UTC().AppendFormat(line, "2006-01-02T15:04:05.000Z07:00")
	line = append(line, `","client":"`...)
	if ip, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		line = ip.Unmap().AppendTo(line)
	}
	line = append(line, `","proto":`...)
	if c, ok := ctx.Conn().(interface{ HTTP2() bool }); ok && c.HTTP2() {
		line = append(line, `"HTTP/2.0"`...)
	} else {
		line = appendJSONString(line, ctx.Request.Header.Protocol())
	}
	line = append(line, `,"method":`...)
	line = appendJSONString(line, ctx.Request.Header.Method())
	line = append(line, `,"uri":`...)
	line = appendJSONString(line, ctx.Request.Header.RequestURI())
	line = append(line, `,"status":`...)
	line = strconv.AppendInt(line, int64(ctx.Response.StatusCode()), 10)
	line = append(line, `,"backend":`...)
	if b != nil {
		// Backend ids hold only characters that need no escaping.
		line = append(line, '"')
		line = append(line, b.ID...)
		line = append(line, '"')
	} else {
		line = append(line, "null"...)
	}
	// Pool names and route labels hold only [a-z0-9_-].
	line = append(line, `,"pool":`...)
	if out.pool != nil {
		line = append(line, '"')
		line = append(line, out.pool.Name...)
		line = append(line, '"')
	} else {
		line = append(line, "null"...)
	}
	line = append(line, `,"route":`...)
	if out.route != nil {
		line = append(line, '"')
		line = append(line, out.route.label...)
		line = append(line, '"')
	} else {
		line = append(line, "null"...)
	}
	line = append(line, `,"duration_ms":`...)
	line = strconv.AppendFloat(line, float64(end.Sub(start).Microseconds())/1000, 'f', 3, 64)
	line = append(line, `,"bytes":`...)
	if resp := &ctx.Response; !resp.IsBodyStream() {
		line = strconv.AppendInt(line, int64(len(resp.Body())), 10)
	} else if n := resp.Header.ContentLength(); n >= 0 {
		// Still streaming: what the backend announced.
		line = strconv.AppendInt(line, int64(n), 10)
	} else {
		line = append(line, "null"...)
	}
	line = append(line, `,"request_id":`...)
	line = appendJSONString(line, ctx.Request.Header.PeekBytes(headerRequestID))
	line = append(line, "}\n"...)
	l.write(line)
}

// maxLogField bounds each client-controlled field of a line.
const maxLogField = 512

// appendJSONString appends s as a JSON string, escaping what JSON requires
// and replacing invalid UTF-8; fields longer than maxLogField are cut and
// marked with "...".
func appendJSONString(dst, s []byte) []byte {
	cut := len(s) > maxLogField
	if cut {
		s = s[:maxLogField]
	}
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c < 0x20 || c == 0x7f:
				dst = append(dst, `\u00`...)
				dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	if cut {
		dst = append(dst, "..."...)
	}
	return append(dst, '"')
}
